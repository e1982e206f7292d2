"""TokenDrift and continuation on a tiny Dream through the real step (``--runslow``): the
family-generic lift, features, drift and prompt handling run on the Dream backbone
unchanged; the shipped 7B configs build and point at the converter when the checkpoint is
missing.

The init checkpoint is a random tiny Dream with every leaf perturbed (its norms and
biases start at one and zero), written by ``checkpoints.save_backbone``
(tests/helpers/tiny_run.py).
"""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.train import builder
from tokendrift_jax.train import prompt as prompt_lib
from tokendrift_jax.train import trainer


def _one_step(config):
  """(metrics, params before, params after) of one jitted step of ``config`` from its init."""
  parts = builder.build_step(config)
  params = checkpoints.load_backbone_params(config.init_checkpoint)[1]
  state = sharding.to_global(parts.init_state(params), parts.state_shardings)
  encoder = parts.objective.frozen(params)
  if encoder is not None:
    encoder = sharding.to_global(encoder, parts.frozen_shardings)
  train_iter, _ = trainer.make_data(config, parts.model_cfg.length, parts.process)
  batch = jax.make_array_from_process_local_data(parts.batch_sharding,
                                                 np.asarray(next(train_iter), np.int32))
  state, metrics = parts.step_fn(state, batch, encoder)
  return jax.device_get(metrics), params, jax.device_get(state.params)


# --runslow: each step compiles a TokenDrift (or continuation) step, 12-17 s on 2 CPU cores.
@pytest.mark.slow
@pytest.mark.parametrize("objective,prompt", [("drift", False), ("drift", True),
                                              ("continuation", False)])
def test_tiny_dream_step(objective, prompt, tiny_dir, tiny_dream_run_config, max_abs_diff):
  """One step of each objective (TokenDrift unconditional and with a 4-token prompt prefix,
  continuation): finite loss, the generator's queue filled, parameters moved."""
  over = dict(prompt_mode="prefix", prompt_length=4) if prompt else {}
  cfg = tiny_dream_run_config(tiny_dir, objective, **over)
  cfg.ema.enabled = False   # not what this test looks at; a smaller step to compile
  metrics, init, params = _one_step(cfg)
  assert bool(metrics["finite"]) and np.isfinite(metrics["loss"]) and metrics["loss"] > 0
  assert max_abs_diff(params, init) > 1e-4


@pytest.mark.parametrize("name", ["dream_drift", "dream_continuation"])
def test_shipped_dream_configs_build(name):
  """The shipped 7B configs: Dream-v0-Base-7B's architecture at length 1024, the dream
  process, the paper's optimizer and batch; a missing checkpoint stops at once naming the
  hub release and the converter."""
  c = importlib.import_module(f"configs.{name}").get_config()
  seven_b = dict(models.get_family("dream").sizes["7b"], length=1024)
  assert {k: c.model[k] for k in seven_b} == seven_b
  assert (c.model.family, c.model.dtype, c.model.remat) == ("dream", "bfloat16", True)
  assert (c.optim.lr, c.batch.global_batch, c.data.tokenizer) == (
      3e-5, 512, "Dream-org/Dream-v0-Base-7B")
  assert c.objective == ("drift" if "drift" in name else "continuation")
  model_cfg = builder.model_config(c)
  builder.check_batch_config(c, builder.make_mesh(c), 1)
  process = builder.process_for(c, model_cfg)
  assert (process.name, process.mask_id) == ("dream", 151666)
  assert not prompt_lib.from_config(c, model_cfg.length, process).active
  with pytest.raises(trainer.TrainError,
                     match=r"download Dream-org/Dream-v0-Base-7B elsewhere .* `python -m "
                           r"convert SRC DST --family dream`"):
    trainer.resolve_init_checkpoint(c)
