"""Benchmark of the jitted training steps: time, throughput, FLOPs, MFU, compile time, memory.

For each (objective, per-device batch) case the step is the one training runs: it is built
by ``train.builder.build_step`` from a config, as ``train.trainer.build`` builds it (same
``StepContext``, optimizer, state, shardings, donation), with random weights (the
initialisation plus N(0, 0.02²) on every leaf, so no layer is zero) and random tokens instead
of a checkpoint and a corpus. Then:

* lowering and compilation are timed separately (``jit(...).lower(abstract args)``,
  ``.compile()``);
* the compiled step runs ``warmup`` times, then ``steps`` times, each call followed by
  ``jax.block_until_ready`` on the new state and metrics; the step time is the median;
* model FLOPs per step come from :mod:`tokendrift_jax.perf.flops`; MFU = model FLOPs /
  (step time · peak), with the peak given in TFLOP/s or measured by a large matmul
  (:func:`measure_matmul_peak`);
* memory: the device's ``peak_bytes_in_use`` where the runtime reports it (GPU), else the
  process's peak RSS (CPU); both are process-wide maxima. The compiled program's own
  footprint (``memory_analysis``: arguments + outputs + temporaries − aliased) is reported
  too;
* optionally XLA's count: the same step compiled with ``scan_layers=False`` and one
  micro-batch (XLA's cost analysis counts a ``while`` body once), its
  ``cost_analysis()["flops"]`` and the sum over its dot instructions
  (:mod:`tokendrift_jax.perf.hlo`), next to the analytic count of that program.

Results are rows of plain dicts, written as JSON and a markdown table.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tokendrift_jax import models
from tokendrift_jax import objectives
from tokendrift_jax import sharding
from tokendrift_jax.perf import flops as flops_lib
from tokendrift_jax.perf import hlo
from tokendrift_jax.train import builder

PARAM_NOISE = 0.02


class BenchmarkError(ValueError):
  """A benchmark configuration that cannot run (reported as one line)."""


# ----------------------------------------------------------------------------- config


def apply_size(config: ml_collections.ConfigDict, size: str, length: int = 0,
               ) -> ml_collections.ConfigDict:
  """A copy of ``config`` with a named architecture and (if > 0) the given length.

  ``size`` is "config" (the config's own model section) or one of the named sizes that
  the config's model family declares (``Family.sizes``; the DiT's are "tiny" and "170m").
  """
  try:
    family = models.get_family(str(config.model.family))
  except ValueError as e:
    raise BenchmarkError(f"config.model.family: {e}") from e
  known = ["config"] + sorted(family.sizes)
  if size not in known:
    raise BenchmarkError(f"--size must be one of {known} for model family {family.name!r}, "
                         f"got {size!r}")
  c = copy.deepcopy(config)
  if size != "config":
    c.model.update(dict(family.sizes[size]))
  if length > 0:
    c.model.length = int(length)
  return c


def case_config(config: ml_collections.ConfigDict, *, objective: str, per_device_batch: int,
                n_micro: int = 1) -> ml_collections.ConfigDict:
  """``config`` set up for one case: micro_batch = per-device batch × batch shards."""
  if objective not in objectives.names():
    raise BenchmarkError(f"objective must be one of {objectives.names()}, got {objective!r}")
  if per_device_batch < 1 or n_micro < 1:
    raise BenchmarkError(f"per-device batch {per_device_batch} and n_micro {n_micro} must "
                         f"be >= 1")
  c = copy.deepcopy(config)
  c.objective = objective
  mesh = builder.make_mesh(c)
  shards = sharding.num_batch_shards(mesh)
  c.batch.micro_batch = int(per_device_batch) * shards
  c.batch.global_batch = c.batch.micro_batch * int(n_micro)
  c.batch.eval_global_batch = shards
  return c


def remat_policy(config) -> str:
  """The remat policy actually applied: "" when remat is off, jax's default spelled out."""
  if not bool(config.model.remat):
    return ""
  return str(config.model.get("remat_policy", "") or "nothing_saveable")


# ----------------------------------------------------------------------------- step


@dataclasses.dataclass
class StepSetup:
  """A built (not yet compiled) training step and what it is called with."""
  parts: builder.StepParts
  abstract_args: tuple                 # ShapeDtypeStructs carrying the shardings
  make_args: Callable[[], tuple]       # concrete (state, batch, frozen)

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.parts.config

  @property
  def model_cfg(self):
    return self.parts.model_cfg

  @property
  def fn(self) -> Callable:
    """The jitted step(state, batch, frozen) of ``train.builder.build_step``."""
    return self.parts.step_fn

  @property
  def mesh(self):
    return self.parts.mesh

  @property
  def objective(self):
    return self.parts.objective


_PARAM_CACHE: dict[tuple[Any, int], dict] = {}


def random_params(model_cfg, seed: int) -> dict:
  """The initialisation plus N(0, 0.02²) noise on every leaf (float32 numpy; cached).

  Random rather than zero-initialised weights: adaLN and the output layer start at zero,
  and timing on zeros can flatter a kernel.
  """
  key = (model_cfg, int(seed))
  if key not in _PARAM_CACHE:
    _PARAM_CACHE.clear()  # one architecture at a time (170M: 0.7 GB of host memory)
    params = models.init_params(model_cfg, seed)
    rng = np.random.default_rng(seed + 1)
    _PARAM_CACHE[key] = jax.tree.map(
        lambda x: (np.asarray(x) + PARAM_NOISE * rng.standard_normal(np.shape(x))
                   ).astype(np.float32), params)
  return _PARAM_CACHE[key]


def random_tokens(process, global_batch: int, length: int, seed: int) -> np.ndarray:
  """int32 [G, L] ids that are valid clean data (text ids, never the mask id)."""
  rng = np.random.default_rng(seed + 2)
  mask_id, high = process.mask_id, process.text_vocab_size
  if mask_id is not None and mask_id < high:  # a mask inside the text range is skipped
    ids = rng.integers(0, high - 1, (global_batch, length))
    ids = np.where(ids >= mask_id, ids + 1, ids)
  else:
    ids = rng.integers(0, high, (global_batch, length))
  return ids.astype(np.int32)


def build_step(config: ml_collections.ConfigDict, *, seed: int = 0) -> StepSetup:
  """The training step of ``config`` (``train.builder.build_step``), without data or ckpt."""
  if config.objective not in objectives.names():
    raise BenchmarkError(f"config.objective must be one of {objectives.names()}, got "
                         f"{config.objective!r}")
  parts = builder.build_step(config)
  g, length = int(config.batch.global_batch), parts.model_cfg.length

  def make_args():
    params = random_params(parts.model_cfg, seed)
    state = sharding.to_global(parts.init_state(params), parts.state_shardings)
    tokens = random_tokens(parts.process, g, length, seed)
    batch = sharding.to_global(tokens, parts.batch_sharding)
    frozen = parts.objective.frozen(params)
    if frozen is not None:
      frozen = sharding.to_global(frozen, parts.frozen_shardings)
    return state, batch, frozen

  return StepSetup(parts=parts, abstract_args=parts.abstract_args(), make_args=make_args)


def analytic_flops(setup: StepSetup, n_micro: int | None = None) -> flops_lib.StepFlops:
  c = setup.config
  micro = int(c.batch.micro_batch)
  if n_micro is None:
    n_micro = int(c.batch.global_batch) // micro
  return flops_lib.step_flops(
      setup.model_cfg, objective=setup.objective, length=setup.model_cfg.length,
      micro_batch=micro, n_micro=n_micro, remat_policy=remat_policy(c))


# ----------------------------------------------------------------------------- measuring


def _cost_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def program_bytes(compiled) -> dict[str, int] | None:
  """The compiled program's footprint from ``memory_analysis`` (None if unavailable)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    return None
  if m is None:
    return None
  out = {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in
         ("argument", "output", "alias", "temp")}
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def peak_memory() -> dict[str, Any]:
  """Process-wide peak: device ``peak_bytes_in_use`` if reported, else peak RSS."""
  dev = jax.local_devices()[0]
  try:
    stats = dev.memory_stats()
  except Exception:  # pylint: disable=broad-except  # CPU clients may raise
    stats = None
  if stats and "peak_bytes_in_use" in stats:
    return {"peak_bytes": int(stats["peak_bytes_in_use"]), "source": "device.memory_stats",
            "bytes_limit": int(stats.get("bytes_limit", 0))}
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
  return {"peak_bytes": int(rss) * scale, "source": "ru_maxrss"}


def time_calls(call: Callable[[Any], tuple[Any, Any]], carry, steps: int, warmup: int):
  """Runs ``carry, out = call(carry)`` warmup + steps times, blocking after each.

  Returns (first-call seconds, list of timed seconds, last carry, last out).
  """
  times, first, out = [], None, None
  for i in range(warmup + steps):
    start = time.perf_counter()
    carry, out = call(carry)
    jax.block_until_ready((carry, out))
    dt = time.perf_counter() - start
    if i == 0:
      first = dt
    if i >= warmup:
      times.append(dt)
  return first, times, carry, out


def time_side_by_side(call: Callable[[Any], tuple[Any, Any]], carry, other: Callable[[], Any],
                      steps: int, warmup: int):
  """:func:`time_calls` with ``other()`` (e.g. the PyTorch port's step) timed after each
  call, alternating A B A B in one process. Returns (first-call seconds, timed seconds,
  other's timed seconds, last carry, last out, other's last value)."""
  times, other_times, first, out, value = [], [], None, None, None
  for i in range(warmup + steps):
    start = time.perf_counter()
    carry, out = call(carry)
    jax.block_until_ready((carry, out))
    mid = time.perf_counter()
    value = other()
    end = time.perf_counter()
    if i == 0:
      first = mid - start
    if i >= warmup:
      times.append(mid - start)
      other_times.append(end - mid)
  return first, times, other_times, carry, out, value


def measure_matmul_peak(dtype=None, n: int | None = None, reps: int = 10) -> dict[str, Any]:
  """Median TFLOP/s of an n×n×n product on random data (bf16 on GPU, f32 elsewhere)."""
  backend = jax.default_backend()
  if dtype is None:
    dtype = jnp.bfloat16 if backend in ("gpu", "tpu") else jnp.float32
  if n is None:
    n = 8192 if backend in ("gpu", "tpu") else 1024
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
  mm = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  jax.block_until_ready(mm(a, b))
  _, times, _, _ = time_calls(lambda c: (c, mm(a, b)), None, reps, 2)
  t = statistics.median(times)
  return {"tflops": 2 * n ** 3 / t / 1e12, "n": n, "dtype": jnp.dtype(dtype).name,
          "median_s": t}


def has_loops(compiled) -> bool:
  """Whether the program repeats dots in a ``while`` (XLA counts a body once)."""
  return bool(hlo.dot_loops(compiled.as_text()))


def xla_counts(compiled, analytic: flops_lib.StepFlops) -> dict[str, Any]:
  """XLA's cost-analysis FLOPs and HLO dot FLOPs of a loop-free program vs ``analytic``."""
  if has_loops(compiled):
    raise BenchmarkError("XLA's cost analysis counts a while body once; compile the step "
                         "with scan_layers=False and one micro-batch to compare")
  xla = _cost_flops(compiled)
  dots = hlo.dot_flops(compiled.as_text())
  return {"xla_cost_flops": xla, "hlo_dot_flops": dots, "analytic_flops": analytic.hardware,
          "analytic_over_xla": analytic.hardware / xla,
          "analytic_over_hlo_dots": analytic.hardware / dots}


def xla_flop_count(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """XLA's count for one micro-step of ``config``'s step (compiled unrolled; not run).

  Compiles the step on one device with ``scan_layers=False`` and global batch = micro
  batch (the same work as one micro-step of the sharded step), and returns
  :func:`xla_counts` of it (cost-analysis flops, the dot-instruction sum, the analytic count
  of that program, model + recompute, and the ratios analytic / XLA).
  """
  c = copy.deepcopy(config)
  c.model.scan_layers = False
  c.batch.global_batch = int(c.batch.micro_batch)
  # One device: a partitioned program's cost analysis is per device.
  c.mesh.shape, c.mesh.num_devices, c.mesh.param_sharding = (1, 1), 1, "replicated"
  setup = build_step(c)
  start = time.perf_counter()
  compiled = setup.fn.lower(*setup.abstract_args).compile()
  out = xla_counts(compiled, analytic_flops(setup, n_micro=1))
  out["compile_s"] = time.perf_counter() - start
  return out


def run_case(config: ml_collections.ConfigDict, *, objective: str, per_device_batch: int,
             n_micro: int = 1, steps: int = 5, warmup: int = 2, peak_tflops: float = 0.0,
             xla_count: bool = False, size: str = "config", seed: int = 0,
             torch_port: bool = False, profile_dir: str | None = None) -> dict[str, Any]:
  """Builds, compiles and times one case; returns its row (see module docstring).

  ``torch_port``: also time the PyTorch eager port of the step (``perf/torch_step.py``,
  same weights and tokens) alternating with it call by call. ``profile_dir``: then trace
  one more step there and add its thread summary (``perf/cpu_profile.py``) to the row."""
  c = case_config(config, objective=objective, per_device_batch=per_device_batch,
                  n_micro=n_micro)
  setup = build_step(c, seed=seed)
  t0 = time.perf_counter()
  lowered = setup.fn.lower(*setup.abstract_args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  args = setup.make_args()
  state, batch, enc = args
  del args

  def call(st):
    return compiled(st, batch, enc)

  port = None
  if torch_port:
    from tokendrift_jax.perf import torch_step  # pylint: disable=import-outside-toplevel
    port = torch_step.TorchStep(c, setup.model_cfg, random_params(setup.model_cfg, seed))
    tokens_np = np.array(jax.device_get(batch))
    first, times, torch_times, state, metrics, torch_loss = time_side_by_side(
        call, state, lambda: port(tokens_np), steps, warmup)
  else:
    first, times, state, metrics = time_calls(call, state, steps, warmup)
  profile = None
  if profile_dir is not None:
    from tokendrift_jax.perf import cpu_profile  # pylint: disable=import-outside-toplevel

    def one_step():
      nonlocal state
      state, out = call(state)
      jax.block_until_ready((state, out))

    where = os.path.join(profile_dir,
                         f"{objective}_L{setup.model_cfg.length}_b{per_device_batch}")
    trace_path = cpu_profile.trace(one_step, where)
    profile = cpu_profile.summarize(cpu_profile.load_events(trace_path),
                                    cpu_profile.op_names(compiled.as_text()))
    profile["trace"] = trace_path
  loss = float(jax.device_get(metrics["loss"]))
  mem = peak_memory()
  ana = analytic_flops(setup)
  step_s = statistics.median(times)
  mcfg = setup.model_cfg
  tokens = int(c.batch.global_batch) * mcfg.length
  row = {
      "objective": objective, "size": size, "family": str(c.model.family),
      "process": str(c.diffusion.process),
      "length": mcfg.length, "per_device_batch": int(per_device_batch),
      "micro_batch": int(c.batch.micro_batch), "n_micro": int(n_micro),
      "global_batch": int(c.batch.global_batch), "num_devices": int(setup.mesh.size),
      "dtype": str(setup.parts.ctx.compute_dtype), "attention_impl": str(c.model.attention_impl or "default"),
      "remat_policy": remat_policy(c) or "none",
      "scan_layers": bool(c.model.get("scan_layers", False)),
      "queue_size": setup.objective.benchmark_fields().get("queue_size"),  # TokenDrift's Q
      "params": mcfg.num_params(), "feature_dim": mcfg.feature_dim,
      "lower_s": t1 - t0, "compile_s": t2 - t1, "first_step_s": first,
      "step_s": step_s, "step_s_all": times, "step_s_min": min(times),
      "tokens_per_step": tokens, "tokens_per_s": tokens / step_s,
      "flops": ana.to_dict(),
      "model_tflops_per_step": ana.model / 1e12,
      "achieved_tflops": ana.model / step_s / 1e12,
      "peak_tflops": peak_tflops or None,
      "mfu": (ana.model / step_s / 1e12 / peak_tflops) if peak_tflops else None,
      "memory": mem, "program_bytes": program_bytes(compiled),
      "loss": loss, "finite": bool(math.isfinite(loss)),
  }
  if profile is not None:
    row["profile"] = profile
  if port is not None:
    row["torch"] = {"step_s": statistics.median(torch_times), "step_s_all": torch_times,
                    "loss": torch_loss, "threads": port.torch.get_num_threads(),
                    "version": port.torch.__version__,
                    "speedup": statistics.median(torch_times) / step_s}
    del port
  if xla_count:
    # The timed program serves when it has no loop left (e.g. 2 blocks, one micro-batch).
    row["xla"] = (xla_counts(compiled, ana)
                  if setup.mesh.size == 1 and not has_loops(compiled) else xla_flop_count(c))
  del state, batch, enc, compiled
  return row


# ----------------------------------------------------------------------------- drift share


def drift_share(step_rows: Sequence[dict], measure: Callable[..., list[dict]],
                q_sizes: Sequence[int] = (1024, 65536), iters: int = 5) -> list[dict]:
  """Drift + queue cost (``perf.drift_timing.measure``) next to each drift step's time.

  For every drift row: the isolated drift_from_features + fixed-point loss + pushes at the
  row's feature size m = 2d and N = its micro batch, per queue size, and its share of the
  measured step time (per micro-step: a step runs n_micro of them).
  """
  out = []
  for row in step_rows:
    if row["objective"] != "drift" or "error" in row:
      continue
    m = int(row["feature_dim"])
    for r in measure(q_sizes=tuple(q_sizes), dim=m, batch=row["micro_batch"], iters=iters):
      per_step_ms = r["drift+push_ms"] * row["n_micro"]
      out.append({"size": row["size"], "length": row["length"],
                  "micro_batch": row["micro_batch"], "m": m, "Q": r["Q"],
                  "drift_push_ms": r["drift+push_ms"], "push_ms": r["push_ms"],
                  "step_ms": row["step_s"] * 1e3,
                  "share": per_step_ms / (row["step_s"] * 1e3),
                  "queue_mib": r["queue_MiB"]})
  return out


# ----------------------------------------------------------------------------- output


def environment() -> dict[str, Any]:
  dev = jax.devices()[0]
  import flax  # pylint: disable=import-outside-toplevel
  return {"backend": jax.default_backend(), "device_kind": dev.device_kind,
          "device_count": jax.device_count(), "process_count": jax.process_count(),
          "jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu_count": os.cpu_count(),
          "machine": platform.machine()}


def _fmt(x, spec: str, none: str = "-") -> str:
  return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
  """The results as markdown tables (steps; XLA agreement; drift share)."""
  env = result["environment"]
  lines = [f"Backend `{env['backend']}` ({env['device_kind']}, {env['device_count']} "
           f"device(s)), jax {env['jax']}, flax {env['flax']}."]
  peak = result.get("peak")
  measured = (result.get("measured_peak") or {}).get("tflops")
  if peak:
    lines.append(f"Peak for MFU: {peak['tflops']:.4g} TFLOP/s ({peak['source']}).")
  if measured and peak and peak["source"] == "given":
    lines.append(f"Measured matmul peak: {measured:.4g} TFLOP/s "
                 f"({result['measured_peak']['dtype']} {result['measured_peak']['n']}^3); "
                 f"MFU against it = MFU x {peak['tflops'] / measured:.3f}.")
  lines += ["", "| objective | size | L | batch/dev | micro | dtype | attention | remat | "
            "Q | compile s | step ms | tokens/s | TFLOP/step | TFLOP/s | MFU | peak mem GiB | "
            "program GiB |",
            "|" + "---|" * 17]
  for r in result["rows"]:
    if "error" in r:
      lines.append(f"| {r['objective']} | {r['size']} | {r['length']} | "
                   f"{r['per_device_batch']} | {r['n_micro']} | {r['dtype']} | "
                   f"{r['attention_impl']} | {r['remat_policy']} | failed: {r['error']} |"
                   + " |" * 8)
      continue
    prog = r.get("program_bytes") or {}
    lines.append(
        f"| {r['objective']} | {r['size']} | {r['length']} | {r['per_device_batch']} | "
        f"{r['n_micro']} | {r['dtype']} | {r['attention_impl']} | {r['remat_policy']} | "
        f"{r['queue_size'] or '-'} | {r['compile_s']:.1f} | {r['step_s'] * 1e3:.1f} | "
        f"{r['tokens_per_s']:.0f} | "
        f"{r['model_tflops_per_step']:.4f} | {r['achieved_tflops']:.3f} | "
        f"{_fmt(r['mfu'] and 100 * r['mfu'], '.1f')}{'%' if r['mfu'] else ''} | "
        f"{r['memory']['peak_bytes'] / 2 ** 30:.2f} | "
        f"{_fmt(prog.get('total') and prog['total'] / 2 ** 30, '.2f')} |")
  xla_rows = [r for r in result["rows"] if "xla" in r and "error" not in r]
  if xla_rows:
    lines += ["", "| objective | size | L | micro | analytic FLOPs | XLA cost_analysis | "
              "analytic/XLA | HLO dots | analytic/dots |", "|" + "---|" * 9]
    for r in xla_rows:
      x = r["xla"]
      lines.append(f"| {r['objective']} | {r['size']} | {r['length']} | {r['micro_batch']} | "
                   f"{x['analytic_flops']:.4g} | {x['xla_cost_flops']:.4g} | "
                   f"{x['analytic_over_xla']:.4f} | {x['hlo_dot_flops']:.4g} | "
                   f"{x['analytic_over_hlo_dots']:.4f} |")
  torch_rows = [r for r in result["rows"] if "torch" in r and "error" not in r]
  if torch_rows:
    mm = result.get("matmul_fp32") or {}
    rate = (mm.get("jax") or {}).get("tflops")
    if mm:
      lines += ["", f"float32 {mm['jax']['n']}^3 matmul: JAX {1e3 * mm['jax']['tflops']:.1f} "
                f"GFLOP/s, PyTorch {mm['torch']['gflops']:.1f} GFLOP/s."]
    lines += ["", "| objective | size | L | batch | dtype | JAX step ms | PyTorch step ms | "
              "PyTorch / JAX | JAX GFLOP/s | of the fp32 matmul |", "|" + "---|" * 10]
    for r in torch_rows:
      lines.append(f"| {r['objective']} | {r['size']} | {r['length']} | {r['micro_batch']} | "
                   f"{r['dtype']} | {r['step_s'] * 1e3:.0f} | "
                   f"{r['torch']['step_s'] * 1e3:.0f} | {r['torch']['speedup']:.2f}x | "
                   f"{1e3 * r['achieved_tflops']:.1f} | "
                   f"{_fmt(rate and 100 * r['achieved_tflops'] / rate, '.0f')}% |")
  if result.get("drift_share"):
    lines += ["", "| size | L | N | m | Q | drift+queues ms | push ms | drift step ms | "
              "share |", "|" + "---|" * 9]
    for s in result["drift_share"]:
      lines.append(f"| {s['size']} | {s['length']} | {s['micro_batch']} | {s['m']} | "
                   f"{s['Q']} | {s['drift_push_ms']:.2f} | {s['push_ms']:.3f} | "
                   f"{s['step_ms']:.1f} | {100 * s['share']:.2f}% |")
  return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], out_dir: str, name: str = "benchmark"
                  ) -> tuple[str, str]:
  """Writes ``name``.json and ``name``.md under ``out_dir``; returns both paths."""
  os.makedirs(out_dir, exist_ok=True)
  jpath = os.path.join(out_dir, f"{name}.json")
  mpath = os.path.join(out_dir, f"{name}.md")
  with open(jpath, "w") as f:
    json.dump(result, f, indent=2, sort_keys=True)
  with open(mpath, "w") as f:
    f.write(markdown(result))
  return jpath, mpath


def run(config: ml_collections.ConfigDict, *, size: str, lengths: Iterable[int],
        batches: Iterable[int], objectives: Iterable[str], steps: int, warmup: int,
        n_micro: int = 1, peak_tflops: float = 0.0, measure_peak: bool = False,
        xla_count: bool = False, drift_measure: Callable | None = None,
        queue_sizes: Sequence[int] = (1024, 65536), drift_iters: int = 5,
        on_row: Callable[[dict, dict], None] | None = None,
        torch_port: bool = False, profile_dir: str | None = None) -> dict[str, Any]:
  """Every (length, batch, objective) case; the full result dict (rows, peak, env).

  ``on_row(row, result_so_far)`` is called after each case (e.g. to print it and save
  partial results, so a run stopped by a time limit keeps what it measured).
  """
  if steps < 1 or warmup < 0:
    raise BenchmarkError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
  result: dict[str, Any] = {"environment": environment(), "rows": []}
  if measure_peak:
    p = measure_matmul_peak()
    result["measured_peak"] = p
    if not peak_tflops:
      peak_tflops = p["tflops"]
      result["peak"] = {"tflops": peak_tflops,
                        "source": f"measured {p['dtype']} {p['n']}^3 matmul"}
  if torch_port:
    from tokendrift_jax.perf import torch_step  # pylint: disable=import-outside-toplevel
    result["matmul_fp32"] = {"jax": measure_matmul_peak(jnp.float32, 2048),
                             "torch": torch_step.matmul_rate(2048)}
  if peak_tflops and "peak" not in result:
    result["peak"] = {"tflops": float(peak_tflops), "source": "given"}
  for length in lengths:
    sized = apply_size(config, size, int(length))
    for b in batches:
      for objective in objectives:
        try:
          row = run_case(sized, objective=objective, per_device_batch=int(b),
                         n_micro=n_micro, steps=steps, warmup=warmup,
                         peak_tflops=peak_tflops, xla_count=xla_count, size=size,
                         torch_port=torch_port, profile_dir=profile_dir)
        except BenchmarkError:
          raise
        except Exception as e:  # pylint: disable=broad-except
          # One case that fails to compile or run (e.g. out of device memory) is reported
          # in its row; the other cases still run.
          row = {"objective": objective, "size": size, "length": int(sized.model.length),
                 "per_device_batch": int(b), "n_micro": int(n_micro),
                 "dtype": str(sized.model.dtype),
                 "attention_impl": str(sized.model.attention_impl or "default"),
                 "remat_policy": remat_policy(sized) or "none",
                 "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        result["rows"].append(row)
        if on_row is not None:
          on_row(row, result)
  if drift_measure is not None:
    result["drift_share"] = drift_share(result["rows"], drift_measure, queue_sizes,
                                        drift_iters)
  return result
