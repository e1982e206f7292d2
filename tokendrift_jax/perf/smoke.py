"""bf16-vs-fp32 smoke check of the TokenDrift micro-step (the device script's first stage).

One TokenDrift micro-step (``objectives.tokendrift.TokenDrift.microstep`` with the context that
``train.builder.build_step`` makes for training: corrupt, generator, SUBS, soft
lift, frozen encoder, drift against the queues, fixed-point gradient) is run with the same
weights, batch, key and queues under several numerics variants, and each is compared with
the float32 / XLA-attention reference:

* features: the u and h rows the step pushes into the queues, ‖x − x_ref‖ / ‖x_ref‖;
* the gradient w.r.t. the generator weights: relative error of the whole tree, and its
  cosine with the reference;
* the loss (relative difference) and finiteness of everything.

The queues are first filled by one float32 micro-step on another batch, so the drift of
the compared step sees queued references as well as the current batch.

Thresholds (``LIMITS``): bf16 operands carry 8 significant bits (relative rounding 2⁻⁹ ≈
2e-3 per product); after the 12 blocks of the generator and the encoder the pooled unit
features move by ~1e-2 of their norm. The drift weights exp(−‖h − y‖²/τ) at τ = 0.02
amplify feature differences by ~2‖h − y‖/τ, so the gradient is checked by direction (cosine)
and its relative error is reported, not bounded. Measured on CPU (bf16 emulated with the
same rounding of operands and outputs), 170M at L = 128, batch 4: feature errors 5e-3 /
8e-3, gradient relative error 1.3e-2, cosine 0.9999; the limits (5e-2, 0.99) leave a 6x
and 100x margin. They flag a broken kernel or precision bug (errors of order 1, NaNs), not
the last bit; this is not a parity test (that is ``tests/models/test_dit.py``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tokendrift_jax.drift import queue as queue_lib
from tokendrift_jax.perf import benchmark as bench
from tokendrift_jax.train import builder

LIMITS = {"feature_rel_err": 5e-2, "grad_cosine": 0.99}


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  dtype: str
  attention_impl: str   # "" = XLA's choice


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _tree_vec(tree) -> np.ndarray:
  return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _pushed(queue: queue_lib.FeatureQueue, n: int) -> np.ndarray:
  """The n rows most recently pushed into ``queue`` (oldest first)."""
  rows, valid = queue_lib.ordered(queue)
  count = int(np.asarray(valid).sum())
  return np.asarray(rows)[count - n:count]


def run(config: ml_collections.ConfigDict, *, batch: int,
        variants: Sequence[Variant] = (Variant("bf16/xla", "bfloat16", "xla"),),
        seed: int = 0) -> dict[str, Any]:
  """Runs the reference (float32, XLA attention) and every variant; returns the report."""

  def variant_parts(variant: Variant) -> builder.StepParts:
    # The training step's own build, on one device with one micro-batch of ``batch``.
    c = ml_collections.ConfigDict(config.to_dict())
    c.model.dtype = variant.dtype
    c.model.attention_impl = variant.attention_impl
    c.mesh.shape, c.mesh.num_devices, c.mesh.param_sharding = (1, 1), 1, "replicated"
    c.batch.global_batch = c.batch.micro_batch = int(batch)
    c.batch.eval_global_batch = 1
    return builder.build_step(c)

  def microstep(parts: builder.StepParts):
    ctx = parts.ctx
    return jax.jit(lambda p, q, x, k: parts.objective.microstep(ctx, p, p, q, x, k))

  reference = Variant("fp32/xla", "float32", "xla")
  parts = variant_parts(reference)
  model_cfg, process = parts.model_cfg, parts.process
  if parts.objective.name != "drift":
    raise bench.BenchmarkError("the smoke check runs a TokenDrift micro-step: set "
                               "config.objective='drift'")
  params = jax.tree.map(jnp.asarray, bench.random_params(model_cfg, seed))
  tokens = bench.random_tokens(process, 2 * batch, model_cfg.length, seed)
  x_fill, x0 = jnp.asarray(tokens[:batch]), jnp.asarray(tokens[batch:])
  key = jax.random.key(seed + 3)

  ref_jit = microstep(parts)

  def ref_fn(*args):
    # Full float32 products: a GPU's default for float32 matmuls is TF32 (10-bit mantissa).
    with jax.default_matmul_precision("highest"):
      return ref_jit(*args)

  empty = parts.objective.init_aux(params)
  _, _, queues, _ = ref_fn(params, empty, x_fill, jax.random.fold_in(key, 1))

  def one(variant, fn):
    loss, grads, new_q, metrics = fn(params, queues, x0, key)
    return {"loss": float(loss), "grads": _tree_vec(grads),
            "u": _pushed(new_q["real"], batch), "h": _pushed(new_q["gen"], batch),
            "v_rms": float(metrics["v_rms"]), "variant": variant}

  ref = one(reference, ref_fn)
  rows = []
  for variant in variants:
    out = one(variant, microstep(variant_parts(variant)))
    g, gr = out["grads"], ref["grads"]
    cos = float(g @ gr / max(np.linalg.norm(g) * np.linalg.norm(gr), 1e-30))
    finite = bool(np.all(np.isfinite(g)) and math.isfinite(out["loss"])
                  and np.all(np.isfinite(out["h"])) and np.all(np.isfinite(out["u"])))
    row = {"variant": variant.name, "dtype": variant.dtype,
           "attention_impl": variant.attention_impl or "default",
           "u_rel_err": _rel(out["u"], ref["u"]), "h_rel_err": _rel(out["h"], ref["h"]),
           "grad_rel_err": _rel(g, gr), "grad_cosine": cos,
           "loss": out["loss"], "loss_ref": ref["loss"],
           "loss_rel_diff": abs(out["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-30),
           "grad_norm": float(np.linalg.norm(g)), "grad_norm_ref": float(np.linalg.norm(gr)),
           "finite": finite}
    row["pass"] = bool(finite and row["u_rel_err"] < LIMITS["feature_rel_err"]
                       and row["h_rel_err"] < LIMITS["feature_rel_err"]
                       and cos > LIMITS["grad_cosine"])
    rows.append(row)
  return {"model": model_cfg.to_dict(), "batch": batch, "queue_size": parts.objective.queue_size,
          "reference": {"variant": reference.name, "loss": ref["loss"],
                        "grad_norm": float(np.linalg.norm(ref["grads"])),
                        "finite": bool(np.all(np.isfinite(ref["grads"])))},
          "limits": dict(LIMITS), "rows": rows, "pass": all(r["pass"] for r in rows)}


def markdown(report: dict[str, Any]) -> str:
  m = report["model"]
  arch = " ".join(f"{k}={v}" for k, v in sorted(m.items()))
  lines = [f"Drift micro-step, {arch}; batch={report['batch']} Q={report['queue_size']}; reference "
           f"{report['reference']['variant']} (loss {report['reference']['loss']:.6g}). "
           f"Limits: feature rel err < {report['limits']['feature_rel_err']}, grad cosine > "
           f"{report['limits']['grad_cosine']}.", "",
           "| variant | u rel err | h rel err | grad rel err | grad cosine | loss rel diff | "
           "finite | pass |", "|" + "---|" * 8]
  for r in report["rows"]:
    lines.append(f"| {r['variant']} | {r['u_rel_err']:.2e} | {r['h_rel_err']:.2e} | "
                 f"{r['grad_rel_err']:.2e} | {r['grad_cosine']:.4f} | "
                 f"{r['loss_rel_diff']:.2e} | {r['finite']} | "
                 f"{'PASS' if r['pass'] else 'FAIL'} |")
  return "\n".join(lines) + "\n"


def parse_variants(spec: Sequence[str]) -> list[Variant]:
  """["bfloat16:cudnn", "float32:xla", ...] -> Variants."""
  out = []
  for s in spec:
    dtype, _, impl = s.partition(":")
    if dtype not in ("float32", "bfloat16"):
      raise bench.BenchmarkError(f"--smoke_variants entry {s!r}: dtype must be float32 or "
                                 f"bfloat16")
    short = {"float32": "fp32", "bfloat16": "bf16"}[dtype]
    out.append(Variant(f"{short}/{impl or 'default'}", dtype, impl))
  return out

