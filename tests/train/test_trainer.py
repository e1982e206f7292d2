"""The trainer: device-count invariance, bitwise resume, the full 170M config."""

from __future__ import annotations

import os

import chex
import jax
import numpy as np
import pytest

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import trainer


# ------------------------------------------------------------------ device invariance


def test_one_device_equals_eight_devices_dp_and_fsdp(tiny_dir, tmp_path, tiny_run_config,
                                                     read_losses, exported_params, max_abs_diff):
  # max_abs_diff is kept for the lower bound below; closeness goes through chex.
  """3 TokenDrift steps on 1 device == on 8 devices as (8,1) and (4,2)+FSDP, within 1e-5."""
  runs = {}
  for name, shape, n, rule in [("one", (1, 1), 1, "replicated"),
                               ("dp8", (8, 1), 8, "replicated"),
                               ("fsdp", (4, 2), 8, "fsdp")]:
    cfg = tiny_run_config(tiny_dir, mesh_shape=shape, num_devices=n, param_sharding=rule)
    trainer.train(cfg, str(tmp_path / name))
    runs[name] = (read_losses(str(tmp_path / name)), exported_params(str(tmp_path / name)))
  ref_losses, ref_params = runs["one"]
  assert len(ref_losses) == 3
  init = checkpoints.load_backbone_params(os.path.join(tiny_dir, "init"))[1]
  assert max_abs_diff(ref_params, init) > 1e-4, "parameters must move for the test to mean much"
  for name in ("dp8", "fsdp"):
    losses, params = runs[name]
    # float32 reductions are split differently over devices; 1e-5 is the bound and
    # ~100x the observed differences.
    # Keyed by the run's name, so that a failure names the run and the leaf.
    chex.assert_trees_all_close({name: losses}, {name: ref_losses}, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close({name: params}, {name: ref_params}, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ resume


def _state_at(workdir, step, like_cfg):
  run = trainer.build(like_cfg, workdir)
  state, _, _ = run.checkpointer.restore(step, checkpointing.abstract_like(run.state))
  run.checkpointer.close()
  return state


def test_resume_is_bitwise_identical(tiny_dir, tmp_path, tiny_run_config, read_losses):
  """6 steps == 3 steps, restart, 3 more: losses, params and queues bitwise equal."""
  full, split = str(tmp_path / "full"), str(tmp_path / "split")
  trainer.train(tiny_run_config(tiny_dir, steps=6), full)
  first = trainer.train(tiny_run_config(tiny_dir, steps=3), split)
  assert first["step"] == 3
  second = trainer.train(tiny_run_config(tiny_dir, steps=6), split)
  assert second["start_step"] == 3 and second["step"] == 6
  # Exact float equality, JSON round trip included.
  chex.assert_trees_all_equal(read_losses(full), read_losses(split))
  a = _state_at(full, 6, tiny_run_config(tiny_dir, steps=6))
  b = _state_at(split, 6, tiny_run_config(tiny_dir, steps=6))
  chex.assert_trees_all_equal(a, b)
  assert int(a.queues["gen"].count) == 24  # 6 steps x 2 micro-steps x 8 > 24: wrapped


# ------------------------------------------------------------------ the full 170M config


def _shipped_170m_config():
  """configs/mdlm_drift.py as shipped (170M, bf16) at length 16, FSDP over 8 devices."""
  from configs import mdlm_drift  # pylint: disable=import-outside-toplevel
  c = mdlm_drift.get_config()
  c.model.length = 16
  c.batch.global_batch, c.batch.micro_batch = 8, 8
  c.drift.queue_size = 16
  # FSDP over all 8 simulated devices: replicated float32 state (params, Adam moments, EMA,
  # encoder; ~3.4 GB) on 8 CPU "devices" would need 8 copies.
  c.mesh.shape, c.mesh.param_sharding = (1, 8), "fsdp"
  return c


def test_full_170m_drift_config_compiles():
  """The short version of the check below: the shipped config's step builds, shards and
  compiles (abstract arguments, nothing allocated)."""
  from tokendrift_jax.train import builder  # pylint: disable=import-outside-toplevel
  parts = builder.build_step(_shipped_170m_config())
  assert parts.model_cfg.num_params() == 169_627_218
  compiled = parts.step_fn.lower(*parts.abstract_args()).compile()
  assert compiled.as_text()


@pytest.mark.slow
def test_full_170m_drift_config_runs_one_micro_step(tmp_path, make_tokens):
  """configs/mdlm_drift.py as shipped (170M, bf16), short length: builds, shards, steps.
  Slow (a 170M checkpoint written and loaded, a 2.7 GB training checkpoint saved); the suite
  keeps the compile-only version above."""
  from tokendrift_jax.models.dit import mdlm_small
  cfg170 = mdlm_small()
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda x: np.asarray(x) + 0.02 * rng.standard_normal(np.shape(x)).astype(np.float32),
      models.init_params(cfg170, 0))
  init = str(tmp_path / "mdlm170m")
  checkpoints.save_backbone(init, cfg170, params, meta={"process": "mdlm"})
  del params
  make_tokens(str(tmp_path / "train.npy"), 16, 16, 50257, seed=3)
  c = _shipped_170m_config()
  c.init_checkpoint = init
  c.data.kind, c.data.train_tokens = "tokens", str(tmp_path / "train.npy")
  c.train.steps, c.train.log_every, c.train.eval_every = 1, 1, 0
  c.train.export_backbone, c.train.progress = False, False
  out = trainer.train(c, str(tmp_path / "wd"))
  m = out["metrics"]
  assert out["step"] == 1 and np.isfinite(m["loss"]) and m["grad_norm"] > 0
  assert 0 < m["pos_weight_frac/tau=0.02"] < 1 and m["queue_fill_gen"] == 8 / 16
