"""The PyTorch eager port of the benchmark (perf/torch_step.py) computes the JAX step's loss.

Tiny DiT (2 blocks, V = 1024), random non-zero weights, no dropout, float32: given the JAX
step's own draw (t, xt), the port's loss and pre-clipping gradient norm equal the JAX step's
metrics within 1e-5 relative, for continuation and TokenDrift.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from configs import mdlm_drift  # pylint: disable=wrong-import-position
from tokendrift_jax.perf import benchmark as bench  # pylint: disable=wrong-import-position
from tokendrift_jax.perf import torch_step  # pylint: disable=wrong-import-position


def _jax_draw(setup, tokens):
  """(t, xt) of the step's first micro-step, drawn as the objective draws them."""
  parts = setup.parts
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(int(setup.config.seed)), 0), 0)
  if setup.config.objective == "drift":
    k_t, k_x, _ = jax.random.split(key, 3)
  else:
    k_loss, _ = jax.random.split(key)
    k_t, k_x = jax.random.split(k_loss)
  t = parts.process.sample_t(k_t, tokens.shape[0])
  xt = parts.process.corrupt(k_x, jax.numpy.asarray(tokens), t)
  return np.asarray(t), np.asarray(xt)


# The port is a benchmark's comparator, not part of training: its continuation step (the
# shared DiT, loss, AdamW and EMA path) is checked by default, TokenDrift's (lift, encoder,
# drift field, queues; 30 s) under --runslow.
@pytest.mark.parametrize("objective", ["continuation",
                                       pytest.param("drift", marks=pytest.mark.slow)])
def test_torch_port_loss_equals_jax_step(objective):
  config = bench.apply_size(mdlm_drift.get_config(), "tiny", 16)
  config.model.dropout = 0.0
  config.model.dtype = "float32"
  c = bench.case_config(config, objective=objective, per_device_batch=2)
  setup = bench.build_step(c, seed=3)
  state, batch, frozen = setup.make_args()
  tokens = np.asarray(batch)
  _, metrics = setup.fn(state, batch, frozen)
  port = torch_step.TorchStep(c, setup.model_cfg, bench.random_params(setup.model_cfg, 3))
  draw = _jax_draw(setup, tokens)
  assert (draw[1] == c.model.vocab_size - 1).any()  # some positions masked
  loss = port(tokens, draw=draw)
  want = float(metrics["loss"])
  assert want > 0
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(port.grad_norm, float(metrics["grad_norm"]), rtol=1e-5)
  # The port's own step runs too (its draw, the update, the queues).
  assert np.isfinite(port(tokens))
  if objective == "drift":
    n = 2 * tokens.shape[0]  # two steps' pushes
    assert port.counts == {"real": n, "gen": n}
