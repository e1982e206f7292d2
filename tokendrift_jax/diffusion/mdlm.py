"""MDLM: absorbing-state ("masked") diffusion with the SUBS parameterisation.

Forward process (MDLM ``Diffusion.q_xt`` / ``_forward_pass_diffusion``): every token of x0 is
independently replaced by the mask id with probability 1 − e^{−σ(t)} = (1 − ε) t.

SUBS parameterisation (``Diffusion._subs_parameterization``): the mask logit gets −∞, the
logits are log-softmax normalised, and at unmasked positions the distribution is the point
mass on the visible token ("carry-over unmasking").

Continuous-time NELBO per token (``_forward_pass_diffusion``, SUBS branch, T = 0):

  nelbo_l = −log p_θ(x0_l | xt) · σ'(t) / expm1(σ(t))    if xt_l is the mask, else 0.

−∞ is the references' ``neg_infinity = -1e6``: finite, so that p·log p and gradients stay
NaN-free, and exp(−1e6) is exactly 0 in float32 and float64.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp

from tokendrift_jax.diffusion import common
from tokendrift_jax.diffusion import sampling
from tokendrift_jax.diffusion import schedule

NEG_INF = -1e6

LogitsFn = common.LogitsFn


def ddpm_step(p_x0: jax.Array, x: jax.Array, t: jax.Array, s: jax.Array, u: jax.Array,
                   mask_id: int) -> jax.Array:
  """One MDLM ``_ddpm_caching_update`` step from time t to s < t.

  q(x_s)_v ∝ p_x0,v (t − s) for v ≠ mask and s for the mask (move chances t and s, as the
  reference's log-linear caching update uses); a draw replaces masked tokens only.

  Args:
    p_x0: float[B, L, V] SUBS probabilities at xt (0 at the mask id).
    x: int[B, L] current tokens.
    t, s: float scalars or [B] times, s < t.
    u: float[B, L, V] uniforms for the Gumbel draw.
    mask_id: the mask token id.

  Returns:
    int32[B, L].
  """
  # Trace-time contract: p_x0 and u [B, L, V], x [B, L], t and s scalars or [B].
  chex.assert_rank(p_x0, 3)
  chex.assert_equal_shape([p_x0, u])
  chex.assert_shape(x, p_x0.shape[:2])
  dtype = p_x0.dtype
  t = jnp.asarray(t, dtype)
  s = jnp.asarray(s, dtype)
  chex.assert_rank([t, s], {0, 1})
  chex.assert_equal_shape([t, s])
  if t.ndim:
    t, s = t[:, None, None], s[:, None, None]
  is_mask_col = jnp.arange(p_x0.shape[-1]) == mask_id
  q = jnp.where(is_mask_col, s, p_x0 * (t - s))
  proposal = sampling.gumbel_argmax(q, u)
  return jnp.where(x != mask_id, x, proposal).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class MDLMProcess(sampling.LoopProcess):
  """Absorbing-state diffusion of MDLM (hashable: usable as a static jit argument).

  Attributes:
    vocab_size: V, including the mask token (50258 for GPT-2 + mask).
    mask_id: id of the mask token; ``None`` means V − 1 (MDLM appends it to the tokenizer).
    eps: ε of the log-linear schedule.
    sampling_eps: lower end of the training-time interval [sampling_eps, 1].
    antithetic: stratify training times over the batch.
    time_conditioning: whether the backbone uses σ. Released MDLM does not; the
      ``ddpm_cache`` sampler reuses p_x0 only when it does not (as the reference does).
  """

  vocab_size: int
  mask_id: int | None = None
  eps: float = 1e-3
  sampling_eps: float = 1e-3
  antithetic: bool = True
  time_conditioning: bool = False

  name: ClassVar[str] = "mdlm"
  # The reference's noise removal: the argmax of one more forward.
  noise_removals: ClassVar[tuple[str, ...]] = ("greedy", "none")
  default_noise_removal: ClassVar[str] = "greedy"
  # float32 p_x0 and Gumbel noise, as the MDLM repository samples.
  default_float64: ClassVar[bool] = False

  @classmethod
  def for_model(cls, model_cfg, **kwargs) -> "MDLMProcess":
    """The backbone's mask id, and its time conditioning (the released MDLM feeds σ = 0)."""
    if model_cfg.mask_id is None:
      raise ValueError(f"diffusion.process='mdlm' needs a mask token, but the "
                       f"{type(model_cfg).__name__} backbone has none")
    return cls(vocab_size=model_cfg.vocab_size, mask_id=model_cfg.mask_id,
               time_conditioning=model_cfg.time_conditioned, **kwargs)

  def __post_init__(self):
    common.check_schedule(self.vocab_size, self.eps, self.sampling_eps)
    if self.mask_id is None:
      object.__setattr__(self, "mask_id", self.vocab_size - 1)
    if not 0 <= self.mask_id < self.vocab_size:
      raise ValueError(f"mask_id {self.mask_id} outside the vocabulary [0, {self.vocab_size})")

  # --- vocabulary ---------------------------------------------------------------------

  @property
  def text_vocab_size(self) -> int:
    """Ids a tokenizer (and clean data) may use: V − 1 when the mask is the last id, as
    MDLM appends it to the tokenizer; V when the mask is one of the tokenizer's ids."""
    return self.vocab_size - 1 if self.mask_id == self.vocab_size - 1 else self.vocab_size

  def prepare_tokenizer(self, tokenizer):
    """The tokenizer as MDLM uses it: unchanged (the mask id is ``len(tokenizer)``)."""
    return tokenizer

  # --- schedule -----------------------------------------------------------------------

  def sample_t(self, key: jax.Array, batch: int) -> jax.Array:
    """Training times, float32[batch] (MDLM ``_sample_t``)."""
    return schedule.sample_t(key, batch, sampling_eps=self.sampling_eps,
                             antithetic=self.antithetic)

  def sigma(self, t: jax.Array) -> jax.Array:
    """σ(t) in the dtype of t."""
    return schedule.sigma(t, self.eps)

  def model_sigma(self, t: jax.Array) -> jax.Array:
    """What the backbone is fed: σ(t) as float32[B] (the DiT zeroes it when not
    time-conditioned)."""
    return schedule.sigma(t, self.eps).astype(jnp.float32)

  def corruption_prob(self, t: jax.Array) -> jax.Array:
    """Move chance 1 − e^{−σ(t)} in the dtype of t."""
    return schedule.corruption_prob(t, self.eps)

  # --- forward process ----------------------------------------------------------------

  def corrupt(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
    """xt ~ q(xt | x0): each token masked with probability 1 − e^{−σ(t)}.

    Args:
      key: PRNG key.
      x0: int[B, L] clean tokens.
      t: float[B] times.

    Returns:
      int32[B, L].
    """
    common.check_tokens(x0, "x0")
    common.check_time(t, x0.shape[0])
    move = self.corruption_prob(t)[:, None]
    u = jax.random.uniform(key, x0.shape, dtype=move.dtype)
    return jnp.where(u < move, self.mask_id, x0).astype(jnp.int32)

  def prior(self, key: jax.Array, batch: int, length: int) -> jax.Array:
    """The t = 1 state: all masks, int32[batch, length] (``_sample_prior``); key unused."""
    del key
    return jnp.full((batch, length), self.mask_id, jnp.int32)

  # --- parameterisation ---------------------------------------------------------------

  def log_probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    """SUBS log p_θ(x0 | xt), float[B, L, V] (float32, or float64 for float64 logits).

    Masked positions: log-softmax of the logits with the mask logit pushed to −∞.
    Unmasked positions: 0 at the visible token, −∞ elsewhere (no gradient flows there).
    """
    common.check_tokens(xt, "xt")
    if logits.shape != (*xt.shape, self.vocab_size):
      raise ValueError(
          f"logits shape {logits.shape} does not match xt {xt.shape} and vocab {self.vocab_size}")
    dtype = common.compute_dtype(logits)
    vocab = jnp.arange(self.vocab_size)
    mask_bias = jnp.where(vocab == self.mask_id, NEG_INF, 0.0).astype(dtype)
    lp = jax.nn.log_softmax(logits.astype(dtype) + mask_bias, axis=-1)
    carry = jnp.where(vocab == xt[..., None], 0.0, NEG_INF).astype(dtype)
    unmasked = (xt != self.mask_id)[..., None]
    return jnp.where(unmasked, carry, lp)

  def probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    """p_θ(x0 | xt) = exp(SUBS log-probs); rows sum to 1, one-hot at unmasked positions."""
    return jnp.exp(self.log_probs(logits, xt))

  def predicted_positions(self, xt: jax.Array) -> jax.Array:
    """M_i: bool[B, L], True where the model predicts a token (masked positions)."""
    return xt == self.mask_id

  # --- loss ---------------------------------------------------------------------------

  def loss_per_token(self, log_probs: jax.Array, x0: jax.Array, xt: jax.Array,
                     t: jax.Array) -> jax.Array:
    """Continuous-time NELBO per token, float[B, L] (dtype of ``log_probs``).

    −log p_θ(x0 | xt) · σ'(t) / expm1(σ(t)) on masked positions, 0 elsewhere.
    """
    common.check_tokens(x0, "x0")
    common.check_tokens(xt, "xt")
    common.check_time(t, x0.shape[0])
    # Trace-time contract (not checked above): log_probs [B, L, V], xt like x0.
    chex.assert_equal_shape([x0, xt])
    chex.assert_shape(log_probs, (*x0.shape, self.vocab_size))
    dtype = common.compute_dtype(log_probs)
    t = t.astype(dtype)
    weight = schedule.dsigma(t, self.eps) / jnp.expm1(schedule.sigma(t, self.eps))
    log_p_x0 = jnp.take_along_axis(log_probs.astype(dtype), x0[..., None], axis=-1)[..., 0]
    nelbo = -log_p_x0 * weight[:, None]
    return jnp.where(self.predicted_positions(xt), nelbo, 0.0)

  def loss(self, logits_fn: LogitsFn, x0: jax.Array, key: jax.Array,
           valid: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One NELBO estimate (MDLM ``_loss``): draw t, corrupt, denoise, token-weighted mean.

    Randomness: ``k_t, k_x = jax.random.split(key)``; t = ``sample_t(k_t, B)``,
    xt = ``corrupt(k_x, x0, t)``.

    Args:
      logits_fn: denoiser (x int32[B, L], sigma float32[B]) -> logits float[B, L, V].
      x0: int[B, L] clean tokens.
      key: PRNG key.
      valid: optional [B, L] mask of tokens that count.

    Returns:
      (loss float32 scalar, metrics dict with ``loss``, ``nll_sum``, ``num_tokens``).
    """
    return common.nelbo_estimate(self, logits_fn, x0, key, valid)

  # --- sampling (the shared loop, MDLM ``_ddpm_caching_update``) ----------------------

  @property
  def has_cache(self) -> bool:
    return True

  def reuses_forward(self, cache: bool) -> bool:
    """``ddpm_cache``: an unchanged state reuses p_x0, unless the backbone sees σ(t) (the
    reference caches only a time-unconditioned MDLM)."""
    return bool(cache) and not self.time_conditioning

  def denoise_step(self, p_x0, x, t, s, u, last):
    """:func:`ddpm_step` from t to s (the noise removal is the loop's greedy argmax)."""
    del last
    return ddpm_step(p_x0, x, t, s, u, self.mask_id)


PROCESS = MDLMProcess
