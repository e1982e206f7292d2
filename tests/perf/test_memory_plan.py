"""perf/memory_plan (launch/plan_memory.py): the shipped LLaDA-8B TokenDrift step
(configs/llada_drift.py, bf16, remat, rule-based sharding) compiled on the (1, 2, 4) mesh of
the suite's 8 CPU devices at a short length, nothing allocated. XLA's per-device argument
bytes equal the bytes of every argument's shard, counted here from the shardings alone.
The rows of docs/SCALING.md are the same computation at L = 1024 / 4096 on 8-64 simulated
devices (launch/plan_memory.py, one process per row)."""

from __future__ import annotations

import math

import jax
import numpy as np

from tokendrift_jax.perf import memory_plan
from tokendrift_jax.train import builder


def _shard_bytes(tree) -> int:
  """Bytes one device holds of ShapeDtypeStructs with shardings (written out here, not
  memory_plan.held_bytes: every split the rules make is even, so all shards are equal)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def test_compiled_8b_arguments_are_the_sharded_state():
  from configs import llada_drift  # pylint: disable=import-outside-toplevel
  cfg = llada_drift.get_config()
  kw = dict(mesh=(1, 2, 4), micro_batch_per_shard=1, length=64, remat=True,
            objective="drift", global_batch=8)
  row = memory_plan.plan(cfg, name="llada_drift", **kw)
  parts = builder.build_step(memory_plan.configure(cfg, **kw))
  assert parts.model_cfg.num_params() == 8_015_581_184
  state, batch, encoder = parts.abstract_args()
  expected = _shard_bytes((state, batch, encoder))
  assert (row.devices, row.mesh, row.micro_steps) == (8, (1, 2, 4), 4)
  assert row.held_bytes == expected
  # jit prunes the two arguments the step never reads, the frozen encoder's final norm and
  # output layer (its features are the last blocks' outputs); all else reaches the program.
  assert row.argument_bytes == expected - _shard_bytes((encoder["ln_f"], encoder["ff_out"]))
  # The donated state comes back in place: outputs are aliased, not extra memory.
  assert 0 < row.alias_bytes <= row.output_bytes and row.temp_bytes > 0
  assert row.peak_bytes == row.held_bytes + row.temp_bytes + row.output_bytes - row.alias_bytes
  print(memory_plan.format_row(row))
