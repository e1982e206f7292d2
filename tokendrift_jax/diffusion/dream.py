"""Dream: masked diffusion over the aligned logits of the Dream backbone, and its sampler.

Sampler: ``diffusion_generate`` of the public ``generation_utils.py``
(:mod:`tokendrift_jax.diffusion.dream_sampling`): steps, eps, the unmasking orders
'origin', 'maskgit_plus', 'topk_margin', 'entropy', temperature / top-p / top-k, alg_temp;
one backbone call per step.

Forward process and loss: Dream's release publishes no training code, and its paper's
context-adaptive noise rescheduling (CART) is not public, so the process keeps the masked
forward process and loss of :class:`~tokendrift_jax.diffusion.llada.LLaDAProcess`
(mask ratio (1 − ε) t + ε, each token masked independently, masked cross-entropy weighted
by 1/p_mask over B·L; SFT with the prompt kept), applied to the backbone's **aligned**
logits (position i's prediction is the raw logit at i − 1, as Dream's sampler reads it;
:mod:`tokendrift_jax.models.dream`). That is what the continuation baseline and the
TokenDrift lift (the masked positions M_i, p the softmax over all ids, mask logit
included) use unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from tokendrift_jax.diffusion import dream_sampling
from tokendrift_jax.diffusion import sampling
from tokendrift_jax.diffusion.llada import LLaDAProcess

# DreamGenerationConfig's defaults for the options the unconditional sampler takes (the
# temperature is :attr:`DreamProcess.unconditional_temperature` instead of its 0).
SAMPLER_DEFAULTS = {"alg": "origin", "top_p": None, "top_k": None, "alg_temp": None,
                    "eps": 1e-3}


@dataclasses.dataclass(frozen=True)
class DreamProcess(LLaDAProcess):
  """Dream's masked diffusion (hashable: usable as a static jit argument).

  Attributes: as :class:`LLaDAProcess` (vocab_size; mask_id, required: Dream-v0's is
  151666; eps, sampling_eps, antithetic of the training times).
  """

  name: ClassVar[str] = "dream"
  noise_removals: ClassVar[tuple[str, ...]] = ("none",)
  default_noise_removal: ClassVar[str] = "none"
  # float32 throughout, as the sampler is documented (dream_sampling).
  default_float64: ClassVar[bool] = False
  prompted: ClassVar[bool] = True
  # 1 draws from the model (as the MDLM/DUO samplers); DreamGenerationConfig's default 0
  # would make every row and seed the same sample.
  unconditional_temperature: ClassVar[float] = 1.0

  @classmethod
  def for_model(cls, model_cfg, **kwargs) -> "DreamProcess":
    """The backbone's mask id; the backbone must have no time input (Dream has none)."""
    if model_cfg.mask_id is None:
      raise ValueError(f"diffusion.process='dream' needs a mask token, but the "
                       f"{type(model_cfg).__name__} backbone has none")
    if model_cfg.time_conditioned:
      raise ValueError(f"diffusion.process='dream' has no time conditioning, but the "
                       f"{type(model_cfg).__name__} backbone is time-conditioned")
    return cls(vocab_size=model_cfg.vocab_size, mask_id=model_cfg.mask_id, **kwargs)

  def __post_init__(self):
    if self.mask_id is None:
      raise ValueError("DreamProcess needs mask_id (Dream-v0's is 151666)")
    super().__post_init__()

  # --- sampling -----------------------------------------------------------------------

  def sampler_options(self, options: dict, length: int) -> dict:
    """diffusion_generate's options with the unconditional defaults filled in:
    ``temperature`` (:attr:`unconditional_temperature`), ``alg``, ``top_p``, ``top_k``,
    ``alg_temp``, ``eps`` (:data:`SAMPLER_DEFAULTS`)."""
    del length
    options = {k: v for k, v in dict(options).items() if v is not None}
    unknown = sorted(set(options) - {"temperature", *SAMPLER_DEFAULTS})
    if unknown:
      raise ValueError(f"sampler option(s) {unknown} are not diffusion_generate's (known: "
                       f"{sorted({'temperature', *SAMPLER_DEFAULTS})})")
    out = {"temperature": self.unconditional_temperature, **SAMPLER_DEFAULTS, **options}
    dream_sampling.check_options(gen_length=1, **out)
    return out

  def check_steps(self, steps: int, length: int, options: dict) -> None:
    del length, options
    dream_sampling.check_steps(steps)

  def make_sampler(self, apply_fn, *, batch: int, length: int,
                   noise_removal: str | None = None, cache: bool = True,
                   float64: bool | None = None, mesh=None, **options):
    """The unconditional diffusion_generate (empty prompt, max_new_tokens = length)."""
    noise_removal, float64 = self.check_sampler_settings(noise_removal, float64, cache)
    if float64:
      raise ValueError("the dream sampler computes in float32 (float64=True is not built)")
    if batch < 1 or length < 1:
      raise ValueError(f"batch and length must be >= 1, got batch={batch}, length={length}")
    options = self.sampler_options(options, length)
    generate = dream_sampling.make_generate(self, apply_fn, batch=batch, prompt_length=0,
                                            gen_length=length, mesh=mesh, **options)
    empty = jnp.zeros((batch, 0), jnp.int32)

    def sampler(params, key: jax.Array, steps: int) -> sampling.SampleResult:
      res = generate(params, empty, key, steps)
      return sampling.SampleResult(tokens=res.tokens, nfe_model=res.nfe_model, steps=steps,
                                   final_forward=False, forward_rows=res.forward_rows)

    return sampler

  def make_generate(self, apply_fn, *, batch: int, prompt_length: int, gen_length: int,
                    float64: bool | None = None, mesh=None, **options):
    """diffusion_generate completing prompts int[B, P]
    (:func:`dream_sampling.make_generate`; its defaults are DreamGenerationConfig's)."""
    if float64:
      raise ValueError("the dream sampler computes in float32 (float64=True is not built)")
    return dream_sampling.make_generate(self, apply_fn, batch=batch,
                                        prompt_length=prompt_length, gen_length=gen_length,
                                        mesh=mesh, **options)


PROCESS = DreamProcess
