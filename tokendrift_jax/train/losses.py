"""Per-micro-batch losses and gradients: continuation and TokenDrift (Alg. 1).

A micro-step sees one global micro-batch x0 [b, L] (sharded over the mesh's batch axes),
the current parameters and, for TokenDrift, the frozen encoder and the queues as they
stand. It returns (loss, grads, new queues, metrics); :mod:`tokendrift_jax.train.step`
accumulates the grads over the micro-batches of a step.

Prompt-conditioned refinement (``StepContext.prompt``, :mod:`tokendrift_jax.train.prompt`):
the micro-batch carries a prompt (a fixed prefix, or per-row lengths in an extra column)
that the forward process never corrupts (``keep``). Continuation then trains the process's
loss with ``keep`` (LLaDA's SFT loss). TokenDrift lifts only the predicted (masked)
completion positions, so the prompt enters the encoder as E[x0], exactly, with no gradient;
h is the feature of prompt + soft completion, u that of the real row, both pooled over
every position (``DriftConfig.pool = "all"``, the paper) or over the completion only
(``"completion"``). Without a prompt both micro-steps compute exactly what they did
before prompts existed (the same operations, in the same order).
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
from tokendrift_jax.train import prompt as prompt_lib


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
    prompt: where each row's never-corrupted prompt is (default: none, unconditional).
  """
  graphdef: Any
  process: Any
  drift: obj_lib.DriftConfig | None
  mesh: Mesh | None
  dropout: bool = True
  compute_dtype: Any = jnp.float32
  prompt: prompt_lib.PromptSpec = prompt_lib.PromptSpec()

  def constrain_batch(self, x):
    return sharding.constrain_batch(x, self.mesh)


def generator(ctx: StepContext, params, dropout_key):
  """The generator as a denoiser ``(x, sigma) -> logits`` (dropout on in training)."""
  model = models.merge(ctx.graphdef, params)
  key = dropout_key if ctx.dropout else None
  return lambda x, sigma: model(x, sigma, dropout_rng=key)


def _check_batch(batch) -> None:
  """Trace-time contract of a micro-batch: int32 [b, L] token ids (+ the prompt column)."""
  chex.assert_rank(batch, 2)
  chex.assert_type(batch, jnp.int32)


def _check_queues(queues) -> None:
  """Trace-time contract of the queues: "real" and "gen", buffers [Q, m] of one shape."""
  chex.assert_rank([queues["real"].buf, queues["gen"].buf], 2)
  chex.assert_equal_shape([queues["real"].buf, queues["gen"].buf])
  chex.assert_rank([queues["real"].ptr, queues["real"].count,
                    queues["gen"].ptr, queues["gen"].count], 0)


def _row_mean_count(mask: jax.Array) -> jax.Array:
  """Mean over rows of the number of True positions of a bool [b, L] mask (float32 [])."""
  return jnp.mean(jnp.sum(mask, axis=1, dtype=jnp.float32))


def continuation_microstep(ctx: StepContext, params, batch, key):
  """The backbone's own diffusion loss and its gradient: MDLM NELBO / DUO ELBO / LLaDA's
  pretraining loss, or with a prompt (``ctx.prompt``) the loss with the prompt kept
  (LLaDA's SFT loss: prompt never masked, loss over the response)."""
  _check_batch(batch)
  x0, keep = prompt_lib.split_prompt(ctx.prompt, batch)
  k_loss, k_drop = jax.random.split(key)
  x0 = ctx.constrain_batch(x0)

  def loss_fn(p):
    if keep is None:
      return ctx.process.loss(generator(ctx, p, k_drop), x0, k_loss)
    return ctx.process.loss(generator(ctx, p, k_drop), x0, k_loss, keep=keep)

  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  metrics = {"loss": loss}
  if keep is not None:
    metrics["prompt_per_row"] = _row_mean_count(keep)
  return loss, grads, None, metrics


@dataclasses.dataclass(frozen=True)
class DriftDraw:
  """The corrupted micro-batch of one TokenDrift micro-step (a pytree of arrays).

  Attributes:
    x0: int32 [b, L] clean rows.
    keep: bool [b, L] prompt positions (never corrupted), or None without a prompt.
    t: float [b] times; xt: int32 [b, L] corrupted rows; sigma: float [b] generator σ.
    predicted: bool [b, L], the positions the generator predicts and the lift embeds
      (M_i of the process; never a prompt position).
    pooled: bool [b, L] positions averaged into h and u, or None for all of them.
  """
  x0: jax.Array
  keep: jax.Array | None
  t: jax.Array
  xt: jax.Array
  sigma: jax.Array
  predicted: jax.Array
  pooled: jax.Array | None


jax.tree_util.register_dataclass(
    DriftDraw, data_fields=["x0", "keep", "t", "xt", "sigma", "predicted", "pooled"],
    meta_fields=[])


def drift_draw(ctx: StepContext, x0, keep, k_t, k_x) -> DriftDraw:
  """t ~ sample_t(k_t), xt ~ corrupt(k_x, x0, t[, keep]) and the masks the step uses."""
  process, b = ctx.process, x0.shape[0]
  if keep is None and ctx.drift.pool == "completion":
    raise ValueError("DriftConfig.pool='completion' pools the non-prompt positions: it "
                     "needs a prompt (StepContext.prompt)")
  t = process.sample_t(k_t, b)
  if keep is None:
    xt = ctx.constrain_batch(process.corrupt(k_x, x0, t))
  else:
    xt = ctx.constrain_batch(process.corrupt(k_x, x0, t, keep=keep))
  sigma = process.model_sigma(t)
  predicted = process.predicted_positions(xt)
  pooled = None
  if keep is not None:
    # The lift acts on the completion only, whatever the process predicts.
    predicted = jnp.logical_and(predicted, jnp.logical_not(keep))
    if ctx.drift.pool == "completion":
      pooled = jnp.logical_not(keep)
  return DriftDraw(x0=x0, keep=keep, t=t, xt=xt, sigma=sigma, predicted=predicted,
                   pooled=pooled)


@dataclasses.dataclass(frozen=True)
class FrozenEncoder:
  """The frozen encoder ϕ of a micro-step: its embedding E, hidden-state map and σ."""
  table: jax.Array
  hidden: Any
  sigma: jax.Array


def frozen_encoder(ctx: StepContext, encoder_params, batch: int) -> FrozenEncoder:
  """ϕ = the generator's network with ``encoder_params`` (stop-gradient), its E and [b] σ."""
  encoder = models.merge(ctx.graphdef, jax.lax.stop_gradient(encoder_params))

  def encoder_hidden(embeds, s):
    # Only the last two block outputs feed the features (App. F).
    return encoder(None, s, embeds=embeds, return_hidden=2)[1]

  return FrozenEncoder(table=encoder.embedding_table(), hidden=encoder_hidden,
                       sigma=feat_lib.encoder_sigma(batch, ctx.drift.encoder_sigma))


def clean_features(enc: FrozenEncoder, draw: DriftDraw) -> jax.Array:
  """u = ϕ(E[x0]) pooled over ``draw.pooled``: [b, 2d], stop-gradient."""
  return feat_lib.clean_features(enc.hidden, enc.table, draw.x0, enc.sigma, draw.pooled)


def lift_embeddings(ctx: StepContext, enc: FrozenEncoder, draw: DriftDraw, log_probs):
  """The encoder input ẽ [b, L, d]: softmax(ℓ)·E at ``draw.predicted``, E[xt] elsewhere
  (= E[x0] at every prompt position, which is never corrupted)."""
  return lift_lib.soft_token_lift(draw.xt, draw.predicted, enc.table, logits=log_probs,
                                  mode=ctx.drift.lift, compute_dtype=ctx.compute_dtype)


def drift_loss_from_log_probs(ctx: StepContext, enc: FrozenEncoder, draw: DriftDraw, u,
                              queues, log_probs):
  """The TokenDrift loss of ℓ = log p [b, L, V]: (loss, (new queues, metrics))."""
  dcfg, process = ctx.drift, ctx.process

  def feature_fn(lp):
    return feat_lib.encoder_features(enc.hidden, lift_embeddings(ctx, enc, draw, lp),
                                     enc.sigma, draw.pooled)

  base = None
  if dcfg.base_loss_weight > 0:
    if draw.keep is None:
      per_token = process.loss_per_token(log_probs, draw.x0, draw.xt, draw.t)
    else:
      per_token = process.loss_per_token(log_probs, draw.x0, draw.xt, draw.t, keep=draw.keep)
    base, _ = diff_metrics.reduce_nelbo(per_token)
  loss, aux = obj_lib.tokendrift_loss(feature_fn, log_probs, u, queues["real"],
                                      queues["gen"], dcfg, predicted_mask=draw.predicted,
                                      base_loss=base, mesh=ctx.mesh)
  metrics = dict(aux.metrics)
  if base is not None:
    metrics["loss_diffusion"] = jax.lax.stop_gradient(base)
  return loss, ({"real": aux.q_real, "gen": aux.q_gen}, metrics)


def drift_loss_from_logits(ctx: StepContext, enc: FrozenEncoder, draw: DriftDraw, u, queues,
                           logits):
  """The TokenDrift loss of the generator's logits [b, L, V] (see drift_loss_from_log_probs)."""
  # ℓ of the paper: log-probabilities after the backbone's parameterisation (SUBS for
  # MDLM, log-softmax for DUO and LLaDA); softmax(ℓ) is the p that the lift embeds.
  log_probs = ctx.process.log_probs(logits, draw.xt)
  return drift_loss_from_log_probs(ctx, enc, draw, u, queues, log_probs)


def drift_microstep(ctx: StepContext, params, encoder_params, queues, batch, key):
  """One TokenDrift micro-step: corrupt -> generator -> lift -> encoder -> gather -> drift.

  Args:
    params: generator parameters (differentiated).
    encoder_params: the frozen encoder (a copy of the initial checkpoint; constant).
    queues: {"real": FeatureQueue, "gen": FeatureQueue} before this micro-step.
    batch: int32 [b, L] clean global micro-batch ([b, L + 1] with per-row prompt lengths,
      ``ctx.prompt.mode == "data"``).
    key: PRNG key of this micro-step.

  Returns:
    (loss, grads, new_queues, metrics) with metrics holding the drift diagnostics
    (per-temperature ‖V‖, s(τ), fraction of weight on positives, queue fill), the
    fraction of predicted positions and, with a prompt, the mean number of prompt,
    predicted and pooled positions per row.
  """
  _check_batch(batch)
  _check_queues(queues)
  x0, keep = prompt_lib.split_prompt(ctx.prompt, batch)
  k_t, k_x, k_drop = jax.random.split(key, 3)
  x0 = ctx.constrain_batch(x0)
  draw = drift_draw(ctx, x0, keep, k_t, k_x)
  enc = frozen_encoder(ctx, encoder_params, x0.shape[0])
  u = clean_features(enc, draw)

  def loss_fn(p):
    logits = generator(ctx, p, k_drop)(draw.xt, draw.sigma)
    return drift_loss_from_logits(ctx, enc, draw, u, queues, logits)

  (loss, (new_queues, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  metrics["loss"] = loss
  metrics["masked_frac"] = jnp.mean(draw.predicted.astype(jnp.float32))
  if keep is not None:
    metrics["prompt_per_row"] = _row_mean_count(keep)
    metrics["predicted_per_row"] = _row_mean_count(draw.predicted)
    metrics["pooled_per_row"] = (jnp.asarray(x0.shape[1], jnp.float32) if draw.pooled is None
                                 else _row_mean_count(draw.pooled))
  return loss, grads, new_queues, metrics
