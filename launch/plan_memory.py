"""Compiles one training step for a target and prints its per-device memory.

  python launch/plan_memory.py --config=configs/llada_drift.py --target=gpu:h100x8 \
      --mesh=1,2,4 --micro-batch=1 --length=1024 --remat

``--target``: ``cpu:N`` (N simulated CPU devices, XLA:CPU; ``--devices=N`` is the same),
``tpu:v5p-16`` (a Cloud TPU slice name; ``tpu:v5p:2x2x2`` a topology; XLA:TPU from libtpu)
or ``gpu:h100x8`` / ``gpu:h200x8`` (XLA:GPU from the CUDA plugin), see
``tokendrift_jax/perf/targets.py``. TPU and GPU targets compile on this machine without the
accelerator (compile-only devices). One row of docs/SCALING.md per command: parameters are
shape structs (nothing is allocated), the step is ``train/builder.build_step``'s on the
target's devices (``tokendrift_jax/perf/memory_plan.py``). Prints per-device memory, whether
it fits the target's memory, the compile time and, for TPU, XLA:TPU's cost-model
``optimal_seconds``; with ``--time`` (TPU) the step time from that cost model with the loops'
trip counts applied, the estimated MFU and the paper budget in chip-hours
(``tokendrift_jax/perf/tpu_time.py``). ``--out FILE`` appends the row as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _mesh(text: str) -> tuple[int, ...]:
  try:
    mesh = tuple(int(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"--mesh {text!r}: give data,fsdp,tensor sizes") from None
  if len(mesh) != 3 or min(mesh) < 1:
    raise argparse.ArgumentTypeError(f"--mesh {text!r}: three sizes >= 1 (data,fsdp,tensor)")
  return mesh


def main(argv=None) -> int:
  # Importing JAX does not start its backend; the device count is set below, before that.
  from tokendrift_jax import objectives  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True, help="a training config file (configs/*.py)")
  p.add_argument("--target", default="",
                  help="cpu:N | tpu:<v4|v5p|v5e|v6e>-<n> | tpu:<gen>:<AxBxC> | "
                       "gpu:<h100|h200>x<n>")
  p.add_argument("--devices", type=int, default=0,
                 help="N simulated CPU devices (the same as --target=cpu:N)")
  p.add_argument("--mesh", type=_mesh, required=True, help="data,fsdp,tensor")
  p.add_argument("--micro-batch", type=int, default=1, help="sequences per batch shard")
  p.add_argument("--length", type=int, default=1024)
  p.add_argument("--remat", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--remat-policy", default=None,
                 help="a jax.checkpoint_policies name ('' = save nothing); default: the "
                      "config's")
  p.add_argument("--scan-layers", action=argparse.BooleanOptionalAction, default=None,
                 help="scan the blocks (default: the config's model.scan_layers)")
  p.add_argument("--time", action="store_true",
                 help="TPU targets: the step time from XLA:TPU's cost model with loop trip "
                      "counts (perf/tpu_time.py), MFU and the paper budget's chip-hours")
  p.add_argument("--hlo-out", default="", help="write the compiled program's HLO text here")
  p.add_argument("--objective", choices=objectives.names(), default="")
  p.add_argument("--global-batch", type=int, default=512, help="the paper's 512")
  p.add_argument("--out", default="", help="append the row to this JSON-lines file")
  args = p.parse_args(argv)
  from tokendrift_jax.perf import targets  # pylint: disable=import-outside-toplevel
  if bool(args.target) == bool(args.devices):
    print("error: give one of --target (cpu:N, tpu:v5p-16, gpu:h100x8, ...) and --devices=N",
          file=sys.stderr)
    return 2
  try:
    target = targets.parse(args.target) if args.target else targets.cpu(args.devices)
  except targets.TargetError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.time and target.platform != "tpu":
    print(f"error: --time reads XLA:TPU's cost model: give a TPU target, not {target.spec}",
          file=sys.stderr)
    return 2
  needed = args.mesh[0] * args.mesh[1] * args.mesh[2]
  if needed != target.num_devices:
    print(f"error: --mesh {args.mesh} needs {needed} devices, --target {target.spec} has "
          f"{target.num_devices}", file=sys.stderr)
    return 2
  # Before JAX initialises its backend: CPU is the only backend started (the TPU/GPU
  # compilers work on compile-only devices; with libtpu or the CUDA plugin installed JAX
  # would otherwise try to start a TPU and a GPU), with enough devices for a cpu:N target.
  # JAX has read JAX_PLATFORMS when it was imported (above), so its config is set too.
  import jax  # pylint: disable=import-outside-toplevel
  os.environ["JAX_PLATFORMS"] = "cpu"
  jax.config.update("jax_platforms", "cpu")
  if target.platform == "cpu":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
                               f"platform_device_count={target.num_devices}")
  from ml_collections.config_flags import config_flags  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.perf import memory_plan  # pylint: disable=import-outside-toplevel
  config = config_flags.ConfigFileFlagParser("config", lock_config=False).parse(args.config)
  print(target.describe(), flush=True)
  try:
    row = memory_plan.plan(config, name=os.path.basename(args.config), mesh=args.mesh,
                           micro_batch_per_shard=args.micro_batch, length=args.length,
                           remat=args.remat, objective=args.objective or config.objective,
                           global_batch=args.global_batch, target=target,
                           remat_policy=args.remat_policy, scan_layers=args.scan_layers)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(memory_plan.format_row(row))
  extra = {}
  if args.hlo_out and row.compiled is not None:
    with open(args.hlo_out, "w", encoding="utf-8") as f:
      f.write(row.compiled.as_text())
  if args.time and not row.error:
    from tokendrift_jax.perf import tpu_time  # pylint: disable=import-outside-toplevel
    extra["time"] = tpu_time.step_estimate(row, target)
    print(tpu_time.format_estimate(extra["time"]))
  if args.out:
    with open(args.out, "a", encoding="utf-8") as f:
      f.write(json.dumps({**row.to_dict(), **extra, "command": " ".join(["python launch/plan_memory.py"]
                                                                + (argv or sys.argv[1:]))})
              + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
