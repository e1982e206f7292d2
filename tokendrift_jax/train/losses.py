"""Per-micro-batch losses and gradients: continuation and TokenDrift (Alg. 1).

A micro-step sees one global micro-batch x0 [b, L] (sharded over the mesh's batch axes),
the current parameters and, for TokenDrift, the frozen encoder and the queues as they
stand. It returns (loss, grads, new queues, metrics); :mod:`tokendrift_jax.train.step`
accumulates the grads over the micro-batches of a step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import metrics as diff_metrics
from tokendrift_jax.drift import features as feat_lib
from tokendrift_jax.drift import lift as lift_lib
from tokendrift_jax.drift import objective as obj_lib


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Static pieces of a step (hashable closures for jit).

  Attributes:
    graphdef: NNX graph of the generator (and of the frozen encoder, the same network),
      a backbone of any registered family (:mod:`tokendrift_jax.models`).
    process: the diffusion process (MDLM or DUO) of the backbone.
    drift: TokenDrift hyper-parameters, or None for continuation training.
    mesh: the (data, fsdp) mesh, or None for an unsharded step.
    dropout: apply the backbone's dropout in the generator (training mode).
    compute_dtype: dtype of the soft-token lift product (the model's compute dtype).
  """
  graphdef: Any
  process: Any
  drift: obj_lib.DriftConfig | None
  mesh: Mesh | None
  dropout: bool = True
  compute_dtype: Any = jnp.float32

  def constrain_batch(self, x):
    if self.mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, sharding.batch_sharding(self.mesh, x.ndim))


def generator(ctx: StepContext, params, dropout_key):
  """The generator as a denoiser ``(x, sigma) -> logits`` (dropout on in training)."""
  model = models.merge(ctx.graphdef, params)
  key = dropout_key if ctx.dropout else None
  return lambda x, sigma: model(x, sigma, dropout_rng=key)


def _check_batch(x0) -> None:
  """Trace-time contract of a micro-batch: int32 [b, L] token ids."""
  chex.assert_rank(x0, 2)
  chex.assert_type(x0, jnp.int32)


def _check_queues(queues) -> None:
  """Trace-time contract of the queues: "real" and "gen", buffers [Q, m] of one shape."""
  chex.assert_rank([queues["real"].buf, queues["gen"].buf], 2)
  chex.assert_equal_shape([queues["real"].buf, queues["gen"].buf])
  chex.assert_rank([queues["real"].ptr, queues["real"].count,
                    queues["gen"].ptr, queues["gen"].count], 0)


def continuation_microstep(ctx: StepContext, params, x0, key):
  """The backbone's own diffusion loss (MDLM NELBO / DUO ELBO) and its gradient."""
  _check_batch(x0)
  k_loss, k_drop = jax.random.split(key)
  x0 = ctx.constrain_batch(x0)

  def loss_fn(p):
    return ctx.process.loss(generator(ctx, p, k_drop), x0, k_loss)

  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, None, {"loss": loss}


def drift_microstep(ctx: StepContext, params, encoder_params, queues, x0, key):
  """One TokenDrift micro-step: corrupt -> generator -> lift -> encoder -> gather -> drift.

  Args:
    params: generator parameters (differentiated).
    encoder_params: the frozen encoder (a copy of the initial checkpoint; constant).
    queues: {"real": FeatureQueue, "gen": FeatureQueue} before this micro-step.
    x0: int32 [b, L] clean global micro-batch.
    key: PRNG key of this micro-step.

  Returns:
    (loss, grads, new_queues, metrics) with metrics holding the drift diagnostics
    (per-temperature ‖V‖, s(τ), fraction of weight on positives, queue fill).
  """
  _check_batch(x0)
  _check_queues(queues)
  dcfg, process = ctx.drift, ctx.process
  k_t, k_x, k_drop = jax.random.split(key, 3)
  x0 = ctx.constrain_batch(x0)
  b = x0.shape[0]
  t = process.sample_t(k_t, b)
  xt = ctx.constrain_batch(process.corrupt(k_x, x0, t))
  sigma = process.model_sigma(t)
  predicted = process.predicted_positions(xt)

  encoder = models.merge(ctx.graphdef, jax.lax.stop_gradient(encoder_params))
  table = encoder.embedding_table()
  enc_sigma = feat_lib.encoder_sigma(b, dcfg.encoder_sigma)

  def encoder_hidden(embeds, s):
    # Only the last two block outputs feed the features (App. F).
    return encoder(None, s, embeds=embeds, return_hidden=2)[1]

  u = feat_lib.clean_features(encoder_hidden, table, x0, enc_sigma)

  def feature_fn(log_probs):
    embeds = lift_lib.soft_token_lift(xt, predicted, table, logits=log_probs, mode=dcfg.lift,
                                      compute_dtype=ctx.compute_dtype)
    return feat_lib.encoder_features(encoder_hidden, embeds, enc_sigma)

  def loss_fn(p):
    logits = generator(ctx, p, k_drop)(xt, sigma)
    # ℓ of the paper: log-probabilities after the backbone's parameterisation (SUBS for
    # MDLM, log-softmax for DUO); softmax(ℓ) is the p that the lift embeds.
    log_probs = process.log_probs(logits, xt)
    base = None
    if dcfg.base_loss_weight > 0:
      base, _ = diff_metrics.reduce_nelbo(process.loss_per_token(log_probs, x0, xt, t))
    loss, aux = obj_lib.tokendrift_loss(feature_fn, log_probs, u, queues["real"],
                                        queues["gen"], dcfg, predicted_mask=predicted,
                                        base_loss=base, mesh=ctx.mesh)
    metrics = dict(aux.metrics)
    if base is not None:
      metrics["loss_diffusion"] = jax.lax.stop_gradient(base)
    return loss, ({"real": aux.q_real, "gen": aux.q_gen}, metrics)

  (loss, (new_queues, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  metrics["loss"] = loss
  metrics["masked_frac"] = jnp.mean(predicted.astype(jnp.float32))
  return loss, grads, new_queues, metrics
