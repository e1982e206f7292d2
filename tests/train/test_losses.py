"""train/losses: the full TokenDrift micro-step (Alg. 1), sharded == single device; the
cost of drift + queues."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.drift import objective as obj_lib
from tokendrift_jax.drift import queue as queue_lib
from tokendrift_jax.train import losses


def _setup(arch, tiny_model_config, random_params):
  cfg = tiny_model_config(arch)
  params = random_params(cfg, seed=3)
  encoder = random_params(cfg, seed=4)
  process = make_process(arch, cfg.vocab_size)
  text_vocab = cfg.vocab_size - 1 if arch == "mdlm" else cfg.vocab_size
  x0 = np.random.default_rng(5).integers(0, text_vocab, size=(8, cfg.length)).astype(np.int32)
  rng = np.random.default_rng(6)
  # Partly filled queues (10 of 16 slots) with unit-norm features.
  queues = {}
  for name in ("real", "gen"):
    q = queue_lib.init_queue(16, 2 * cfg.hidden_size)
    feats = rng.standard_normal((10, 2 * cfg.hidden_size)).astype(np.float32)
    queues[name] = queue_lib.push(q, feats / np.linalg.norm(feats, axis=1, keepdims=True))
  return cfg, params, encoder, process, x0, queues


def _run(arch, mesh, setup):
  cfg, params, encoder, process, x0, queues = setup
  ctx = losses.StepContext(graphdef=models.graphdef(cfg, scan_layers=True),
                           process=process, drift=obj_lib.DriftConfig(queue_size=16),
                           mesh=mesh, dropout=True)
  rep = sharding.replicated(mesh)
  fn = jax.jit(lambda p, e, q, x, k: losses.drift_microstep(ctx, p, e, q, x, k),
               in_shardings=(rep, rep, rep, sharding.batch_sharding(mesh), rep))
  loss, grads, new_q, metrics = fn(params, encoder, queues, x0, jax.random.PRNGKey(11))
  return jax.device_get((loss, grads, new_q, metrics))


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
def test_sharded_microstep_equals_single_device(arch, tiny_model_config, random_params):
  setup = _setup(arch, tiny_model_config, random_params)
  one = _run(arch, sharding.make_mesh((1, 1), jax.devices()[:1]), setup)
  eight = _run(arch, sharding.make_mesh((8, 1)), setup)
  loss1, grads1, q1, m1 = one
  loss8, grads8, q8, m8 = eight
  assert np.isfinite(loss1) and loss1 > 0
  # float32 sums split over 8 devices reorder the additions; 1e-5 is the bound.
  chex.assert_trees_all_close(loss8, loss1, rtol=1e-5, atol=1e-7)
  # Gradients: max |diff| <= 1e-5 of the largest gradient entry (at least 1e-5 absolute).
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads1))
  assert scale > 0
  chex.assert_trees_all_close(grads8, grads1, rtol=0, atol=1e-5 * max(scale, 1.0))
  # Whole queues (buffers to 1e-6; pointer and count, integers, therefore exactly).
  chex.assert_trees_all_close(q8, q1, rtol=0, atol=1e-6)
  for name in ("real", "gen"):
    assert int(q8[name].count) == int(q1[name].count) == 16   # 10 + 8 pushed, capacity 16
    assert int(q8[name].ptr) == int(q1[name].ptr) == 2        # wrapped
  keys = ("v_norm", "scale", "pos_weight_frac")
  chex.assert_trees_all_close({k: m8[k] for k in keys}, {k: m1[k] for k in keys},
                              rtol=1e-5, atol=1e-7)
