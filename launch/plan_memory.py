"""Compiles one training step on N simulated devices and prints its per-device memory.

  python launch/plan_memory.py --config=configs/llada_drift.py --devices=64 --mesh=8,2,4 \\
      --micro-batch=1 --length=1024 --remat

One row of docs/SCALING.md per command: parameters are shape structs (nothing is
allocated), the step is ``train/builder.build_step``'s, compiled by XLA:CPU for the mesh
(``tokendrift_jax/perf/memory_plan.py``). ``--out FILE`` appends the row as a JSON line.
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
  p.add_argument("--devices", type=int, required=True, help="simulated devices")
  p.add_argument("--mesh", type=_mesh, required=True, help="data,fsdp,tensor")
  p.add_argument("--micro-batch", type=int, default=1, help="sequences per batch shard")
  p.add_argument("--length", type=int, default=1024)
  p.add_argument("--remat", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--objective", choices=objectives.names(), default="")
  p.add_argument("--global-batch", type=int, default=512, help="the paper's 512")
  p.add_argument("--out", default="", help="append the row to this JSON-lines file")
  args = p.parse_args(argv)
  if args.mesh[0] * args.mesh[1] * args.mesh[2] != args.devices:
    print(f"error: --mesh {args.mesh} needs {args.mesh[0] * args.mesh[1] * args.mesh[2]} "
          f"devices, --devices is {args.devices}", file=sys.stderr)
    return 2
  # Before JAX initialises its backend.
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}")
  from ml_collections.config_flags import config_flags  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.perf import memory_plan  # pylint: disable=import-outside-toplevel
  config = config_flags.ConfigFileFlagParser("config", lock_config=False).parse(args.config)
  try:
    row = memory_plan.plan(config, name=os.path.basename(args.config), mesh=args.mesh,
                           micro_batch_per_shard=args.micro_batch, length=args.length,
                           remat=args.remat, objective=args.objective or config.objective,
                           global_batch=args.global_batch)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(memory_plan.format_row(row))
  if args.out:
    with open(args.out, "a", encoding="utf-8") as f:
      f.write(json.dumps({**row.to_dict(), "command": " ".join(["python launch/plan_memory.py"]
                                                                + (argv or sys.argv[1:]))})
              + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
