"""Discrete diffusion processes (MDLM absorbing state, DUO uniform state) and samplers.

Both processes share a duck-typed API (``sample_t``, ``model_sigma``, ``corrupt``, ``prior``,
``log_probs``, ``probs``, ``predicted_positions``, ``loss_per_token``, ``loss``); see
docs/DIFFUSION.md for the formulas, the NFE convention and the precision choices.
"""

from __future__ import annotations

from tokendrift_jax.diffusion.duo import DUOProcess
from tokendrift_jax.diffusion.mdlm import MDLMProcess
from tokendrift_jax.diffusion.metrics import NLLMeter, nll_metrics, reduce_nelbo
from tokendrift_jax.diffusion.sampling import SampleResult, make_sampler, sample, sampling_loop

PROCESSES = {"mdlm": MDLMProcess, "duo": DUOProcess}


def make_process(name: str, vocab_size: int, **kwargs) -> MDLMProcess | DUOProcess:
  """Builds the process of backbone ``name`` ('mdlm' | 'duo') with dataclass ``kwargs``."""
  if name not in PROCESSES:
    raise ValueError(f"unknown diffusion process {name!r}; expected one of {sorted(PROCESSES)}")
  return PROCESSES[name](vocab_size=vocab_size, **kwargs)


def make_process_for_model(name: str, model_cfg, **kwargs) -> MDLMProcess | DUOProcess:
  """The process of backbone ``name`` sized and conditioned like ``model_cfg`` (a DiTConfig).

  MDLM follows the checkpoint's ``time_conditioning`` (the released model feeds σ = 0);
  DUO is always time-conditioned. ``kwargs``: further dataclass fields (eps, ...).
  """
  if name == "mdlm":
    kwargs = dict(kwargs, time_conditioning=model_cfg.time_conditioning)
  return make_process(name, model_cfg.vocab_size, **kwargs)


__all__ = [
    "DUOProcess", "MDLMProcess", "NLLMeter", "PROCESSES", "SampleResult", "make_process",
    "make_process_for_model", "make_sampler", "nll_metrics", "reduce_nelbo", "sample", "sampling_loop",
]
