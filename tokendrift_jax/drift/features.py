"""Sequence features from a frozen encoder (TokenDrift Sec. 3.1, App. F "Feature encoder").

  h = normalize([ (1/T) Σ_t H_t^{(L−1)}, (1/T) Σ_t H_t^{(L)} ]) ∈ R^{2d},

with H^{(L−1)}, H^{(L)} the outputs of the penultimate and final blocks, the mean over all T
positions, and normalize the L2 normalisation. h uses the soft-lifted generated sequence,
u = the same map on the clean x0 (``E[x0]``).

The encoder is any callable ``encoder_hidden(embeds [B, L, d], sigma [B]) -> list of
[B, L, d]`` (one entry per block, e.g. ``DiT(..., embeds=..., return_hidden=True)[1]`` of a
frozen copy of the initial checkpoint whose parameters are closed-over constants, so it gets
no gradient and no optimizer state).

Pooled positions (``POOLS``, ``DriftConfig.pool``): "all" (the paper: every position) or
"completion" (prompt-conditioned refinement: only the non-prompt positions, the same ones
for h and u), given as a bool [B, L] ``positions`` mask:

  mean_t∈S_i H_t = Σ_{t∈S_i} H_t / |S_i|,   S_i = {t : positions[i, t]}, |S_i| ≥ 1.

Padded rows (the backbone contract's ``attention_mask`` bool [B, L], True = real token):
the encoder gets the mask (no position attends a pad) and S_i is restricted to the real
positions (S_i ∩ real_i, or real_i when no ``positions`` are given), the same mechanism
as the completion pooling; so a padded row's feature is the unpadded row's.

Encoder σ: ``DEFAULT_ENCODER_SIGMA = 0.0``. MDLM is not time-conditioned (σ is ignored).
DUO is; σ = −log α_t = 0 means "t = 0, clean input", which is what both the model-completed
sequence and x0 stand for. It is a config field (``DriftConfig.encoder_sigma``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp

DEFAULT_ENCODER_SIGMA = 0.0
POOLS = ("all", "completion")

# (embeds [B, L, d], sigma [B]) -> block outputs; with padding also the keyword
# attention_mask (bool [B, L]).
EncoderHidden = Callable[..., Sequence[jax.Array]]


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(‖x‖₂, eps) along the last axis (the eps only guards an all-zero vector)."""
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, jnp.asarray(eps * eps, x.dtype)))


def _position_mean(h: jax.Array, positions: jax.Array | None, dtype) -> jax.Array:
  """[B, L, d] -> [B, d]: the mean over all positions, or over ``positions`` (bool [B, L])."""
  if positions is None:
    return jnp.mean(h, axis=1, dtype=dtype)
  total = jnp.sum(jnp.where(positions[..., None], h, jnp.zeros((), h.dtype)), axis=1,
                  dtype=dtype)
  return total / jnp.sum(positions, axis=1, keepdims=True, dtype=dtype)


def pool_features(hidden_states: Sequence[jax.Array],
                  positions: jax.Array | None = None) -> jax.Array:
  """[B, 2d] float (≥ float32) unit vectors from per-block hidden states (last two used).

  ``positions``: optional bool [B, L], the positions averaged (default all); each row
  needs at least one (an empty row would divide by zero: the callers' prompts leave at
  least one completion position).
  """
  if len(hidden_states) < 2:
    raise ValueError(f"pool_features needs the outputs of at least 2 blocks, got "
                     f"{len(hidden_states)}")
  pen, last = hidden_states[-2], hidden_states[-1]
  if pen.ndim != 3 or pen.shape != last.shape:
    raise ValueError(f"the last two hidden states must both be [B, L, d], got {pen.shape} "
                     f"and {last.shape}")
  if positions is not None and (positions.shape != pen.shape[:2]
                                or positions.dtype != jnp.bool_):
    raise ValueError(f"positions must be bool [B, L] = {pen.shape[:2]}, got "
                     f"{positions.dtype} {positions.shape}")
  dtype = jnp.promote_types(last.dtype, jnp.float32)
  # Accumulate the position means in float32 without materialising float32 copies of H.
  pooled = jnp.concatenate([_position_mean(pen, positions, dtype),
                            _position_mean(last, positions, dtype)], axis=-1)
  chex.assert_rank(pooled, 2)  # [B, 2d]
  return l2_normalize(pooled)


def real_pool(positions: jax.Array | None, attention_mask: jax.Array | None
              ) -> jax.Array | None:
  """The pooled positions of a padded batch: ``positions`` ∩ the real positions (bool
  [B, L]); either alone when the other is None."""
  if attention_mask is None:
    return positions
  return attention_mask if positions is None else jnp.logical_and(positions, attention_mask)


def encoder_features(encoder_hidden: EncoderHidden, embeds: jax.Array, sigma: jax.Array,
                     positions: jax.Array | None = None,
                     attention_mask: jax.Array | None = None) -> jax.Array:
  """h = pool(encoder(embeds, sigma)): [B, L, d] embeddings, [B] sigma -> [B, 2d]
  (``positions``: the pooled positions, see :func:`pool_features`; ``attention_mask``:
  bool [B, L] real positions of padded rows, given to the encoder and pooled over only)."""
  if embeds.ndim != 3:
    raise ValueError(f"embeds must be [B, L, d], got shape {embeds.shape}")
  if sigma.shape != embeds.shape[:1]:
    raise ValueError(f"sigma must be [B] = {embeds.shape[:1]}, got {sigma.shape}")
  if attention_mask is None:
    return pool_features(encoder_hidden(embeds, sigma), positions)
  if attention_mask.shape != embeds.shape[:2] or attention_mask.dtype != jnp.bool_:
    raise ValueError(f"attention_mask must be bool [B, L] = {list(embeds.shape[:2])}, got "
                     f"{attention_mask.dtype}{list(attention_mask.shape)}")
  hidden = encoder_hidden(embeds, sigma, attention_mask=attention_mask)
  return pool_features(hidden, real_pool(positions, attention_mask))


def clean_features(encoder_hidden: EncoderHidden, embedding: jax.Array, input_ids: jax.Array,
                   sigma: jax.Array, positions: jax.Array | None = None,
                   attention_mask: jax.Array | None = None) -> jax.Array:
  """u = pool(encoder(E[x0], sigma)), stop-gradient: int [B, L] ids -> [B, 2d]
  (``positions``, ``attention_mask``: see :func:`encoder_features`)."""
  chex.assert_rank(embedding, 2)
  chex.assert_rank(input_ids, 2)
  chex.assert_type(input_ids, int)
  table = jax.lax.stop_gradient(embedding)
  embeds = jnp.take(table, input_ids, axis=0)
  return jax.lax.stop_gradient(encoder_features(encoder_hidden, embeds, sigma, positions,
                                                attention_mask))


def encoder_sigma(batch: int, value: float = DEFAULT_ENCODER_SIGMA,
                  dtype=jnp.float32) -> jax.Array:
  """The [B] sigma fed to the frozen encoder (constant ``value``)."""
  return jnp.full((batch,), value, dtype=dtype)
