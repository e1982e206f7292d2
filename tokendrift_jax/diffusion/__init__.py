"""Discrete diffusion processes (MDLM absorbing state, DUO uniform state, LLaDA and Dream
masked) and samplers.

Every process is a :class:`~tokendrift_jax.diffusion.base.Process` (``sample_t``,
``model_sigma``, ``corrupt``, ``prior``, ``log_probs``, ``probs``, ``predicted_positions``,
``loss_per_token``, ``loss``; the vocabulary rule ``mask_id``, ``text_vocab_size``,
``prepare_tokenizer``; its sampler and sampler defaults), registered by name
(:mod:`.registry`; :func:`register_process` for one defined elsewhere). A process is chosen
by ``config.diffusion.process`` independently of the backbone family; see
docs/DIFFUSION.md for the formulas, the NFE convention and the precision choices.
"""

from __future__ import annotations

from tokendrift_jax.diffusion import registry
from tokendrift_jax.diffusion.base import Process
from tokendrift_jax.diffusion.dream import DreamProcess
from tokendrift_jax.diffusion.duo import DUOProcess
from tokendrift_jax.diffusion.llada import LLaDAProcess
from tokendrift_jax.diffusion.mdlm import MDLMProcess
from tokendrift_jax.diffusion.metrics import NLLMeter, nll_metrics, reduce_nelbo
from tokendrift_jax.diffusion.registry import register_process
from tokendrift_jax.diffusion.sampling import (LoopProcess, SampleResult, make_sampler, sample,
                                               sampling_loop)


def process_names() -> tuple[str, ...]:
  """Every registered process name (built in first)."""
  return registry.names()


def make_process(name: str, vocab_size: int, **kwargs) -> Process:
  """Builds process ``name`` ('mdlm': masked, 'duo': uniform, 'llada': LLaDA's masked, or a
  registered one) with dataclass ``kwargs``."""
  return registry.get(name)(vocab_size=vocab_size, **kwargs)


def make_process_for_model(name: str, model_cfg, **kwargs) -> Process:
  """The process ``name`` sized and conditioned like ``model_cfg`` (any backbone config):
  its :meth:`Process.for_model` (MDLM takes the backbone's mask id and time conditioning;
  DUO is time-conditioned and has no mask; LLaDA takes the mask id and refuses a
  time-conditioned backbone). ``kwargs``: further dataclass fields (eps, ...)."""
  return registry.get(name).for_model(model_cfg, **kwargs)


def process_from_config(config, model_cfg) -> Process:
  """The process of ``config.diffusion`` (process, eps, sampling_eps, antithetic)."""
  d = config.diffusion
  return make_process_for_model(str(d.process), model_cfg, eps=d.eps,
                                sampling_eps=d.sampling_eps, antithetic=d.antithetic)


__all__ = [
    "DUOProcess", "DreamProcess", "LLaDAProcess", "LoopProcess", "MDLMProcess", "NLLMeter", "Process",
    "SampleResult", "make_process", "make_process_for_model", "make_sampler",
    "nll_metrics", "process_from_config", "process_names", "reduce_nelbo",
    "register_process", "sample", "sampling_loop",
]
