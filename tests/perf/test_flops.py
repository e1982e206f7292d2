"""Benchmark harness, analytic FLOP count vs XLA, HLO reading, remat policies, device script.

The analytic count (tokendrift_jax/perf/flops.py) is checked against XLA's own program: the
FLOPs of every dot instruction of the optimised HLO (exact: both count 2 · MACs), and
XLA's cost analysis (which adds elementwise work, so only within 10%). No timing is
asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokendrift_jax.drift import objective as obj
from tokendrift_jax.drift import queue as qlib
from tokendrift_jax.models import dit as dit_lib
from tokendrift_jax.models.dit import DiT, DiTConfig
from tokendrift_jax.perf import benchmark as bench
from tokendrift_jax.perf import flops
from tokendrift_jax.perf import hlo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compiled_text(fn, *args):
  return jax.jit(fn).lower(*args).compile().as_text()


# ------------------------------------------------------------------ HLO reading


def test_dot_inventory_counts_batched_and_plain_products():
  """2 · MACs of each dot, from the optimised HLO (operand shapes resolved by name)."""
  def f(x, w, q, k):
    h = jnp.tanh(x @ w)                                # [32, 48] x [48, 40]
    s = jnp.einsum("bqd,bkd->bqk", q, k)               # batch 3, [20, 16] x [16, 24]
    return jnp.sum(h) + jnp.sum(s)

  args = (jnp.ones((32, 48)), jnp.ones((48, 40)), jnp.ones((3, 20, 16)), jnp.ones((3, 24, 16)))
  dots = hlo.dot_inventory(_compiled_text(f, *args))
  want = sorted([2 * 32 * 40 * 48, 2 * 3 * 20 * 24 * 16])
  assert sorted(d.flops for d in dots) == want


def test_loops_with_dots_are_detected():
  ws = jnp.ones((4, 16, 16))

  def scanned(x):
    return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]

  def rng_only(key):  # threefry rounds compile to a loop without dots
    return jax.random.uniform(key, (64,))

  found = hlo.dot_loops(_compiled_text(scanned, jnp.ones((8, 16))))
  assert len(found) == 1 and found[0].trip_count == 4 and found[0].has_dot
  assert hlo.dot_loops(_compiled_text(rng_only, jax.random.key(0))) == []


def test_stablehlo_dots_report_operand_types():
  def f(a, b):
    return jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                   preferred_element_type=jnp.float32)

  text = jax.jit(f).lower(jnp.ones((4, 8)), jnp.ones((8, 2))).as_text()
  (d,) = hlo.stablehlo_dots(text)
  assert d.dtypes == "bf16 x bf16 -> f32" and d.lhs[0] == (4, 8) and d.out[0] == (4, 2)


# ------------------------------------------------------------------ per-pass formulas


def _tiny_dit(policy: str | None):
  cfg = DiTConfig(vocab_size=96, hidden_size=64, cond_dim=16, n_blocks=2, n_heads=2,
                  length=16, dropout=0.0)
  model = nnx.eval_shape(lambda: DiT(cfg, remat=policy is not None,
                                     remat_policy=policy or "", rngs=nnx.Rngs(0)))
  return cfg, nnx.split(model, nnx.Param)[0]


def _passes_program(gdef):
  """Generator fwd+bwd (weight grads) and encoder fwd+bwd-to-inputs, in one program."""
  def program(p_gen, p_enc, ids, embeds, key):
    def gen_loss(p):
      logits = nnx.merge(gdef, p)(ids, None, dropout_rng=key)
      return jnp.sum(logits * logits)

    # Built outside the grad trace, as the frozen encoder of the drift step is.
    encoder = nnx.merge(gdef, jax.lax.stop_gradient(p_enc))

    def enc_out(e):
      hidden = encoder(None, None, embeds=e, return_hidden=2)[1]
      return jnp.sum(hidden[0] * hidden[1])

    return jax.grad(gen_loss)(p_gen), jax.grad(enc_out)(embeds)
  return program


def _pass_flops(cfg, b: int, policy: str | None) -> int:
  L, f = cfg.length, flops.FREQ_EMBED_DIM
  gen = flops.forward_per_sequence(cfg, L, output_layer=True)
  enc = flops.forward_per_sequence(cfg, L, output_layer=False)
  linear = cfg.n_blocks * L * flops.block_linear_per_token(cfg)
  attn = cfg.n_blocks * L * flops.attention_per_token(cfg, L)
  total = b * (gen + (2 * gen - 2 * f * cfg.cond_dim) + enc + linear + 2 * attn)
  if policy is not None:
    total += b * (flops.recompute_per_sequence(cfg, L, policy, weight_grads=True)
                  + flops.recompute_per_sequence(cfg, L, policy, weight_grads=False))
  return total


def test_pass_formulas_match_hlo_and_full_remat_keeps_values():
  """Per-pass counts (+ recompute) == the program's dot FLOPs; remat changes no value.

  The "dots_with_no_batch_dims_saveable" recompute formula was checked the same way
  (docs/PERFORMANCE.md); it is left out here to keep the suite's compile time down.
  """
  b = 3
  runs = {}
  for policy in (None, "nothing_saveable"):
    cfg, gdef = _tiny_dit(policy)
    p_gen = jax.tree.map(jnp.asarray, bench.random_params(cfg, 0))
    p_enc = jax.tree.map(jnp.asarray, bench.random_params(cfg, 5))
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, cfg.length)), jnp.int32)
    embeds = jnp.asarray(rng.standard_normal((b, cfg.length, cfg.hidden_size)), jnp.float32)
    args = (p_gen, p_enc, ids, embeds, jax.random.key(1))
    compiled = jax.jit(_passes_program(gdef)).lower(*args).compile()
    assert hlo.dot_flops(compiled.as_text()) == _pass_flops(cfg, b, policy), policy
    runs[policy] = compiled(*args)
  # The same operations are recomputed; only XLA's fusion of them may differ (float32
  # reassociation, ~1e-7 relative), so 1e-5 is loose for equal functions and tight for any
  # real change of the function.
  for x, y in zip(jax.tree.leaves(runs["nothing_saveable"]), jax.tree.leaves(runs[None])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_drift_term_matches_hlo():
  """4·N·m·(N+Q)·(1+T): the distance cross terms and weighted sums of both sets."""
  n, m, q = 4, 8, 16
  config = obj.DriftConfig(queue_size=q)
  rng = np.random.default_rng(0)
  unit = lambda s: jnp.asarray(rng.standard_normal(s) / np.sqrt(s[-1]), jnp.float32)

  def drift(h, u, buf_r, buf_g):
    full = lambda b: qlib.FeatureQueue(b, jnp.zeros((), jnp.int32), jnp.full((), q, jnp.int32))
    return obj.drift_from_features(h, u, full(buf_r), full(buf_g), config)[0]

  text = _compiled_text(drift, unit((n, m)), unit((n, m)), unit((q, m)), unit((q, m)))
  assert hlo.dot_flops(text) == flops.drift_per_microstep(n, m, q, len(config.temperatures))


def test_step_flops_bookkeeping():
  cfg = DiTConfig(vocab_size=100, hidden_size=32, cond_dim=8, n_blocks=3, n_heads=4,
                  length=16)
  one = flops.step_flops(cfg, objective="drift", length=16, micro_batch=2, n_micro=1,
                         queue_size=8, n_temperatures=3)
  three = flops.step_flops(cfg, objective="drift", length=16, micro_batch=2, n_micro=3,
                           queue_size=8, n_temperatures=3)
  assert three.model == 3 * one.model and three.tokens == 3 * 2 * 16
  cont = flops.step_flops(cfg, objective="continuation", length=16, micro_batch=2)
  assert set(cont.terms) == {"generator_fwd", "generator_bwd"}
  assert cont.recompute == 0 and cont.hardware == cont.model
  # 2 · (parameters in matmuls) per token + attention: the usual transformer estimate.
  d, r = cfg.hidden_size, cfg.mlp_ratio
  assert flops.block_linear_per_token(cfg) == 2 * (4 + 2 * r) * d * d
  with pytest.raises(ValueError, match="remat policy"):
    flops.step_flops(cfg, objective="continuation", length=16, micro_batch=2,
                     remat_policy="bogus")
  with pytest.raises(ValueError, match="queue_size"):
    flops.step_flops(cfg, objective="drift", length=16, micro_batch=2)


# ------------------------------------------------------------------ the CLI, tiny


def test_benchmark_cli_tiny_output_is_well_formed(tmp_path):
  """launch/benchmark.py on the tiny model: JSON + markdown, XLA agreement (no timings)."""
  out = tmp_path / "bench"
  cmd = [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"),
         "--config=configs/mdlm_drift.py", "--size=tiny", "--length=64", "--batch=4",
         "--steps=2", "--warmup=1", "--xla_count", "--peak_tflops=1",
         "--config.mesh.num_devices=1", f"--out={out}", "--name=tiny"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  result = json.loads((out / "tiny.json").read_text())
  assert result["environment"]["backend"] == "cpu"
  rows = {r["objective"]: r for r in result["rows"]}
  assert set(rows) == {"continuation", "drift"}
  for name, r in rows.items():
    assert "error" not in r, r
    assert r["finite"] and r["length"] == 64 and r["micro_batch"] == 4
    assert len(r["step_s_all"]) == 2 and r["step_s"] > 0 and r["compile_s"] > 0
    assert math.isclose(r["tokens_per_s"], r["tokens_per_step"] / r["step_s"], rel_tol=1e-9)
    assert r["flops"]["model_flops"] == sum(r["flops"]["terms"].values())
    assert math.isclose(r["mfu"], r["achieved_tflops"] / 1.0, rel_tol=1e-9)
    assert r["memory"]["peak_bytes"] > 0 and r["program_bytes"]["total"] > 0
    x = r["xla"]
    # Every product of the program is one of the analytic terms (exact), and XLA's
    # cost analysis adds elementwise work (softmax, LayerNorm, RNG, Adam): within 10%.
    assert abs(x["analytic_over_hlo_dots"] - 1.0) < 1e-9, (name, x)
    assert abs(x["analytic_over_xla"] - 1.0) <= 0.10, (name, x)
  assert set(rows["drift"]["flops"]["terms"]) == {
      "generator_fwd", "generator_bwd", "encoder_clean_fwd", "encoder_soft_fwd",
      "encoder_soft_bwd", "lift_fwd", "lift_bwd", "drift"}
  md = (out / "tiny.md").read_text()
  assert md.count("| continuation | tiny | 64 |") == 2 and "| drift | tiny | 64 |" in md
  assert "analytic/XLA" in md


# ------------------------------------------------------------------ pieces without compiling


def test_markdown_reports_failed_cases_and_drift_share():
  env = {"backend": "cpu", "device_kind": "cpu", "device_count": 1, "jax": "x", "flax": "y"}
  failed = {"objective": "drift", "size": "170m", "length": 1024, "per_device_batch": 32,
            "n_micro": 1, "dtype": "bfloat16", "attention_impl": "cudnn",
            "remat_policy": "none", "error": "XlaRuntimeError: RESOURCE_EXHAUSTED"}
  md = bench.markdown({"environment": env, "rows": [failed]})
  line = [l for l in md.splitlines() if "RESOURCE_EXHAUSTED" in l][0]
  header = [l for l in md.splitlines() if l.startswith("| objective")][0]
  assert line.count("|") == header.count("|")

  def fake_measure(q_sizes, dim, batch, iters):
    return [{"Q": q, "m": dim, "N": batch, "queue_MiB": 1.0, "drift+push_ms": q / 100,
             "push_ms": 0.01} for q in q_sizes]

  row = {"objective": "drift", "size": "170m", "length": 128, "micro_batch": 4, "n_micro": 2,
         "step_s": 0.5, "hidden_size": 768}
  out = bench.drift_share([row, failed], fake_measure, (1024, 65536))
  assert [(s["Q"], s["m"]) for s in out] == [(1024, 1536), (65536, 1536)]
  # Two micro-steps per step: the drift runs twice.
  assert math.isclose(out[0]["share"], 2 * 10.24 / 500.0)


def test_device_check_script_parses_and_names_the_wheels():
  path = os.path.join(ROOT, "launch", "device_check.sh")
  assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
  text = open(path).read()
  for wheel in ("grain==0.2.18", "array_record==0.8.6", "portpicker==1.6.0",
                "ml_collections==1.1.0"):
    assert text.count(wheel) >= 2, wheel  # in the header and in --fetch-wheels


def test_bf16_smoke_runs_and_reports():
  """The device script's first stage on a tiny model: well-formed report, bf16 close."""
  from configs import mdlm_drift
  from tokendrift_jax.perf import smoke
  c = bench.apply_size(mdlm_drift.get_config(), "tiny", length=16)
  c.drift.queue_size = 16
  report = smoke.run(c, batch=4)
  text = smoke.markdown(report)
  assert "bf16/xla" in text
  assert json.loads(json.dumps(report))  # JSON-serialisable, as the script writes it
  row = report["rows"][0]
  print(f"bf16 vs fp32: features {row['h_rel_err']:.2e}, grad cosine {row['grad_cosine']:.5f}")
  assert report["pass"], report
