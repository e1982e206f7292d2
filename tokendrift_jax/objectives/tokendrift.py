"""TokenDrift (Alg. 1): corrupt -> generator -> soft-token lift -> frozen encoder -> drift.

The auxiliary state is the two FIFO feature queues {"real", "gen"} (each [Q, m], replicated);
the frozen tree is the encoder ϕ, a copy of the initial checkpoint (rebuilt from it on
resume, never saved). The math of the drift, the queues, the lift and the features is in
:mod:`tokendrift_jax.drift`; this file puts one micro-step together.

Prompt-conditioned refinement: the forward process never corrupts the prompt (``keep``);
TokenDrift lifts only the predicted (masked) completion positions, so the prompt enters the
encoder as E[x0], exactly, with no gradient; h is the feature of prompt + soft completion,
u that of the real row, both pooled over every position (``DriftConfig.pool = "all"``, the
paper) or over the completion only (``"completion"``). Without a prompt the micro-step
computes exactly what it did before prompts existed (the same operations, in the same
order).

Padded rows (``ctx.prompt.pad_id``, :mod:`tokendrift_jax.train.prompt`): the generator and
the encoder get the rows' ``attention_mask``; the pads join the prompt's exclusions (never
corrupted when a prompt is kept, never lifted, never pooled into h or u, no base loss and
not counted in its mean), so a padded row gives the h, u, V and loss of the unpadded row.
Without padding (pad_id None) the micro-step is the one it was before padding existed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp

from tokendrift_jax import models
from tokendrift_jax.diffusion import metrics as diff_metrics
from tokendrift_jax.drift import features as feat_lib
from tokendrift_jax.drift import lift as lift_lib
from tokendrift_jax.drift import objective as obj_lib
from tokendrift_jax.drift import queue as queue_lib
from tokendrift_jax.objectives.base import Objective
from tokendrift_jax.train import losses
from tokendrift_jax.train import prompt as prompt_lib


def check_queues(queues) -> None:
  """Trace-time contract of the queues: "real" and "gen", buffers [Q, m] of one shape."""
  chex.assert_rank([queues["real"].buf, queues["gen"].buf], 2)
  chex.assert_equal_shape([queues["real"].buf, queues["gen"].buf])
  chex.assert_rank([queues["real"].ptr, queues["real"].count,
                    queues["gen"].ptr, queues["gen"].count], 0)


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
    real: bool [b, L] real (not padded) positions, the backbone's ``attention_mask``, or
      None for unpadded rows. With a prompt, ``keep`` then holds prompt ∪ pads.
  """
  x0: jax.Array
  keep: jax.Array | None
  t: jax.Array
  xt: jax.Array
  sigma: jax.Array
  predicted: jax.Array
  pooled: jax.Array | None
  real: jax.Array | None = None


jax.tree_util.register_dataclass(
    DriftDraw, data_fields=["x0", "keep", "t", "xt", "sigma", "predicted", "pooled", "real"],
    meta_fields=[])


def drift_draw(ctx: losses.StepContext, dcfg: obj_lib.DriftConfig, x0, keep, k_t, k_x,
               real=None) -> DriftDraw:
  """t ~ sample_t(k_t), xt ~ corrupt(k_x, x0, t[, keep]) and the masks the step uses
  (``real``: bool [b, L] real positions of padded rows, or None)."""
  process, b = ctx.process, x0.shape[0]
  if keep is None and dcfg.pool == "completion":
    raise ValueError("DriftConfig.pool='completion' pools the non-prompt positions: it "
                     "needs a prompt (StepContext.prompt)")
  # With a prompt the pads are kept like it (never corrupted, outside the SFT answer);
  # without one they may be corrupted: no query attends them and nothing reads them.
  keep = keep if keep is None else prompt_lib.kept_positions(keep, real)
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
    if dcfg.pool == "completion":
      pooled = jnp.logical_not(keep)
  if real is not None:
    # A pad is never lifted and never pooled (the completion pooling excludes it already).
    predicted = jnp.logical_and(predicted, real)
    pooled = real if pooled is None else pooled
  return DriftDraw(x0=x0, keep=keep, t=t, xt=xt, sigma=sigma, predicted=predicted,
                   pooled=pooled, real=real)


@dataclasses.dataclass(frozen=True)
class FrozenEncoder:
  """The frozen encoder ϕ of a micro-step: its embedding E, hidden-state map and σ."""
  table: jax.Array
  hidden: Any
  sigma: jax.Array


def drop_head(params, head_keys: tuple[str, ...]):
  """The frozen encoder's copy of ``params``: every leaf under the top-level ``head_keys``
  (the family's output layer, ``models.base.Family.head_keys``) replaced by a float32[0]
  placeholder, so the device does not hold weights that ϕ never reads (its features are
  block outputs, App. F). At 170M: the [768, 50258] output projection and its adaLN,
  0.155 GB; at 8B: LLaDA's 2.07 GB ``ff_out``. The placeholders keep the tree's structure,
  which ``models.merge`` needs; the encoder runs with ``head=False`` and never reads them.
  """
  if not head_keys:
    return params
  return {k: (jax.tree.map(lambda x: jnp.zeros((0,), jnp.float32), v) if k in head_keys
              else v) for k, v in params.items()}


def drop_head_shardings(param_shardings, head_keys: tuple[str, ...]):
  """Shardings of :func:`drop_head`'s tree: the placeholders replicated on the same mesh."""
  if not head_keys:
    return param_shardings
  rep = lambda s: jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec())
  return {k: (jax.tree.map(rep, v) if k in head_keys else v)
          for k, v in param_shardings.items()}


def frozen_encoder(ctx: losses.StepContext, dcfg: obj_lib.DriftConfig, encoder_params,
                   batch: int, *, features_only: bool = False) -> FrozenEncoder:
  """ϕ = the generator's network with ``encoder_params`` (stop-gradient), its E and [b] σ.

  ``features_only``: ``encoder_params`` went through :func:`drop_head` (the family declares
  ``head_keys``): the network is called with ``head=False``.
  """
  encoder = models.merge(ctx.graphdef, jax.lax.stop_gradient(encoder_params))
  head = {"head": False} if features_only else {}

  def encoder_hidden(embeds, s, **padding):
    # Only the last two block outputs feed the features (App. F); ``padding``: the
    # attention_mask of padded rows, when there is one.
    return encoder(None, s, embeds=embeds, return_hidden=2, **head, **padding)[1]

  return FrozenEncoder(table=encoder.embedding_table(), hidden=encoder_hidden,
                       sigma=feat_lib.encoder_sigma(batch, dcfg.encoder_sigma))


def clean_features(enc: FrozenEncoder, draw: DriftDraw) -> jax.Array:
  """u = ϕ(E[x0]) pooled over ``draw.pooled``: [b, 2d], stop-gradient."""
  return feat_lib.clean_features(enc.hidden, enc.table, draw.x0, enc.sigma, draw.pooled,
                                 draw.real)


def lift_embeddings(ctx: losses.StepContext, dcfg: obj_lib.DriftConfig, enc: FrozenEncoder,
                    draw: DriftDraw, log_probs):
  """The encoder input ẽ [b, L, d]: softmax(ℓ)·E at ``draw.predicted``, E[xt] elsewhere
  (= E[x0] at every prompt position, which is never corrupted)."""
  return lift_lib.soft_token_lift(draw.xt, draw.predicted, enc.table, logits=log_probs,
                                  mode=dcfg.lift, compute_dtype=ctx.compute_dtype)


def drift_loss_from_log_probs(ctx: losses.StepContext, dcfg: obj_lib.DriftConfig,
                              enc: FrozenEncoder, draw: DriftDraw, u, queues, log_probs):
  """The TokenDrift loss of ℓ = log p [b, L, V]: (loss, (new queues, metrics))."""
  process = ctx.process

  def feature_fn(lp):
    return feat_lib.encoder_features(enc.hidden, lift_embeddings(ctx, dcfg, enc, draw, lp),
                                     enc.sigma, draw.pooled, draw.real)

  base = None
  if dcfg.base_loss_weight > 0:
    if draw.keep is None:
      per_token = process.loss_per_token(log_probs, draw.x0, draw.xt, draw.t)
      # Unprompted padded rows: the mean is over real tokens (a pad has no loss).
      base, _ = diff_metrics.reduce_nelbo(per_token, draw.real)
    else:
      # The kept set holds the pads too: no loss there, and A_b counts real answers only.
      per_token = process.loss_per_token(log_probs, draw.x0, draw.xt, draw.t, keep=draw.keep)
      base, _ = diff_metrics.reduce_nelbo(per_token)
  loss, aux = obj_lib.tokendrift_loss(feature_fn, log_probs, u, queues["real"],
                                      queues["gen"], dcfg, predicted_mask=draw.predicted,
                                      base_loss=base, mesh=ctx.mesh)
  metrics = dict(aux.metrics)
  if base is not None:
    metrics["loss_diffusion"] = jax.lax.stop_gradient(base)
  return loss, ({"real": aux.q_real, "gen": aux.q_gen}, metrics)


def drift_loss_from_logits(ctx: losses.StepContext, dcfg: obj_lib.DriftConfig,
                           enc: FrozenEncoder, draw: DriftDraw, u, queues, logits):
  """The TokenDrift loss of the generator's logits [b, L, V] (see drift_loss_from_log_probs)."""
  # ℓ of the paper: log-probabilities after the backbone's parameterisation (SUBS for
  # MDLM, log-softmax for DUO and LLaDA); softmax(ℓ) is the p that the lift embeds.
  log_probs = ctx.process.log_probs(logits, draw.xt)
  return drift_loss_from_log_probs(ctx, dcfg, enc, draw, u, queues, log_probs)


def drift_microstep(ctx: losses.StepContext, dcfg: obj_lib.DriftConfig, params, encoder_params,
                    queues, batch, key, *, features_only: bool = False):
  """One TokenDrift micro-step: corrupt -> generator -> lift -> encoder -> gather -> drift.

  Args:
    params: generator parameters (differentiated).
    encoder_params: the frozen encoder (a copy of the initial checkpoint; constant), its
      output layer dropped (:func:`drop_head`) when ``features_only``.
    queues: {"real": FeatureQueue, "gen": FeatureQueue} before this micro-step.
    batch: int32 [b, L] clean global micro-batch ([b, L + 1] with per-row prompt lengths,
      ``ctx.prompt.mode == "data"``), padded with ``ctx.prompt.pad_id`` when it is set.
    key: PRNG key of this micro-step.

  Returns:
    (loss, grads, new_queues, metrics) with metrics holding the drift diagnostics
    (per-temperature ‖V‖, s(τ), fraction of weight on positives, queue fill), the
    fraction of predicted positions and, with a prompt, the mean number of prompt,
    predicted and pooled positions per row.
  """
  losses.check_batch(batch)
  check_queues(queues)
  x0, keep = prompt_lib.split_prompt(ctx.prompt, batch)
  k_t, k_x, k_drop = jax.random.split(key, 3)
  x0 = ctx.constrain_batch(x0)
  real = prompt_lib.real_positions(ctx.prompt, x0)
  draw = drift_draw(ctx, dcfg, x0, keep, k_t, k_x, real)
  enc = frozen_encoder(ctx, dcfg, encoder_params, x0.shape[0], features_only=features_only)
  u = clean_features(enc, draw)

  def loss_fn(p):
    logits = losses.generator(ctx, p, k_drop, draw.real)(draw.xt, draw.sigma)
    return drift_loss_from_logits(ctx, dcfg, enc, draw, u, queues, logits)

  (loss, (new_queues, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  metrics["loss"] = loss
  metrics["masked_frac"] = jnp.mean(draw.predicted.astype(jnp.float32))
  if keep is not None:
    metrics["prompt_per_row"] = losses.row_mean_count(keep)
    metrics["predicted_per_row"] = losses.row_mean_count(draw.predicted)
    metrics["pooled_per_row"] = (jnp.asarray(x0.shape[1], jnp.float32) if draw.pooled is None
                                 else losses.row_mean_count(draw.pooled))
  if real is not None:
    metrics["real_per_row"] = losses.row_mean_count(real)
  return loss, grads, new_queues, metrics


def drift_per_microstep(n: int, m: int, queue_size: int, n_temperatures: int) -> int:
  """4·N·m·(N+Q)·(1+T): distances to and weighted sums over both reference sets."""
  return 4 * n * m * (n + queue_size) * (1 + n_temperatures)


def drift_config(config) -> obj_lib.DriftConfig:
  """``config.drift`` as a DriftConfig (ValueError naming the section)."""
  d = config.drift.to_dict()
  d["temperatures"] = tuple(d["temperatures"])
  if isinstance(d.get("fixed_scale"), list):
    d["fixed_scale"] = tuple(d["fixed_scale"])
  try:
    return obj_lib.DriftConfig(**d)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config.drift: {e}") from e


@dataclasses.dataclass(frozen=True)
class TokenDrift(Objective):
  """The TokenDrift objective of ``config`` for features of width ``feature_dim`` (2d)."""
  config: obj_lib.DriftConfig
  feature_dim: int
  head_keys: tuple[str, ...] = ()   # the family's output layer, not held by the encoder
  name = "drift"
  label = "TokenDrift"
  section = "drift"
  frozen_kind = "encoder"
  needs_init_checkpoint = True

  @classmethod
  def from_config(cls, config, model_cfg, process) -> "TokenDrift":
    del process
    dcfg = drift_config(config)
    prompted = "prompt" in config and str(config.prompt.get("mode", "none")) != "none"
    if dcfg.pool == "completion" and not prompted:
      raise ValueError("config.drift.pool='completion' pools the non-prompt positions: it "
                       "needs a prompt (config.prompt.mode 'prefix' or 'data')")
    return cls(config=dcfg, feature_dim=int(model_cfg.feature_dim),
               head_keys=tuple(models.family_of(model_cfg).head_keys))

  def init_aux(self, params):
    del params
    return {"real": queue_lib.init_queue(self.config.queue_size, self.feature_dim),
            "gen": queue_lib.init_queue(self.config.queue_size, self.feature_dim)}

  def frozen(self, params):
    # ϕ is the generator's network at the initial checkpoint, less its output layer.
    return drop_head(params, self.head_keys)

  def frozen_shardings(self, param_shardings):
    return drop_head_shardings(param_shardings, self.head_keys)

  def microstep(self, ctx, params, frozen, aux, batch, key):
    return drift_microstep(ctx, self.config, params, frozen, aux, batch, key,
                           features_only=bool(self.head_keys))

  def end_step(self, aux, params, step):
    del params, step
    # Queue fill after the last push of the step (the per-micro values are pre-push).
    return aux, {"queue_fill_real": queue_lib.fill_fraction(aux["real"]),
                 "queue_fill_gen": queue_lib.fill_fraction(aux["gen"])}

  @property
  def queue_size(self) -> int:
    return self.config.queue_size

  def benchmark_fields(self) -> dict:
    return {"queue_size": self.queue_size}

  @property
  def metric_temperatures(self) -> tuple[float, ...]:
    return self.config.temperatures

  def extra_flops(self, fm, cfg, *, length, micro_batch, n_micro, remat_policy):
    """The encoder's clean and soft passes, the lift and the drift (perf/flops.py's terms)."""
    seqs = micro_batch * n_micro
    enc_fwd = fm.forward(length, output_layer=False)
    lift = fm.lift(length)
    terms = {
        "encoder_clean_fwd": seqs * enc_fwd,
        "encoder_soft_fwd": seqs * (enc_fwd - fm.shared_forward(length)),
        "encoder_soft_bwd": seqs * fm.input_backward(length),
        "lift_fwd": seqs * lift,
        "lift_bwd": seqs * lift,
        "drift": n_micro * drift_per_microstep(micro_batch, cfg.feature_dim,
                                               self.config.queue_size,
                                               len(self.config.temperatures)),
    }
    return terms, seqs * fm.recompute(length, remat_policy, weight_grads=False)

  def resume_fields(self):
    return {"drift.queue_size": self.config.queue_size}


OBJECTIVE = TokenDrift
