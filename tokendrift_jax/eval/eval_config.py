"""Config sections of the sample evaluation and the checks of their values.

No heavy imports: configs/*.py load this.

* :func:`judge_config`: the judge / sampler fields shared by configs/eval.py and the
  training config's ``sample_eval`` section;
* :func:`sample_eval_config`: the ``sample_eval`` section of the training config (the
  Fig. 2 hook, :mod:`tokendrift_jax.eval.hook`);
* :data:`EVAL_CONFIG_CHECKS` / :func:`check_eval_config`: the value checks of
  configs/eval.py, one table of :mod:`tokendrift_jax.config_checks` applied where the
  config is read (``evaluate_checkpoint``), before anything is loaded;
* :class:`EvalError`, :func:`check_int_list`, :func:`check_num_samples`: a bad value is
  reported as one line naming the field, before anything is sampled.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from tokendrift_jax import config_checks as cc


class EvalError(ValueError):
  """A configuration or input problem of the evaluation, reported as one line."""

# The paper's judge (Sec. 4.1); genppl.DEFAULT_JUDGE, repeated here to keep this light.
DEFAULT_JUDGE = "gpt2-large"


def judge_config() -> ml_collections.ConfigDict:
  """The judge and sampler fields.

  Fields:
    judge_kind: "gpt2" (Gen-PPL under a GPT-2 judge) or "synthetic" (exact likelihood
      of the synthetic language, for the offline demo).
    judge: GPT-2 judge: hub name or a directory written by ``python -m convert.gpt2``.
    judge_tokenizer: the judge's tokenizer (hub name or directory); "" = the judge's
      own (like MDLM/DUO; ``python -m convert.gpt2`` copies it beside the weights, and
      every GPT-2 size shares GPT-2's tokenizer).
    tokenizer: the diffusion model's tokenizer, decodes sampled ids to text (hub name
      from the local cache, or directory); "" = the backbone family's release tokenizer
      (``models.base.Family.tokenizer``: "gpt2" for MDLM/DUO, "GSAI-ML/LLaDA-8B-Base" for
      LLaDA).
    judge_dtype: "float32" (the protocol) or "bfloat16" (see docs/EVALUATION.md).
    judge_batch: chunks per jitted judge call (a multiple of the device count).
    judge_group_size: texts per retokenization call (the references retokenize one
      sampling batch per call: DUO's OWT Gen-PPL scripts use 8 per GPU).
    judge_buckets: chunk widths the judge may run at below its context (a chunk takes
      the smallest that holds it); () = always the full context. Scores are the same
      either way; short samples cost less (docs/EVALUATION.md).
    clean_up_tokenization_spaces: how sampled ids are decoded to the texts the judge
      scores. True = as the released evaluations decoded (MDLM and DUO pin transformers
      4.38, whose ``batch_decode`` cleans " ." , " 's", " n't" ... by default); False =
      transformers >= 4.45's default, the raw byte-level text.
    special_tokens: "keep" (MDLM/DUO: special tokens stay in the decoded text), "skip"
      (LLaDA's generate.py, ``skip_special_tokens=True``), or "" = the family's choice
      (``models.base.Family.skip_special_tokens``).
    noise_removal: "" = the backbone's default (MDLM "greedy", DUO "ancestral").
    sampler_precision: "" = the backbone's default (MDLM float32, DUO float64), or
      "float32" / "float64".
    model_dtype: compute dtype of the backbone while sampling ("float32" | "bfloat16").
    synthetic: parameters of the synthetic language (judge_kind="synthetic"), the
      fields ``data.synthetic.LANGUAGE_FIELDS`` (``make_language``'s keyword arguments
      plus its seed).
  """
  c = ml_collections.ConfigDict()
  c.judge_kind = "gpt2"
  c.judge = DEFAULT_JUDGE
  c.judge_tokenizer = ""
  c.tokenizer = ""
  c.judge_dtype = "float32"
  c.judge_batch = 8
  c.judge_group_size = 8
  c.judge_buckets = (128, 256, 512)
  c.clean_up_tokenization_spaces = True
  c.special_tokens = ""
  c.noise_removal = ""
  c.sampler_precision = ""
  c.model_dtype = "float32"
  c.synthetic = ml_collections.ConfigDict(dict(
      seed=0, vocab_size=250, n_topics=8, order=1, successors=4, topic_vocab_size=64,
      concentration=1.0, floor=0.01))
  return c


def llada_sampler_config() -> ml_collections.ConfigDict:
  """LLaDA's sampler (generate.py) options of configs/eval.py's ``llada`` section.

  Fields: block_length (0 = one block of the whole sample), temperature (1 draws from the
  model, as the MDLM/DUO evaluations sample; generate.py's own default 0 is greedy),
  remasking ("low_confidence" | "random"), cfg_scale (classifier-free guidance, prompted
  samples only; it doubles the rows of every backbone call).
  """
  return ml_collections.ConfigDict(dict(
      block_length=0, temperature=1.0, remasking="low_confidence", cfg_scale=0.0))


def sample_eval_config() -> ml_collections.ConfigDict:
  """The ``sample_eval`` section of the training config.

  Fields (plus those of :func:`judge_config`):
    enabled: run the hook at all.
    every: evaluate every this many steps (and at the last step).
    nfe: denoising step counts, one curve each.
    num_samples: samples per NFE at every evaluation.
    batch: samples per sampler call (a multiple of the device count).
    seed: sampling seed (the same at every evaluation, so the curve compares like with
      like).
    length: sample length; 0 = config.model.length.
    eval_init: also evaluate the initial checkpoint, logged as step 0.
    progress: progress bars while sampling / scoring.
  """
  c = judge_config()
  c.enabled = False
  c.every = 1000
  c.nfe = (4, 8, 16)
  c.num_samples = 64
  c.batch = 32
  c.seed = 0
  c.length = 0
  c.eval_init = True
  c.progress = False
  return c


# ----------------------------------------------------------------------------- checks

# Values the sampler / judge code takes (repeated from genppl.DTYPES, sampling_eval's
# SAMPLER_PRECISIONS and MODEL_DTYPES, judges' KINDS and SPECIAL_TOKENS and
# llada_sampling.REMASKING to keep this module light; tests/eval/test_cli.py checks that
# they agree).
JUDGE_KINDS = ("gpt2", "synthetic")
JUDGE_DTYPES = ("float32", "bfloat16")
MODEL_DTYPES = ("float32", "bfloat16")
SAMPLER_PRECISIONS = ("", "float32", "float64")
SPECIAL_TOKENS = ("", "keep", "skip")
REMASKING = ("low_confidence", "random")
PARAM_SHARDINGS = ("replicated", "fsdp", "rules")

def _sample_count(v) -> None:
  cc.integer()(v)
  if v < 1:
    raise ValueError("must be >= 1: the sample set is empty, and Gen-PPL and entropy need "
                     "at least one sample")


# The value checks of judge_config()'s fields (configs/eval.py and the training config's
# sample_eval section).
JUDGE_CHECKS = (
    ("judge_kind", cc.one_of(*JUDGE_KINDS)),
    ("judge", cc.text),
    ("judge_tokenizer", cc.text),
    ("tokenizer", cc.text),
    ("judge_dtype", cc.one_of(*JUDGE_DTYPES)),
    ("judge_batch", cc.integer(1)),
    ("judge_group_size", cc.integer(1)),
    ("judge_buckets", cc.each(cc.integer(2), nonempty=False, distinct=True)),
    ("clean_up_tokenization_spaces", cc.boolean),
    ("special_tokens", cc.one_of(*SPECIAL_TOKENS)),
    ("noise_removal", cc.text),   # the process's own list, checked with the checkpoint
    ("sampler_precision", cc.one_of(*SAMPLER_PRECISIONS)),
    ("model_dtype", cc.one_of(*MODEL_DTYPES)),
)

# The value checks of configs/eval.py (type, range, finiteness): one line naming the field
# (``config.nfe=(4, -1) entry -1 must be >= 1``). What depends on the checkpoint (the
# length against the model's, NFEs against LLaDA's blocks, the batch against the mesh) is
# checked once the checkpoint's config is read.
EVAL_CONFIG_CHECKS = (
    ("checkpoint", cc.text),
    ("label", cc.text),
    ("nfe", cc.each(cc.integer(1), distinct=True)),
    ("seeds", cc.each(cc.integer(0), distinct=True)),
    ("temperatures", cc.each(cc.number(0.0, lo_open=True), nonempty=False, distinct=True)),
    ("num_samples", _sample_count),
    ("batch", cc.integer(1)),
    ("length", cc.integer(0)),
    ("mesh.param_sharding", cc.one_of(*PARAM_SHARDINGS)),
    ("attention_impl", cc.text),
    ("prompt.tokens", cc.text),
    ("prompt.length", cc.integer(0)),
    ("llada.block_length", cc.integer(0)),
    ("llada.temperature", cc.number(0.0)),
    ("llada.remasking", cc.one_of(*REMASKING)),
    ("llada.cfg_scale", cc.number(0.0)),
    ("write_samples", cc.boolean),
    ("progress", cc.boolean),
) + JUDGE_CHECKS

# The training config's sample_eval section (sample_eval_config()), checked by the hook
# before its judge loads (prefix ``config.sample_eval.``).
SAMPLE_EVAL_CHECKS = (
    ("enabled", cc.boolean),
    ("every", cc.integer(1)),
    ("nfe", cc.each(cc.integer(1), distinct=True)),
    ("num_samples", _sample_count),
    ("batch", cc.integer(1)),
    ("seed", cc.integer(0)),
    ("length", cc.integer(0)),
    ("eval_init", cc.boolean),
    ("progress", cc.boolean),
) + JUDGE_CHECKS


def check_eval_config(config: ml_collections.ConfigDict) -> None:
  """EvalError naming the first field of :data:`EVAL_CONFIG_CHECKS` whose value is
  refused; fields a config lacks are skipped."""
  cc.validate(config, EVAL_CONFIG_CHECKS, EvalError)


def check_sample_eval_config(section: ml_collections.ConfigDict) -> None:
  """The same for the training config's ``sample_eval`` section
  (:data:`SAMPLE_EVAL_CHECKS`, fields named ``config.sample_eval.FIELD``)."""
  cc.validate(section, SAMPLE_EVAL_CHECKS, EvalError, prefix="config.sample_eval.")



def check_int_list(values: Any, field: str, *, minimum: int) -> tuple[int, ...]:
  """A non-empty tuple of distinct ints >= ``minimum`` from a config value (an int alone
  counts as a one-element list; ``--config.nfe=4`` gives an int)."""
  if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
    values = (values,)
  try:
    out = tuple(values)
  except TypeError:
    raise EvalError(f"{field} must be a list of integers, got {values!r}") from None
  if not out:
    raise EvalError(f"{field} is empty; give at least one value")
  for v in out:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
      raise EvalError(f"{field} must hold integers >= {minimum}, got {v!r} in {out}")
  if len(set(out)) != len(out):
    raise EvalError(f"{field} has repeated values: {out}")
  return tuple(int(v) for v in out)


def check_buckets(values: Any, field: str) -> tuple[int, ...]:
  """``judge_buckets``: () (full context only), or distinct ints >= 2."""
  if isinstance(values, (tuple, list)) and not values:
    return ()
  return check_int_list(values, field, minimum=2)


def check_num_samples(num_samples: Any, field: str) -> int:
  """``num_samples`` as an int >= 1 (Gen-PPL and entropy of an empty set are undefined)."""
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
    raise EvalError(f"{field} must be an integer, got {num_samples!r}")
  if num_samples < 1:
    raise EvalError(f"{field}={num_samples}: the sample set is empty; Gen-PPL and entropy "
                    f"need at least one sample")
  return int(num_samples)
