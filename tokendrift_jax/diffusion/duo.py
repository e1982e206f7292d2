"""DUO: uniform-state diffusion with the "mean" parameterisation and the DUO_BASE ELBO.

Forward process (DUO ``UniformState.q_xt``): each token of x0 is independently replaced,
with probability 1 − α_t, by a token drawn uniformly from the whole vocabulary (which may
be x0 itself), so q(xt | x0) = α_t·onehot(x0) + (1 − α_t)/N. The prior (t = 1) is uniform.

Parameterisation "mean": the denoiser's x0 distribution is the softmax of the logits.

Per-token continuous-time NELBO (DUO ``DUO_BASE.nll_per_token``, from the UDLM/DUO papers).
With N = vocab size, i = xt_l, x̄ = N α_t onehot(x0) + (1 − α_t), x̄_θ = N α_t p_θ + (1 − α_t):

  nelbo_l = α'_t / (N α_t) · [ N/x̄_i − N/x̄_θ,i
                               − Σ_{j≠i} (x̄_j/x̄_i) · log( x̄_θ,i x̄_j / (x̄_θ,j x̄_i) ) ].

It is zero when p_θ = onehot(x0). The sum over j has only two distinct ratios x̄_j/x̄_i,
so it is evaluated in closed form from Σ_j log x̄_θ,j (O(V) per token, no [B, L, V] temporaries
beyond x̄_θ itself).

Ancestral posterior (``DUO_BASE._posterior_from_x0``), x a distribution over x0, s < t,
α_{t|s} = α_t/α_s:

  q(z_s = j | z_t = i, x) = [N α_t x_j δ_ij + (α_{t|s} − α_t) δ_ij + (α_s − α_t) x_j
                             + (1 − α_{t|s})(1 − α_s)/N] / [N α_t x_i + 1 − α_t].
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

LogitsFn = common.LogitsFn


def posterior(x0_probs: jax.Array, xt: jax.Array, alpha_s: jax.Array,
              alpha_t: jax.Array) -> jax.Array:
  """Uniform-state posterior q(z_s | z_t = xt, x), float[B, L, V] in the dtype of x0_probs.

  Args:
    x0_probs: float[B, L, V], a distribution over x0 per position (one-hot for the true
      posterior, p_θ for the model's). Sampling passes float64.
    xt: int[B, L] current tokens.
    alpha_s: float[B] (or scalar) α at the earlier time s (α_s ≥ α_t; 1 for noise removal).
    alpha_t: float[B] (or scalar) α at the current time t.
  """
  common.check_tokens(xt, "xt")
  # Trace-time contract: x0_probs float [B, L, V] over the positions of xt; α [B] or scalar.
  chex.assert_rank(x0_probs, 3)
  chex.assert_type(x0_probs, float)
  chex.assert_shape(xt, x0_probs.shape[:2])
  chex.assert_rank([alpha_s, alpha_t], {0, 1})
  dtype = x0_probs.dtype
  n = x0_probs.shape[-1]
  a_s = jnp.broadcast_to(jnp.asarray(alpha_s, dtype), xt.shape[:1])[:, None, None]
  a_t = jnp.broadcast_to(jnp.asarray(alpha_t, dtype), xt.shape[:1])[:, None, None]
  a_ts = a_t / a_s
  onehot_xt = jax.nn.one_hot(xt, n, dtype=dtype)
  x_at_xt = jnp.take_along_axis(x0_probs, xt[..., None], axis=-1)
  numer = (n * a_t * x0_probs * onehot_xt + (a_ts - a_t) * onehot_xt
           + (a_s - a_t) * x0_probs + (1 - a_ts) * (1 - a_s) / n)
  return numer / (n * a_t * x_at_xt + (1 - a_t))


def nelbo_per_token(log_p: jax.Array, x0: jax.Array, xt: jax.Array, alpha_t: jax.Array,
                    dalpha_t: jax.Array) -> jax.Array:
  """DUO_BASE ELBO per token, float[B, L] in the dtype of ``log_p`` (see module doc).

  Args:
    log_p: float[B, L, N] log p_θ(x0 | xt).
    x0, xt: int[B, L].
    alpha_t, dalpha_t: float[B] α_t and dα_t/dt.
  """
  # Trace-time contract: log_p float [B, L, N], tokens [B, L], α and α' [B].
  chex.assert_rank(log_p, 3)
  chex.assert_type(log_p, float)
  chex.assert_shape([x0, xt], log_p.shape[:2])
  chex.assert_shape([alpha_t, dalpha_t], log_p.shape[:1])
  dtype = log_p.dtype
  n = log_p.shape[-1]
  a = alpha_t.astype(dtype)[:, None]
  da = dalpha_t.astype(dtype)[:, None]
  c = 1 - a                          # x̄ off the clean token
  b = n * a + c                      # x̄ at the clean token
  xbar_theta = n * a[..., None] * jnp.exp(log_p) + c[..., None]
  log_xbt = jnp.log(xbar_theta)
  sum_log_xbt = jnp.sum(log_xbt, axis=-1)
  log_xbt_i = jnp.take_along_axis(log_xbt, xt[..., None], axis=-1)[..., 0]
  log_xbt_x0 = jnp.take_along_axis(log_xbt, x0[..., None], axis=-1)[..., 0]
  same = x0 == xt
  rho = c / b                        # x̄_j / x̄_i for j ≠ i when xt = x0
  log_rho = jnp.log(rho)
  # Σ_j (L_i − L_j) with L = log x̄_θ; the j = i term is 0.
  spread = n * log_xbt_i - sum_log_xbt
  # xt = x0: x̄_i = b, every other x̄_j = c, ratio ρ.
  sum_same = rho * spread + (n - 1) * rho * log_rho
  # xt ≠ x0: x̄_i = c, x̄_x0 = b (ratio 1/ρ), the other N − 2 ratios are 1.
  # 1/ρ − 1 written as N α / (1 − α) to avoid the subtraction.
  sum_diff = spread + (n * a / c) * (log_xbt_i - log_xbt_x0) - log_rho / rho
  log_sum = jnp.where(same, sum_same, sum_diff)
  xbar_i = jnp.where(same, b, c)
  xbt_i = jnp.exp(log_xbt_i)
  rate_term = n * (1 / xbar_i - 1 / xbt_i)
  return da / (n * a) * (rate_term - log_sum)


def ancestral_step(p_x0: jax.Array, x: jax.Array, alpha_s: jax.Array, alpha_t: jax.Array,
                       u: jax.Array) -> jax.Array:
  """One DUO ``_ancestral_update``: draw z_s from the uniform-state posterior q(z_s | x, p_x0).

  Args:
    p_x0: float[B, L, V] model distribution over x0 (float64 when sampling in float64).
    x: int[B, L] current tokens.
    alpha_s, alpha_t: float scalars or [B] (alpha_s = 1 for the noise-removal step).
    u: float[B, L, V] uniforms.

  Returns:
    int32[B, L].
  """
  chex.assert_equal_shape([p_x0, u])  # the posterior checks p_x0 [B, L, V] against x
  return sampling.gumbel_argmax(posterior(p_x0, x, alpha_s, alpha_t), u)


@dataclasses.dataclass(frozen=True)
class DUOProcess(sampling.LoopProcess):
  """Uniform-state diffusion of DUO (hashable: usable as a static jit argument).

  Attributes:
    vocab_size: N (50258 for the released OWT checkpoint, GPT-2 + one unused id).
    eps: ε of the log-linear schedule α_t = 1 − (1 − ε) t.
    sampling_eps: lower end of the training-time interval [sampling_eps, 1].
    antithetic: stratify training times over the batch.
  """

  vocab_size: int
  eps: float = 1e-3
  sampling_eps: float = 1e-3
  antithetic: bool = True

  name: ClassVar[str] = "duo"
  time_conditioning: ClassVar[bool] = True
  mask_id: ClassVar[None] = None    # uniform state: no mask token
  # 'ancestral' is one more posterior step, to α_s = 1.
  noise_removals: ClassVar[tuple[str, ...]] = ("ancestral", "greedy", "none")
  default_noise_removal: ClassVar[str] = "ancestral"
  # float64 posterior and Gumbel noise, as the DUO repository (``sampling.use_float64``).
  default_float64: ClassVar[bool] = True

  @classmethod
  def for_model(cls, model_cfg, **kwargs) -> "DUOProcess":
    """Sized like the backbone; DUO is always time-conditioned and has no mask."""
    return cls(vocab_size=model_cfg.vocab_size, **kwargs)

  def __post_init__(self):
    common.check_schedule(self.vocab_size, self.eps, self.sampling_eps)

  # --- vocabulary ---------------------------------------------------------------------

  @property
  def text_vocab_size(self) -> int:
    """Every id is text: V = ``len(tokenizer)`` after :meth:`prepare_tokenizer`."""
    return self.vocab_size

  def prepare_tokenizer(self, tokenizer):
    """The tokenizer as DUO sets it up: a [PAD] token is added when there is none (its
    ``dataloader.get_tokenizer``), so the released GPT-2 DUO has 50257 + 1 ids; the uniform
    prior can sample that id, and it decodes to "[PAD]" as in DUO."""
    if tokenizer.pad_token is None:
      tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    return tokenizer

  # --- schedule -----------------------------------------------------------------------

  def sample_t(self, key: jax.Array, batch: int) -> jax.Array:
    """Training times, float32[batch] (DUO ``_sample_t``)."""
    return schedule.sample_t(key, batch, sampling_eps=self.sampling_eps,
                             antithetic=self.antithetic)

  def alpha(self, t: jax.Array) -> jax.Array:
    return schedule.alpha(t, self.eps)

  def dalpha(self, t: jax.Array) -> jax.Array:
    return schedule.dalpha(t, self.eps)

  def sigma(self, t: jax.Array) -> jax.Array:
    """σ = −log α_t in the dtype of t (DUO ``_sigma_from_alphat``)."""
    return -jnp.log(schedule.alpha(t, self.eps))

  def model_sigma(self, t: jax.Array) -> jax.Array:
    """What the time-conditioned backbone is fed: −log α_t as float32[B]."""
    return self.sigma(t).astype(jnp.float32)

  def corruption_prob(self, t: jax.Array) -> jax.Array:
    """1 − α_t, the probability that a token is resampled uniformly."""
    return schedule.corruption_prob(t, self.eps)

  # --- forward process ----------------------------------------------------------------

  def corrupt(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
    """xt ~ q(xt | x0): with probability 1 − α_t a token becomes uniform over [0, N).

    Randomness: ``k_move, k_tok = jax.random.split(key)``. Returns int32[B, L].
    """
    common.check_tokens(x0, "x0")
    common.check_time(t, x0.shape[0])
    k_move, k_tok = jax.random.split(key)
    move = self.corruption_prob(t)[:, None]
    u = jax.random.uniform(k_move, x0.shape, dtype=move.dtype)
    noise = jax.random.randint(k_tok, x0.shape, 0, self.vocab_size, dtype=jnp.int32)
    return jnp.where(u < move, noise, x0).astype(jnp.int32)

  def prior(self, key: jax.Array, batch: int, length: int) -> jax.Array:
    """The t = 1 state: uniform tokens, int32[batch, length] (``prior_sample``)."""
    return jax.random.randint(key, (batch, length), 0, self.vocab_size, dtype=jnp.int32)

  # --- parameterisation ---------------------------------------------------------------

  def log_probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    """"mean" parameterisation: log-softmax of the logits, float[B, L, V]."""
    common.check_tokens(xt, "xt")
    if logits.shape != (*xt.shape, self.vocab_size):
      raise ValueError(
          f"logits shape {logits.shape} does not match xt {xt.shape} and vocab {self.vocab_size}")
    return jax.nn.log_softmax(logits.astype(common.compute_dtype(logits)), axis=-1)

  def probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    return jnp.exp(self.log_probs(logits, xt))

  def predicted_positions(self, xt: jax.Array) -> jax.Array:
    """M_i: every position is predicted in uniform-state diffusion, bool[B, L]."""
    return jnp.ones(xt.shape, dtype=bool)

  def posterior(self, x0_probs: jax.Array, xt: jax.Array, alpha_s: jax.Array,
                alpha_t: jax.Array) -> jax.Array:
    return posterior(x0_probs, xt, alpha_s, alpha_t)

  # --- loss ---------------------------------------------------------------------------

  def loss_per_token(self, log_probs: jax.Array, x0: jax.Array, xt: jax.Array,
                     t: jax.Array) -> jax.Array:
    """DUO_BASE ELBO per token, float[B, L] (dtype of ``log_probs``)."""
    common.check_tokens(x0, "x0")
    common.check_tokens(xt, "xt")
    common.check_time(t, x0.shape[0])
    if log_probs.shape != (*x0.shape, self.vocab_size):
      raise ValueError(f"log_probs shape {log_probs.shape} does not match x0 {x0.shape} "
                       f"and vocab {self.vocab_size}")
    chex.assert_equal_shape([x0, xt])  # trace-time: xt like x0 (not checked above)
    log_probs = log_probs.astype(common.compute_dtype(log_probs))
    t = t.astype(log_probs.dtype)
    return nelbo_per_token(log_probs, x0, xt, self.alpha(t), self.dalpha(t))

  def loss(self, logits_fn: LogitsFn, x0: jax.Array, key: jax.Array,
           valid: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One NELBO estimate (DUO ``Diffusion.nll`` + ``_loss``, loss_type 'elbo').

    Randomness: ``k_t, k_x = jax.random.split(key)``; t = ``sample_t(k_t, B)``,
    xt = ``corrupt(k_x, x0, t)``.

    Returns:
      (loss float32 scalar, metrics dict with ``loss``, ``nll_sum``, ``num_tokens``).
    """
    return common.nelbo_estimate(self, logits_fn, x0, key, valid)

  # --- sampling (the shared loop, DUO ``_ancestral_update``) --------------------------

  def denoise_step(self, p_x0, x, t, s, u, last):
    """:func:`ancestral_step` from t to s; the noise removal ('ancestral') goes to α_s = 1."""
    dtype = p_x0.dtype
    alpha_s = jnp.where(last, jnp.asarray(1.0, dtype), self.alpha(s))
    return ancestral_step(p_x0, x, alpha_s, self.alpha(t), u)


PROCESS = DUOProcess
