"""Benchmark the training steps: ``python launch/benchmark.py --config=configs/mdlm_drift.py``.

Times the jitted continuation and TokenDrift steps (compile separately, then the median of
``--steps`` device-synchronised calls after ``--warmup``), and reports step time, tokens/s,
analytic model FLOPs per step, MFU, compile time and peak memory; writes
``OUT/NAME.json`` and ``OUT/NAME.md`` and prints the table. See docs/PERFORMANCE.md.

  # tiny, both objectives, with XLA's FLOP count next to the analytic one
  python launch/benchmark.py --config=configs/mdlm_drift.py --size=tiny --length=64 \\
      --batch=4 --xla_count
  # 170M at length 128 on CPU, plus the drift + queue share at Q = 1024 / 65536
  python launch/benchmark.py --config=configs/mdlm_drift.py --size=170m --length=128 \\
      --batch=2 --steps=3 --drift_share
  # a GPU: 170M at length 1024, cuDNN attention, MFU against the bf16 dense peak
  # (launch/device_check.sh runs this, and batch 32 with remat, on an H200)
  python launch/benchmark.py --config=configs/mdlm_drift.py --size=170m --length=1024 \\
      --batch=2,8 --peak_tflops=989 --measure_peak --config.model.attention_impl=cudnn
  # CPU: the JAX step against the PyTorch eager port, alternating in one process
  # (the port calls tests/references/torch_dit.py: run from a repository checkout)
  python launch/benchmark.py --size=170m --length=128 --batch=2 --steps=5 --warmup=1 \\
      --torch
  # the bf16-vs-fp32 check of one TokenDrift micro-step instead of timing
  python launch/benchmark.py --smoke --size=tiny --length=64 --batch=4

Any config field can be overridden (``--config.model.remat=True``,
``--config.model.remat_policy=dots_saveable``, ``--config.drift.queue_size=65536``).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from tokendrift_jax import malloc
from tokendrift_jax import runtime

try:
  # The default file is loaded here, with the command line's --config.* overrides.
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/mdlm_drift.py",
                                            "training config file")
except runtime.CONFIG_ERRORS as _e:
  runtime.exit_config_error(_e, sys.argv[:1] + ["--config=configs/mdlm_drift.py"] + sys.argv[1:],
                            "configs/mdlm_drift.py")
_SIZE = flags.DEFINE_enum("size", "config", ["config", "tiny", "170m"],
                          "architecture: the config's model, or a named size")
_LENGTH = flags.DEFINE_list("length", ["0"], "sequence length(s); 0 = the config's")
_BATCH = flags.DEFINE_list("batch", ["2"], "per-device micro-batch size(s)")
_OBJECTIVES = flags.DEFINE_list("objectives", ["continuation", "drift"],
                                "steps to time: continuation, drift")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps per case (median reported)")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed steps after compilation")
_N_MICRO = flags.DEFINE_integer("n_micro", 1, "micro-steps accumulated per optimizer step")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0,
                           "peak TFLOP/s for MFU (e.g. 989 = H100/H200 SXM dense bf16); "
                           "0 = none, or the measured one with --measure_peak")
_MEASURE_PEAK = flags.DEFINE_bool("measure_peak", False,
                                  "time a large matmul and report its TFLOP/s")
_XLA_COUNT = flags.DEFINE_bool("xla_count", False,
                               "also compile each step unrolled and report XLA's FLOP count")
_DRIFT_SHARE = flags.DEFINE_bool("drift_share", False,
                                 "time drift + queues alone (tokendrift_jax/perf/"
                                 "drift_timing.py) at --queue_sizes next to each drift "
                                 "step")
_QUEUE_SIZES = flags.DEFINE_list("queue_sizes", ["1024", "65536"],
                                 "queue sizes for --drift_share")
_SMOKE = flags.DEFINE_bool("smoke", False,
                           "instead of timing: the bf16-vs-fp32 check of one TokenDrift "
                           "micro-step (tokendrift_jax/perf/smoke.py) at --size/--length "
                           "and the first --batch; exits 1 if a variant fails")
_SMOKE_VARIANTS = flags.DEFINE_list("smoke_variants", ["bfloat16:xla"],
                                    "dtype:attention_impl variants compared with "
                                    "float32:xla, e.g. bfloat16:xla,bfloat16:cudnn")
_TORCH = flags.DEFINE_bool("torch", False,
                           "also time the PyTorch eager port of each step "
                           "(tokendrift_jax/perf/torch_step.py; MDLM continuation and "
                           "TokenDrift, float32) alternating with it in this process, and "
                           "the float32 2048^3 matmul rate of both")
_PROFILE = flags.DEFINE_bool("profile", False,
                             "after timing each case, trace one more step (XLA:CPU thunk "
                             "events; tokendrift_jax/perf/cpu_profile.py) into "
                             "OUT/profile/ and print where it spent its time by thread")
_OUT = flags.DEFINE_string("out", "benchmark_out", "directory for NAME.json and NAME.md")
_NAME = flags.DEFINE_string("name", "benchmark", "output file stem")


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  if _PROFILE.value:   # before the backend starts: XLA reads its flags once
    from tokendrift_jax.perf import cpu_profile
    cpu_profile.enable_traceme(os.environ)
  from tokendrift_jax.perf import benchmark
  from tokendrift_jax.perf import drift_timing

  def show(row, partial):
    benchmark.write_results(partial, _OUT.value, _NAME.value)  # kept if a later case dies
    head = (f"[benchmark] {row['objective']:>12} size={row['size']} L={row['length']} "
            f"batch/dev={row['per_device_batch']}:")
    if "error" in row:
      print(f"{head} FAILED {row['error']}", flush=True)
      return
    print(f"{head} compile {row['compile_s']:.1f} s, step {row['step_s'] * 1e3:.1f} ms, "
          f"{row['tokens_per_s']:.0f} tok/s, {row['achieved_tflops']:.3f} TFLOP/s"
          + (f"; PyTorch {row['torch']['step_s'] * 1e3:.1f} ms "
             f"({row['torch']['speedup']:.2f}x)" if "torch" in row else ""), flush=True)
    if "profile" in row:
      from tokendrift_jax.perf import cpu_profile
      print(cpu_profile.markdown(row["profile"]), flush=True)

  if _SMOKE.value:
    return _smoke()
  try:
    result = benchmark.run(
        _CONFIG.value, size=_SIZE.value, lengths=[int(x) for x in _LENGTH.value],
        batches=[int(x) for x in _BATCH.value], objectives=list(_OBJECTIVES.value),
        steps=_STEPS.value, warmup=_WARMUP.value, n_micro=_N_MICRO.value,
        peak_tflops=_PEAK.value, measure_peak=_MEASURE_PEAK.value,
        xla_count=_XLA_COUNT.value,
        drift_measure=drift_timing.measure if _DRIFT_SHARE.value else None,
        queue_sizes=[int(q) for q in _QUEUE_SIZES.value], on_row=show,
        torch_port=_TORCH.value,
        profile_dir=os.path.join(_OUT.value, "profile") if _PROFILE.value else None)
  except (benchmark.BenchmarkError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  jpath, mpath = benchmark.write_results(result, _OUT.value, _NAME.value)
  print(benchmark.markdown(result))
  print(f"wrote {jpath} and {mpath}")
  return 0


def _smoke() -> int:
  # pylint: disable=import-outside-toplevel
  import json

  from tokendrift_jax.perf import benchmark
  from tokendrift_jax.perf import smoke
  try:
    config = benchmark.apply_size(_CONFIG.value, _SIZE.value, int(_LENGTH.value[0]))
    config.objective = "drift"
    report = smoke.run(config, batch=int(_BATCH.value[0]),
                       variants=smoke.parse_variants(_SMOKE_VARIANTS.value))
  except (benchmark.BenchmarkError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, f"{_NAME.value}.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
  print(smoke.markdown(report))
  print(f"smoke {'PASS' if report['pass'] else 'FAIL'}; wrote {path}")
  return 0 if report["pass"] else 1


if __name__ == "__main__":
  malloc.use_allocator_tunables()   # re-executes under glibc's allocator tunables (tokendrift_jax/malloc.py)
  app.run(lambda argv: sys.exit(main(argv)),
          flags_parser=runtime.flags_parser("configs/mdlm_drift.py"))
