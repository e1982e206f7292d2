"""The objective contract: an objective defined here alone trains through the unchanged
trainer, checkpoints its auxiliary state and resumes bitwise; the registry refuses what is
not an objective."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import objectives
from tokendrift_jax.objectives.base import Objective
from tokendrift_jax.train import builder
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import losses
from tokendrift_jax.train import trainer


@dataclasses.dataclass(frozen=True)
class ScaledLossWithMemory(Objective):
  """A toy: the process loss times ``scale``, with an auxiliary state that every micro-step
  and every step changes — a running sum of the micro-batch losses (float32 []), the
  number of micro-steps (int32 []) and a per-position count of predicted tokens seen
  (float32 [L]) — and a "frozen" tree: a scalar offset added to the loss."""
  scale: float
  length: int
  name = "toy_scaled_memory"
  frozen_kind = "offset"

  @classmethod
  def from_config(cls, config, model_cfg, process):
    del config, process
    return cls(scale=0.5, length=model_cfg.length)

  def init_aux(self, params):
    del params
    return {"loss_sum": jnp.zeros((), jnp.float32), "micro_steps": jnp.zeros((), jnp.int32),
            "seen": jnp.zeros((self.length,), jnp.float32)}

  def frozen(self, params):
    del params
    return {"offset": jnp.asarray(0.25, jnp.float32)}

  def frozen_shardings(self, param_shardings):
    rep = jax.tree.leaves(param_shardings)[0]  # replicated here ("replicated" placement)
    return {"offset": rep}

  def microstep(self, ctx, params, frozen, aux, batch, key):
    losses.check_batch(batch)
    k_loss, k_drop = jax.random.split(key)

    def loss_fn(p):
      loss, _ = ctx.process.loss(losses.generator(ctx, p, k_drop), batch, k_loss)
      return self.scale * loss + frozen["offset"]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    aux = {"loss_sum": aux["loss_sum"] + loss, "micro_steps": aux["micro_steps"] + 1,
           "seen": aux["seen"] + jnp.sum(batch % 2, axis=0).astype(jnp.float32)}
    return loss, grads, aux, {"loss": loss}

  def end_step(self, aux, params, step):
    del params
    return aux, {"toy_mean_loss": aux["loss_sum"] / aux["micro_steps"],
                 "toy_step": step.astype(jnp.float32)}

  def resume_fields(self):
    return {"objective": self.name}


objectives.register(ScaledLossWithMemory)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if '"loss"' in line]


def _final_state(config, workdir, step):
  abstract = builder.build_step(config).abstract_args()[0]
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    state, _, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return jax.device_get(state)


def test_a_toy_objective_trains_checkpoints_and_resumes_bitwise(tiny_dir, tiny_run_config,
                                                                tmp_path, monkeypatch):
  # The trainer is under test, not the step: both runs (same config) share one built step,
  # so it is traced and compiled once.
  real, built = builder.build_step, {}
  monkeypatch.setattr(builder, "build_step",
                      lambda config, model_cfg=None: built.setdefault(
                          "step", real(config, model_cfg)))
  c = tiny_run_config(str(tiny_dir), "mdlm", ScaledLossWithMemory.name, steps=4,
                      mesh_shape=(1, 1), num_devices=1, global_batch=8, micro_batch=4)
  c.train.checkpoint_every, c.train.keep_checkpoints = 2, 5
  whole = str(tmp_path / "whole")
  trainer.train(c, whole)
  state4 = _final_state(c, whole, 4)
  # The auxiliary state is the objective's: 4 steps x 2 micro-steps, and it was saved.
  assert int(state4.aux["micro_steps"]) == 8
  assert float(state4.aux["loss_sum"]) > 0 and float(np.sum(state4.aux["seen"])) > 0
  rows = _rows(whole)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert all(r["toy_step"] == r["step"] for r in rows)
  np.testing.assert_allclose([r["toy_mean_loss"] for r in rows][-1],
                             float(state4.aux["loss_sum"]) / 8, rtol=1e-6)

  # Interrupted after step 2: the step-4 checkpoint is gone, the rerun resumes from 2.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(whole, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
  summary = trainer.train(c, resumed)
  assert summary["start_step"] == 2
  chex.assert_trees_all_equal(_final_state(c, resumed, 4), state4, strict=True)
  assert [r["loss"] for r in _rows(resumed)] == [r["loss"] for r in rows]


def test_the_registry_refuses_what_is_not_an_objective():
  with pytest.raises(TypeError, match="not an Objective"):
    objectives.register(dict)
  with pytest.raises(ValueError, match="built in"):
    objectives.register(type("Shadow", (ScaledLossWithMemory,), {"name": "drift"}))
  with pytest.raises(ValueError, match="config.objective must be one of"):
    objectives.get("no_such_objective")
  assert ScaledLossWithMemory.name in objectives.names()
