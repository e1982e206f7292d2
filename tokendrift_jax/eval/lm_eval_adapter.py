"""lm-evaluation-harness model type ``tokendrift``: any backbone checkpoint of this project
scored on the harness's tasks (docs/EVALUATION.md, "lm-evaluation-harness").

Importing this module registers the model type (``@register_model("tokendrift")``); it
needs ``lm-eval`` (requirements-dev.txt pins it), and without it the import fails with one
line naming what to install. Use it as::

  lm_eval.simple_evaluate(model="tokendrift",
                          model_args="checkpoint=DIR,mc_num=128,batch_size=32,nfe=256",
                          tasks=[...])

or through ``launch/lm_eval.py``. model_args (comma-separated ``key=value``; the harness's
own ``batch_size`` argument, when given, is the estimator's batch):

* ``checkpoint`` (required): a converted backbone or a training run's ``WORKDIR/backbone``;
* ``tokenizer``: a tokenizer directory or hub id in the local HF cache (default: the
  family's released tokenizer, :attr:`tokendrift_jax.models.base.Family.tokenizer`); never
  downloaded: a missing one fails at once saying what to fetch;
* ``mc_num`` (128), ``batch_size`` (32), ``cfg`` (0), ``estimator`` ("llada"/"elbo"),
  ``is_check_greedy`` (false), ``seed`` (1234), ``max_length``: the likelihood
  (:mod:`.diffusion_lm`);
* ``nfe``, ``gen_length``, ``block_length``, ``remasking``, ``temperature``, ``alg``,
  ``top_p``, ``top_k``, ``alg_temp``, ``eps``: generation with the family's sampler;
* ``mesh`` (``DATAxFSDP[xTENSOR]``, e.g. ``1x1x8``), ``num_devices``, ``param_sharding``,
  ``dtype``: placement and compute.

Tokenization follows eval_llada.py: ``_encode_pair`` moves the context's trailing spaces
to the continuation and takes the continuation as the tokens of context + continuation
after those of the context (the tokenizer's default special tokens, as the script calls
it); ``generate_until`` decodes with special tokens, cuts at the first occurrence of each
``until`` string in turn, then re-encodes and decodes without special tokens.

``loglikelihood_rolling`` (perplexity tasks) raises NotImplementedError: the Monte-Carlo
estimator scores a continuation given a context, and LLaDA's script defines no rolling
variant either.
"""

from __future__ import annotations

import os
from typing import Any

try:
  from lm_eval.api.model import LM
  from lm_eval.api.registry import register_model
except ImportError as _e:  # one line naming the fix, not a traceback into the harness
  raise ImportError("the lm-evaluation-harness adapter needs lm-eval: "
                    "pip install lm-eval==0.4.13 (requirements-dev.txt)") from _e

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.data import tokenizer as tokenizer_lib
from tokendrift_jax.eval import diffusion_lm
from tokendrift_jax.eval import judges

MODEL_NAME = "tokendrift"
TOKENIZER_ARG = "model_args tokenizer"
# model_args that are strings even when they look like numbers.
_STR_ARGS = ("checkpoint", "tokenizer", "estimator", "remasking", "alg", "mesh",
             "param_sharding", "dtype")


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  """eval_llada.py's ``_encode_pair``: (context ids, continuation ids)."""
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces > 0:
    continuation = context[-n_spaces:] + continuation
    context = context[:-n_spaces]
  whole = tokenizer(context + continuation)["input_ids"]
  context_ids = tokenizer(context)["input_ids"]
  return list(context_ids), list(whole[len(context_ids):])


def cut_at_stops(text: str, until) -> str:
  """The script's stop rule: for each stop string in turn, keep what precedes it."""
  for stop in until or ():
    if stop and stop in text:
      text = text.split(stop)[0]
  return text


@register_model(MODEL_NAME)
class TokenDriftLM(LM):
  """The ``tokendrift`` model type (see the module doc for model_args)."""

  def __init__(self, checkpoint: str = "", tokenizer: str = "", *, batch_size=None,
               max_batch_size=None, device=None, **kwargs: Any):
    super().__init__()
    del max_batch_size, device   # the harness's torch options: placement is the mesh's
    if batch_size not in (None, "", "auto") and "batch_size" not in kwargs:
      kwargs["batch_size"] = batch_size
    for name in _STR_ARGS:
      if name in kwargs and kwargs[name] is not None:
        kwargs[name] = str(kwargs[name])
    sampler = {k: kwargs.pop(k) for k in diffusion_lm.SAMPLER_OPTIONS if k in kwargs}
    if "batch_size" in kwargs:
      kwargs["batch_size"] = _int(kwargs["batch_size"], "batch_size")
    for name in ("mc_num", "nfe", "gen_length", "seed", "max_length", "num_devices"):
      if kwargs.get(name) is not None:
        kwargs[name] = _int(kwargs[name], name)
    if "cfg" in kwargs:
      kwargs["cfg"] = float(kwargs["cfg"])
    known = {"mc_num", "batch_size", "cfg", "estimator", "nfe", "gen_length", "seed",
             "max_length", "is_check_greedy", "mesh", "num_devices", "param_sharding",
             "dtype"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
      raise ValueError(f"unknown tokendrift model_args {unknown}; known: checkpoint, "
                       f"tokenizer, {', '.join(sorted(known | set(diffusion_lm.SAMPLER_OPTIONS)))}")
    # The tokenizer before the weights: a missing one fails before gigabytes are read.
    model_cfg, _ = checkpoints.read_backbone_config(
        os.path.abspath(os.path.expanduser(str(checkpoint)))) if checkpoint else (None, None)
    family = models.family_of(model_cfg) if model_cfg is not None else None
    name = str(tokenizer) or (family.tokenizer if family is not None else "")
    if family is not None and not name:
      raise ValueError(f"the {family.name!r} family names no released tokenizer; pass "
                       f"tokenizer=DIR in model_args")
    self.tokenizer = tokenizer_lib.load_tokenizer(name, field=TOKENIZER_ARG) if name else None
    self.model = diffusion_lm.DiffusionLM(str(checkpoint), sampler_options=sampler, **kwargs)
    self.model.process.prepare_tokenizer(self.tokenizer)
    # A tokenizer of another checkpoint would score the wrong ids without any error.
    judges.check_vocab(self.model.process, len(self.tokenizer), f"tokenizer {name!r}")

  @property
  def tokenizer_name(self) -> str:
    return getattr(self.tokenizer, "name_or_path", "").replace("/", "__")

  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    """(log p(continuation | context) estimate, is_greedy) per (context, continuation)."""
    out = []
    for req in requests:
      context, target = encode_pair(self.tokenizer, *req.args)
      logprob = self.model.loglikelihood_tokens(context, target)
      out.append((logprob, self.model.is_greedy(context, target)))
    return out

  def loglikelihood_rolling(self, requests) -> list[float]:
    raise NotImplementedError(
        "tokendrift: loglikelihood_rolling (perplexity tasks) is not defined for the "
        "Monte-Carlo masked-diffusion estimator (LLaDA's eval_llada.py has none either); "
        "use multiple-choice (loglikelihood) or generate_until tasks")

  def generate_until(self, requests) -> list[str]:
    """The family's sampler on each context; the decoded text cut at ``until``."""
    out = []
    for i, req in enumerate(requests):
      context, gen_kwargs = req.args
      gen_kwargs = dict(gen_kwargs or {})
      until = gen_kwargs.get("until") or []
      if isinstance(until, str):
        until = [until]
      length = self.model.gen_length or _int(gen_kwargs.get("max_gen_toks", 256),
                                             "max_gen_toks")
      ids = self.tokenizer(context)["input_ids"]
      tokens = self.model.generate_tokens(ids, length, index=i)
      # Ids past the tokenizer (a padded embedding) have no text; the decoder would fail.
      tokens = [int(t) for t in tokens if 0 <= int(t) < len(self.tokenizer)]
      text = cut_at_stops(self.tokenizer.decode(tokens, skip_special_tokens=False), until)
      # Re-encoded and decoded without special tokens, as the script (drops mask/EOS text).
      text = self.tokenizer.decode(self.tokenizer(text)["input_ids"], skip_special_tokens=True)
      out.append(text)
    return out


def _int(value, name: str) -> int:
  if isinstance(value, bool):
    raise ValueError(f"{name} must be an int, got {value!r}")
  try:
    as_float = float(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be an int, got {value!r}") from e
  if as_float != int(as_float):
    raise ValueError(f"{name} must be an int, got {value!r}")
  return int(as_float)


__all__ = ["MODEL_NAME", "TokenDriftLM", "cut_at_stops", "encode_pair"]
