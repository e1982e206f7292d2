"""Discrete diffusion processes (MDLM absorbing state, DUO uniform state, LLaDA masked) and
samplers.

The processes share a duck-typed API (``sample_t``, ``model_sigma``, ``corrupt``, ``prior``,
``log_probs``, ``probs``, ``predicted_positions``, ``loss_per_token``, ``loss``), and own the
vocabulary rule (``mask_id``, None for DUO and given for LLaDA; ``text_vocab_size``, the ids
a tokenizer and clean data may use; ``prepare_tokenizer``). A process is chosen by
``config.diffusion.process`` independently of the backbone family; see docs/DIFFUSION.md
for the formulas, the NFE convention and the precision choices.
"""

from __future__ import annotations

from tokendrift_jax.diffusion.duo import DUOProcess
from tokendrift_jax.diffusion.llada import LLaDAProcess
from tokendrift_jax.diffusion.mdlm import MDLMProcess
from tokendrift_jax.diffusion.metrics import NLLMeter, nll_metrics, reduce_nelbo
from tokendrift_jax.diffusion.sampling import SampleResult, make_sampler, sample, sampling_loop

PROCESSES = {"mdlm": MDLMProcess, "duo": DUOProcess, "llada": LLaDAProcess}

Process = MDLMProcess | DUOProcess | LLaDAProcess


def make_process(name: str, vocab_size: int, **kwargs) -> Process:
  """Builds process ``name`` ('mdlm': masked, 'duo': uniform, 'llada': LLaDA's masked) with
  dataclass ``kwargs``."""
  if name not in PROCESSES:
    raise ValueError(f"unknown diffusion process {name!r}; expected one of {sorted(PROCESSES)}")
  return PROCESSES[name](vocab_size=vocab_size, **kwargs)


def make_process_for_model(name: str, model_cfg, **kwargs) -> Process:
  """The process ``name`` sized and conditioned like ``model_cfg`` (any backbone config).

  MDLM takes the backbone's mask id and follows its time conditioning (the released MDLM
  feeds σ = 0); DUO is always time-conditioned and has no mask; LLaDA takes the backbone's
  mask id and needs a backbone without time input (LLaDA has none). ``kwargs``: further
  dataclass fields (eps, ...).
  """
  if name in ("mdlm", "llada") and model_cfg.mask_id is None:
    raise ValueError(f"diffusion.process={name!r} needs a mask token, but the "
                     f"{type(model_cfg).__name__} backbone has none")
  if name == "mdlm":
    kwargs = dict(kwargs, mask_id=model_cfg.mask_id,
                  time_conditioning=model_cfg.time_conditioned)
  if name == "llada":
    if model_cfg.time_conditioned:
      raise ValueError(f"diffusion.process='llada' has no time conditioning, but the "
                       f"{type(model_cfg).__name__} backbone is time-conditioned")
    kwargs = dict(kwargs, mask_id=model_cfg.mask_id)
  return make_process(name, model_cfg.vocab_size, **kwargs)


def process_from_config(config, model_cfg) -> Process:
  """The process of ``config.diffusion`` (process, eps, sampling_eps, antithetic)."""
  d = config.diffusion
  return make_process_for_model(str(d.process), model_cfg, eps=d.eps,
                                sampling_eps=d.sampling_eps, antithetic=d.antithetic)


__all__ = [
    "DUOProcess", "LLaDAProcess", "MDLMProcess", "NLLMeter", "PROCESSES", "Process",
    "SampleResult", "make_process", "make_process_for_model", "make_sampler",
    "process_from_config", "nll_metrics", "reduce_nelbo", "sample", "sampling_loop",
]
