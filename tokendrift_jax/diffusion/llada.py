"""LLaDA: masked diffusion with a linear mask ratio, its pretraining loss and its SFT loss.

Forward process (LLaDA ``GUIDELINES.md``, ``forward_process``): a time t ~ U[0, 1) per
sequence, mask ratio p_mask = (1 − ε) t + ε with ε = 1e-3, and every token independently
replaced by the mask id with probability p_mask. So at least a fraction ε of the tokens is
masked and the loss weight 1/p_mask is at most 1/ε.

Parameterisation: LLaDA's mask predictor outputs logits over the whole vocabulary, and both
its loss (``F.cross_entropy`` on the masked positions) and its sampler (``generate.py``:
argmax and softmax over the last axis) use them as they are: **the mask logit is included**
in the softmax (LLaDA never pushes it to −∞; no training target is ever the mask, so a
trained model gives it little mass). Unmasked positions are not predicted: the loss ignores
them and the sampler keeps the visible token. ``log_probs`` states that as a point mass on
the visible token (as MDLM's carry-over), so no gradient reaches those logits.

Pretraining loss (GUIDELINES, pre-training)::

  loss = Σ_{b,l masked} CE(logits_bl, x0_bl) / p_mask_b  /  (B · L).

SFT loss (GUIDELINES, SFT): the prompt is never corrupted (its positions keep x0 after the
same draw), and each sequence's masked-token losses are divided by its answer length A_b
(every non-prompt position, padding EOS included)::

  loss = Σ_b Σ_{l masked} CE(logits_bl, x0_bl) / (p_mask_b · A_b)  /  B.

Relation to the continuous-time NELBO: with the mask ratio m(t) = (1 − ε) t + ε, the NELBO's
integral term weights the masked cross-entropy by m'(t)/m(t) = (1 − ε)/m(t). LLaDA's weight
1/m(t) is that divided by (1 − ε) (1.001 for ε = 1e-3), and the bound's t = 0 term (the ε
fraction masked at t = 0) is not included; LLaDA's paper calls the loss an upper bound of
the negative log-likelihood. The per-token values here are that loss's terms, so
``metrics.reduce_nelbo`` of them is LLaDA's loss exactly (see :meth:`LLaDAProcess.loss`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from tokendrift_jax.diffusion import common
from tokendrift_jax.diffusion import llada_sampling
from tokendrift_jax.diffusion import metrics as metrics_lib
from tokendrift_jax.diffusion import sampling
from tokendrift_jax.diffusion import schedule
from tokendrift_jax.diffusion.base import Process

# "−∞" of the carry-over at unmasked positions: finite (gradients stay NaN-free), and
# exp(−1e6) is exactly 0 in float32 and float64 (the value MDLM's SUBS uses too).
NEG_INF = -1e6

LogitsFn = common.LogitsFn


@dataclasses.dataclass(frozen=True)
class LLaDAProcess(Process):
  """LLaDA's masked diffusion (hashable: usable as a static jit argument).

  Attributes:
    vocab_size: V, the size of the logits (LLaDA-8B: 126464, its embedding size).
    mask_id: id of the mask token, required (LLaDA-8B: 126336, one of the tokenizer's
      reserved ids, *not* V − 1).
    eps: ε of the mask ratio p_mask = (1 − ε) t + ε (LLaDA: 1e-3).
    sampling_eps: lower end of the training times, t ∈ [sampling_eps, 1); LLaDA draws
      t ~ U[0, 1), i.e. 0 (the default).
    antithetic: stratify the training times over the batch; LLaDA does not (the default).
  """

  vocab_size: int
  mask_id: int | None = None
  eps: float = 1e-3
  sampling_eps: float = 0.0
  antithetic: bool = False

  name: ClassVar[str] = "llada"
  # generate.py commits every mask within its steps: no noise-removal forward.
  noise_removals: ClassVar[tuple[str, ...]] = ("none",)
  default_noise_removal: ClassVar[str] = "none"
  # float64 Gumbel noise, as generate.py's add_gumbel_noise.
  default_float64: ClassVar[bool] = True
  prompted: ClassVar[bool] = True
  # The unconditional sampler's temperature: 1 draws from the model, as the MDLM/DUO
  # samplers do; generate.py's default 0 would make every row and seed the same sample.
  unconditional_temperature: ClassVar[float] = 1.0
  # LLaDA's mask predictor has no time input (model_sigma feeds zeros).
  time_conditioning: ClassVar[bool] = False

  @classmethod
  def for_model(cls, model_cfg, **kwargs) -> "LLaDAProcess":
    """The backbone's mask id; the backbone must have no time input (LLaDA has none)."""
    if model_cfg.mask_id is None:
      raise ValueError(f"diffusion.process='llada' needs a mask token, but the "
                       f"{type(model_cfg).__name__} backbone has none")
    if model_cfg.time_conditioned:
      raise ValueError(f"diffusion.process='llada' has no time conditioning, but the "
                       f"{type(model_cfg).__name__} backbone is time-conditioned")
    return cls(vocab_size=model_cfg.vocab_size, mask_id=model_cfg.mask_id, **kwargs)

  def __post_init__(self):
    common.check_schedule(self.vocab_size, self.eps, self.sampling_eps)
    if self.mask_id is None:
      raise ValueError("LLaDAProcess needs mask_id (LLaDA-8B's is 126336); it is not "
                       "assumed to be vocab_size − 1")
    if not 0 <= self.mask_id < self.vocab_size:
      raise ValueError(f"mask_id {self.mask_id} outside the vocabulary [0, {self.vocab_size})")

  # --- vocabulary ---------------------------------------------------------------------

  @property
  def text_vocab_size(self) -> int:
    """Ids a tokenizer (and clean data) may use: V, or V − 1 when the mask is the last id
    (an MDLM-style backbone whose mask is appended to the tokenizer). LLaDA's mask is one
    of its tokenizer's reserved ids, so there every id counts."""
    return self.vocab_size - 1 if self.mask_id == self.vocab_size - 1 else self.vocab_size

  def prepare_tokenizer(self, tokenizer):
    """The tokenizer as LLaDA uses it: unchanged (its mask is a reserved token)."""
    return tokenizer

  # --- schedule -----------------------------------------------------------------------

  def sample_t(self, key: jax.Array, batch: int) -> jax.Array:
    """Training times t = (1 − sampling_eps) u + sampling_eps, u ~ U[0, 1), float32[batch]
    (LLaDA: ``torch.rand(b)``; stratified when ``antithetic``)."""
    return schedule.sample_t(key, batch, sampling_eps=self.sampling_eps,
                             antithetic=self.antithetic)

  def mask_prob(self, t: jax.Array) -> jax.Array:
    """p_mask = (1 − ε) t + ε in the floating dtype of t (``forward_process``)."""
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
      raise TypeError(f"time t must be a floating array, got dtype {t.dtype}")
    return (1 - self.eps) * t + self.eps

  def corruption_prob(self, t: jax.Array) -> jax.Array:
    """The probability that a token is masked at time t: p_mask (alias of mask_prob)."""
    return self.mask_prob(t)

  def model_sigma(self, t: jax.Array) -> jax.Array:
    """What the backbone is fed as σ: zeros, float32[B].

    LLaDA's network has no time input. Zeros are what a time-unconditioned backbone
    ignores anyway (the DiT zeroes σ itself when not time-conditioned); a time-conditioned
    backbone is refused by ``make_process_for_model`` rather than fed a meaningless σ.
    """
    return jnp.zeros(jnp.shape(t), jnp.float32)

  # --- forward process ----------------------------------------------------------------

  def corrupt(self, key: jax.Array, x0: jax.Array, t: jax.Array,
              keep: jax.Array | None = None) -> jax.Array:
    """xt ~ q(xt | x0): each token masked with probability p_mask(t).

    Randomness: u = ``jax.random.uniform(key, x0.shape, dtype of t)``; position (b, l) is
    masked iff u_bl < p_mask(t_b) and not keep_bl (LLaDA's ``rand < p_mask``; SFT draws
    the same way and then restores the prompt).

    Args:
      key: PRNG key.
      x0: int[B, L] clean tokens.
      t: float[B] times.
      keep: optional bool[B, L], positions never corrupted (the SFT prompt).

    Returns:
      int32[B, L].
    """
    common.check_tokens(x0, "x0")
    common.check_time(t, x0.shape[0])
    _check_keep(keep, x0.shape)
    p_mask = self.mask_prob(t)[:, None]
    u = jax.random.uniform(key, x0.shape, dtype=p_mask.dtype)
    masked = u < p_mask
    if keep is not None:
      masked = jnp.logical_and(masked, jnp.logical_not(keep))
    return jnp.where(masked, self.mask_id, x0).astype(jnp.int32)

  def prior(self, key: jax.Array, batch: int, length: int) -> jax.Array:
    """The fully masked state, int32[batch, length]; key unused."""
    del key
    return jnp.full((batch, length), self.mask_id, jnp.int32)

  # --- parameterisation ---------------------------------------------------------------

  def log_probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    """log p_θ(x0 | xt), float[B, L, V] (float32, or float64 for float64 logits).

    Masked positions: log-softmax of the logits over all V ids, **mask logit included**
    (as LLaDA's cross-entropy and sampler use them). Unmasked positions: 0 at the visible
    token, −∞ (−1e6) elsewhere; no gradient flows to those logits.
    """
    common.check_tokens(xt, "xt")
    if logits.shape != (*xt.shape, self.vocab_size):
      raise ValueError(
          f"logits shape {logits.shape} does not match xt {xt.shape} and vocab {self.vocab_size}")
    dtype = common.compute_dtype(logits)
    lp = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
    carry = jnp.where(jnp.arange(self.vocab_size) == xt[..., None], 0.0, NEG_INF).astype(dtype)
    return jnp.where(self.predicted_positions(xt)[..., None], lp, carry)

  def probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    """p_θ(x0 | xt) = exp(log_probs): softmax over all V ids where masked, one-hot elsewhere."""
    return jnp.exp(self.log_probs(logits, xt))

  def predicted_positions(self, xt: jax.Array) -> jax.Array:
    """M_i: bool[B, L], True at masked positions (LLaDA's ``masked_indices``)."""
    return xt == self.mask_id

  # --- loss ---------------------------------------------------------------------------

  def loss_per_token(self, log_probs: jax.Array, x0: jax.Array, xt: jax.Array,
                     t: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    """LLaDA's per-token loss, float[B, L] (dtype of ``log_probs``), 0 where not masked.

    Pretraining (keep None): −log p_θ(x0 | xt) / p_mask(t). The token-mean over all B·L
    positions (``metrics.reduce_nelbo`` without ``valid``) is LLaDA's pretraining loss.

    SFT (keep = prompt mask): −log p_θ(x0 | xt) / p_mask(t) · L / A_b, with A_b = the
    number of non-prompt positions of row b; the mean over B·L positions is then
    Σ_b Σ_l CE/(p_mask A_b) / B, LLaDA's SFT loss. A row with no answer (A_b = 0) has no
    masked position and contributes 0.

    Args:
      log_probs: float[B, L, V] from :meth:`log_probs`.
      x0: int[B, L] clean tokens.
      xt: int[B, L] corrupted tokens.
      t: float[B] times (not p_mask).
      keep: optional bool[B, L] prompt mask (the positions ``corrupt`` never masked).
    """
    common.check_tokens(x0, "x0")
    common.check_tokens(xt, "xt")
    common.check_time(t, x0.shape[0])
    _check_keep(keep, x0.shape)
    # Trace-time contract (not checked above): log_probs [B, L, V], xt like x0.
    chex.assert_equal_shape([x0, xt])
    chex.assert_shape(log_probs, (*x0.shape, self.vocab_size))
    dtype = common.compute_dtype(log_probs)
    weight = 1 / self.mask_prob(t.astype(dtype))
    if keep is not None:
      answer = jnp.sum(jnp.logical_not(keep), axis=1).astype(dtype)
      weight = weight * x0.shape[1] / jnp.maximum(answer, 1)
    log_p_x0 = jnp.take_along_axis(log_probs.astype(dtype), x0[..., None], axis=-1)[..., 0]
    return jnp.where(self.predicted_positions(xt), -log_p_x0 * weight[:, None], 0.0)

  def loss(self, logits_fn: LogitsFn, x0: jax.Array, key: jax.Array,
           valid: jax.Array | None = None, keep: jax.Array | None = None
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One estimate of LLaDA's pretraining loss, or of its SFT loss when ``keep`` is given.

    Randomness: ``k_t, k_x = jax.random.split(key)``; t = ``sample_t(k_t, B)``,
    xt = ``corrupt(k_x, x0, t, keep)``; logits = ``logits_fn(xt, model_sigma(t))``.

    Normalisation: :func:`metrics.reduce_nelbo` of :meth:`loss_per_token`, i.e.
    nll_sum / num_tokens with num_tokens = B·L (Σ valid when ``valid`` is given). Without
    ``valid`` that is exactly LLaDA's Σ CE/p_mask / (B·L) (pretraining) or
    Σ_b Σ CE/(p_mask A_b) / B (SFT); LLaDA itself has no ``valid`` mask (padding is EOS
    text), so ``valid`` is this package's token-weighted extension, as for MDLM/DUO.

    Args:
      logits_fn: denoiser (x int32[B, L], sigma float32[B]) -> logits float[B, L, V].
      x0: int[B, L] clean tokens.
      key: PRNG key.
      valid: optional [B, L] mask of tokens that count (pretraining only).
      keep: optional bool[B, L] prompt mask (SFT): never corrupted, no loss; each row's
        loss is normalised by its answer length.

    Returns:
      (loss float32 scalar, metrics dict with ``loss``, ``nll_sum``, ``num_tokens``).
    """
    common.check_tokens(x0, "x0")
    _check_keep(keep, x0.shape)
    if keep is not None and valid is not None:
      raise ValueError("LLaDA's SFT loss (keep=) counts every non-prompt position as "
                       "answer (padding EOS included); pass valid=None with keep")
    k_t, k_x = jax.random.split(key)
    t = self.sample_t(k_t, x0.shape[0])
    xt = self.corrupt(k_x, x0, t, keep)
    log_probs = self.log_probs(logits_fn(xt, self.model_sigma(t)), xt)
    return metrics_lib.reduce_nelbo(self.loss_per_token(log_probs, x0, xt, t, keep), valid)



  # --- sampling (generate.py, :mod:`llada_sampling`) ----------------------------------

  def sampler_options(self, options: dict, length: int) -> dict:
    """generate.py's options with the unconditional defaults: ``temperature``
    (:attr:`unconditional_temperature`), ``block_length`` (0 / None = ``length``, one
    block), and ``remasking`` / ``cfg_scale`` when given."""
    options = {k: v for k, v in dict(options).items() if v is not None}
    unknown = sorted(set(options) - {"temperature", "block_length", "remasking", "cfg_scale"})
    if unknown:
      raise ValueError(f"sampler option(s) {unknown} are not generate.py's")
    return {"temperature": self.unconditional_temperature, **options,
            "block_length": int(options.get("block_length") or length)}

  def check_steps(self, steps: int, length: int, options: dict) -> None:
    """generate.py's assert: the step count is a multiple of the number of blocks."""
    llada_sampling.check_steps(steps, length, options.get("block_length") or length)

  def make_sampler(self, apply_fn, *, batch: int, length: int,
                   noise_removal: str | None = None, cache: bool = True,
                   float64: bool | None = None, mesh=None, **options):
    """The unconditional generate.py sampler (empty prompt, gen_length = length)."""
    noise_removal, float64 = self.check_sampler_settings(noise_removal, float64, cache)
    if batch < 1 or length < 1:
      raise ValueError(f"batch and length must be >= 1, got batch={batch}, length={length}")
    options = dict({"temperature": self.unconditional_temperature}, **options)
    generate = llada_sampling.make_generate(self, apply_fn, batch=batch, prompt_length=0,
                                            gen_length=length, float64=float64, mesh=mesh,
                                            **options)
    empty = jnp.zeros((batch, 0), jnp.int32)

    def sampler(params, key: jax.Array, steps: int) -> sampling.SampleResult:
      res = generate(params, empty, key, steps)
      return sampling.SampleResult(tokens=res.tokens, nfe_model=res.nfe_model, steps=steps,
                                   final_forward=False, forward_rows=res.forward_rows)

    def lower(params, key, steps):
      # The same program as sampler(): generate.py with the empty prompt.
      return generate.lower(params, jax.ShapeDtypeStruct(empty.shape, empty.dtype), key,
                            steps)

    sampler.lower = lower
    return sampler

  def make_generate(self, apply_fn, *, batch: int, prompt_length: int, gen_length: int,
                    float64: bool | None = None, mesh=None, **options):
    """generate.py completing prompts int[B, P] (:func:`llada_sampling.make_generate`)."""
    float64 = self.default_float64 if float64 is None else bool(float64)
    return llada_sampling.make_generate(self, apply_fn, batch=batch,
                                        prompt_length=prompt_length, gen_length=gen_length,
                                        float64=float64, mesh=mesh, **options)

  # --- evaluation ---------------------------------------------------------------------

  def sample_metrics(self, tokens) -> dict:
    """``masks_left``: generate.py may commit the mask id itself (its argmax runs over every
    id); decoding drops it with the special tokens, so the count is reported."""
    return {"masks_left": int(np.sum(np.asarray(tokens) == self.mask_id))}


def _check_keep(keep: jax.Array | None, shape: tuple[int, ...]) -> None:
  if keep is None:
    return
  if keep.shape != tuple(shape) or keep.dtype != jnp.bool_:
    raise ValueError(f"keep (the SFT prompt mask) must be bool {list(shape)}, got "
                     f"{keep.dtype}{list(keep.shape)}")


PROCESS = LLaDAProcess
