"""perf/memory_plan (launch/plan_memory.py): a LLaDA TokenDrift step (configs/llada_drift.py:
bf16, remat, rule-based sharding) compiled on the (1, 2, 4) mesh of the suite's 8 CPU
devices, nothing allocated. XLA's per-device argument bytes equal the bytes of every
argument's shard, counted here from the shardings alone. The suite compiles the shipped
config with the tiny architecture; the 8B itself (30 s) is slow. The rows of
docs/SCALING.md are the 8B at L = 1024 / 4096 on 2-64 simulated devices (one process per
row)."""

from __future__ import annotations

import math
import re

import jax
import numpy as np
import pytest

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


def _check_plan(cfg, length, n_params):
  kw = dict(mesh=(1, 2, 4), micro_batch_per_shard=1, length=length, remat=True,
            objective="drift", global_batch=8)
  row = memory_plan.plan(cfg, name="llada_drift", **kw)
  parts = builder.build_step(memory_plan.configure(cfg, **kw))
  assert parts.model_cfg.num_params() == n_params
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


@pytest.mark.slow   # the same check runs by default for XLA:TPU (tests/perf/test_targets.py)
def test_compiled_arguments_are_the_sharded_state(tiny_llada_config):
  from configs import llada_drift  # pylint: disable=import-outside-toplevel
  cfg = llada_drift.get_config()
  tiny = tiny_llada_config()
  cfg.model.update(tiny.to_dict())
  _check_plan(cfg, 16, tiny.num_params())


def test_step_places_block_activations_by_rows(tiny_llada_config):
  """The step traces its models inside sharding.activation_mesh: on (1, 2, 4) the residual
  stream of every block (the scanned ones, the encoder's, the generator's) is constrained
  to rows over fsdp (and positions over tensor), so XLA runs FSDP instead of splitting the
  width and replicating rows."""
  from configs import llada_drift  # pylint: disable=import-outside-toplevel
  cfg = llada_drift.get_config()
  cfg.model.update(tiny_llada_config().to_dict())
  kw = dict(mesh=(1, 2, 4), micro_batch_per_shard=1, length=16, remat=True,
            objective="drift", global_batch=8)
  parts = builder.build_step(memory_plan.configure(cfg, **kw))
  text = parts.step_fn.lower(*parts.abstract_args()).as_text()
  residual = re.findall(r'sdy.sharding_constraint \S+ <@\w+, \[\{"fsdp"\}, \{"tensor"\}, \{\}\]> : '
                        r'tensor<2x16x\d+xf32>', text)
  assert residual, [line for line in text.splitlines() if "sharding_constraint" in line][:5]


@pytest.mark.slow
def test_compiled_8b_arguments_are_the_sharded_state():
  from configs import llada_drift  # pylint: disable=import-outside-toplevel
  _check_plan(llada_drift.get_config(), 64, 8_015_581_184)
