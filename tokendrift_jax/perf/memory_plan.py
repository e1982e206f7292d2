"""Per-device memory of a training step, measured by compiling it on an abstract mesh.

Nothing is allocated: the step of ``train/builder.build_step`` is lowered with the
ShapeDtypeStructs (with shardings) of its arguments (``StepParts.abstract_args``) and
compiled for N simulated devices; XLA's ``memory_analysis`` of the compiled step gives the
bytes every device holds (arguments: parameters, Adam moments, EMA, queues, the batch and
the frozen encoder; outputs, aliased with the donated state; temporaries: activations,
gradients, collectives' buffers). The step's FLOPs are the model's analytic count
(:func:`perf.flops.step_flops`); XLA's ``cost_analysis`` is kept in the row (``xla_flops``)
but counts a loop body (the micro-step scan, the layer scan) once, so it is not the step's.

The device count must be fixed before JAX starts, so one row = one process:
``launch/plan_memory.py`` sets ``--xla_force_host_platform_device_count`` and calls
:func:`plan`. On CPU the compiled program is XLA:CPU's; an accelerator's compiler fuses and
schedules differently, so the temporaries are an estimate of the same order, not a bound
(docs/SCALING.md).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ml_collections

GIB = 2 ** 30
# Usable HBM per device of the kinds the plan is for.
DEVICE_GB = {"H100 (80 GB)": 80, "H200 (141 GB)": 141, "TPU v5p (95 GB)": 95}


@dataclasses.dataclass(frozen=True)
class MemoryRow:
  """One compiled step: settings, per-device bytes, FLOPs and compile time.

  ``held_bytes``: what one device holds of the step's arguments (state, batch, frozen
  encoder), from their shardings. ``argument_bytes``: what the compiled program takes, which
  is less when jit prunes an unused argument (the frozen encoder's final norm and output
  layer: its features are the last blocks' outputs), though the caller still holds them.
  """
  config: str
  objective: str
  devices: int
  mesh: tuple[int, ...]
  micro_batch_per_shard: int
  length: int
  remat: bool
  remat_policy: str
  global_batch: int
  micro_steps: int
  held_bytes: int
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  xla_flops: float
  analytic_flops: float
  compile_s: float

  @property
  def peak_bytes(self) -> int:
    """Held arguments + temporaries + outputs not aliased to (donated) arguments."""
    return self.held_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

  def fits(self) -> dict[str, bool]:
    return {k: self.peak_bytes <= gb * 1e9 for k, gb in DEVICE_GB.items()}

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d.update(peak_bytes=self.peak_bytes, peak_gib=self.peak_bytes / GIB, fits=self.fits())
    return d


def configure(config: ml_collections.ConfigDict, *, mesh: tuple[int, ...],
              micro_batch_per_shard: int, length: int, remat: bool, objective: str,
              global_batch: int) -> ml_collections.ConfigDict:
  """``config`` set up for one row: the mesh with rule-based parameter sharding, the
  micro-batch (per batch shard, i.e. per data x fsdp device), the length, remat."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.objective = objective
  c.mesh.shape = tuple(mesh)
  c.mesh.num_devices = 0
  c.mesh.param_sharding = "rules"
  shards = mesh[0] * mesh[1]
  c.batch.micro_batch = micro_batch_per_shard * shards
  c.batch.global_batch = global_batch
  c.model.length = length
  c.model.remat = bool(remat)
  return c


def held_bytes(tree) -> int:
  """Bytes one device holds of ShapeDtypeStructs with shardings (the largest shard, so an
  uneven split is not under-counted)."""
  import math  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def plan(config: ml_collections.ConfigDict, *, name: str, mesh: tuple[int, ...],
         micro_batch_per_shard: int, length: int, remat: bool, objective: str,
         global_batch: int) -> MemoryRow:
  """Compiles the step of ``config`` for one row and reads XLA's analyses."""
  # pylint: disable=import-outside-toplevel
  import jax
  from tokendrift_jax.perf import flops as flops_lib
  from tokendrift_jax.train import builder
  c = configure(config, mesh=mesh, micro_batch_per_shard=micro_batch_per_shard,
                length=length, remat=remat, objective=objective, global_batch=global_batch)
  parts = builder.build_step(c)
  t0 = time.perf_counter()
  args = parts.abstract_args()
  compiled = parts.step_fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  micro = int(c.batch.micro_batch)
  n_micro = int(c.batch.global_batch) // micro
  analytic = flops_lib.step_flops(
      parts.model_cfg, objective=parts.objective, length=length, micro_batch=micro,
      n_micro=n_micro, remat_policy=(str(c.model.remat_policy) or "nothing_saveable") if remat else "")
  return MemoryRow(
      config=name, objective=objective, devices=jax.device_count(), mesh=tuple(mesh),
      micro_batch_per_shard=micro_batch_per_shard, length=length, remat=bool(remat),
      remat_policy=str(c.model.remat_policy), global_batch=int(c.batch.global_batch),
      micro_steps=n_micro, held_bytes=held_bytes(args),
      argument_bytes=int(mem.argument_size_in_bytes),
      output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes),
      temp_bytes=int(mem.temp_size_in_bytes), xla_flops=float(cost.get("flops", 0.0)),
      analytic_flops=float(analytic.hardware), compile_s=compile_s)


def format_row(row: MemoryRow) -> str:
  fits = ", ".join(f"{k.split(' ')[0]} {'yes' if v else 'no'}" for k, v in row.fits().items())
  return (f"{row.config} {row.objective} devices={row.devices} mesh={row.mesh} "
          f"micro_batch/shard={row.micro_batch_per_shard} L={row.length} "
          f"remat={row.remat}: per device {row.peak_bytes / GIB:.1f} GiB "
          f"(arguments {row.held_bytes / GIB:.1f}, temporaries {row.temp_bytes / GIB:.1f}, "
          f"outputs {row.output_bytes / GIB:.1f}, aliased {row.alias_bytes / GIB:.1f}); "
          f"fits: {fits}; step {row.analytic_flops:.3e} FLOPs (analytic, all devices); "
          f"compiled in {row.compile_s:.0f} s")


def markdown(rows: list[dict[str, Any]]) -> str:
  """docs/SCALING.md's table from the JSON rows that ``launch/plan_memory.py --out`` wrote."""
  head = ("| config | devices | mesh (d, f, t) | micro-batch / shard | sequences / micro-step "
          "| L | remat | "
          "arguments GiB | temporaries GiB | peak GiB | H100 80 | H200 141 | v5p 95 | "
          "compile s |")
  lines = [head, "|" + "---|" * 14]
  for r in rows:
    fits = [("yes" if r["fits"][k] else "no") for k in DEVICE_GB]
    lines.append(
        f"| {r['config'].removesuffix('.py')} | {r['devices']} | {tuple(r['mesh'])} | "
        f"{r['micro_batch_per_shard']} | "
        f"{r['micro_batch_per_shard'] * r['mesh'][0] * r['mesh'][1]} | {r['length']} | "
        f"{'yes' if r['remat'] else 'no'} | "
        f"{r['held_bytes'] / GIB:.1f} | {r['temp_bytes'] / GIB:.1f} | "
        f"{r['peak_bytes'] / GIB:.1f} | " + " | ".join(fits) + f" | {r['compile_s']:.0f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  import json
  import sys
  with open(sys.argv[1], encoding="utf-8") as f:
    print(markdown([json.loads(line) for line in f if line.strip()]))
