"""Judges: what scores a set of samples, as named metrics.

One small interface, :class:`Judge` (``kind``, ``name``, ``settings``, ``metrics``,
``decode``, ``score``): ``score`` yields a mapping metric name -> value (the names listed in
``metrics``), and the evaluator's rows carry those names as they are. Both judges here
yield ``gen_ppl`` (exp(nll_sum / num_tokens)), ``nll_sum`` and ``num_tokens``, the names
results.json, eval.jsonl and :mod:`.report` read. Its two implementations:

* :class:`GPT2Judge`: decodes token ids with the diffusion tokenizer and scores the texts
  with :class:`genppl.GenPPLEvaluator` (GPT-2 Large by default; the MDLM/DUO Gen-PPL
  protocol, Sec. 4.1 of the paper, one retokenization call per ``group_size`` texts);
* :class:`SyntheticJudge`: scores token ids by their exact likelihood under the synthetic
  language of :mod:`tokendrift_jax.data.synthetic` (the offline demo).

:func:`build_judge` loads the judge a config section describes (configs/eval.py, or the
training config's ``sample_eval``); :func:`label` is its short name on plot axes and
:func:`info` what results.json records about it.

Vocabulary: which ids of the backbone are text is the diffusion process's rule
(``process.text_vocab_size``: MDLM ``len(tokenizer) + 1`` ids with the mask last, DUO
``len(tokenizer)`` ids counting the [PAD] its ``process.prepare_tokenizer`` adds). When the
mask is one of the tokenizer's own ids (LLaDA: ``<|mdm_mask|>`` = 126336), the embedding
may be padded beyond the tokenizer (LLaDA-8B: 126464 rows for a smaller tokenizer), so
there the tokenizer may be smaller than the backbone but must hold the mask id; a sampled
id the tokenizer does not have is refused when decoding. A tokenizer or synthetic language
that does not fit is an :class:`EvalError` naming both sizes.

Conditional judging (prompted LLaDA samples): ``score(tokens, texts, prompts)`` with the
prompts' texts scores each completion given its prompt (:meth:`genppl.GenPPLEvaluator.score`).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import ml_collections
import numpy as np
import tqdm

from tokendrift_jax.eval import eval_config
from tokendrift_jax.eval.eval_config import EvalError

if TYPE_CHECKING:
  from jax.sharding import Mesh

  from tokendrift_jax.eval import genppl

# GPT-2 (transformers, jax) is imported only when a GPT-2 judge is built, so that reading
# results (launch/compare.py uses :func:`label`) stays light.

KINDS = ("gpt2", "synthetic")


# What both judges here yield (results.json rows and report.summarize read these names).
GEN_PPL_METRICS = ("gen_ppl", "nll_sum", "num_tokens")


def perplexity_metrics(nll_sum: float, num_tokens: float) -> dict[str, float]:
  """``{gen_ppl: exp(nll_sum / num_tokens), nll_sum, num_tokens}`` (NLL in nats; the token
  count is the protocol's weight sum for GPT-2)."""
  return {"gen_ppl": math.exp(nll_sum / num_tokens), "nll_sum": float(nll_sum),
          "num_tokens": float(num_tokens)}


class Judge(Protocol):
  """What :class:`sampling_eval.SampleEvaluator` needs from a judge.

  Attributes:
    kind: one of :data:`KINDS` (or a judge's own kind).
    name: what judges (a path, a hub name, a language description).
    settings: further settings recorded in results.json (see :func:`info`).
    metrics: the names :meth:`score` yields.
  """

  kind: str
  name: str
  settings: dict
  metrics: tuple[str, ...]

  def decode(self, tokens: np.ndarray) -> list[str] | None:
    """Texts of int32[N, L] token ids, or None when the judge has no text form."""

  def score(self, tokens: np.ndarray, texts: list[str] | None,
            prompts: list[str] | None = None) -> Mapping[str, float]:
    """``{metric name: value}`` of the samples (``tokens`` int32[N, L] and their
    ``decode``); with ``prompts`` (the decoded prompt of each sample), of each completion
    given its prompt."""


def label(judge: Judge | Mapping[str, Any]) -> str:
  """The judge's short name on plot axes ("gpt2-large", "synthetic language").

  Args:
    judge: a :class:`Judge`, or the ``judge`` entry of a results.json (:func:`info`).
  """
  if isinstance(judge, Mapping):
    kind, name = judge.get("kind"), str(judge.get("name", ""))
  else:
    kind, name = judge.kind, str(judge.name)
  if kind == "synthetic":
    return "synthetic language"
  return os.path.basename(name.rstrip("/")) or name


def info(judge: Judge) -> dict:
  """What results.json (and the resume fingerprint) records about the judge."""
  return {"kind": judge.kind, "name": judge.name, **judge.settings}


# ----------------------------------------------------------------------------- vocabulary


def _vocab_rule(process) -> str:
  """How a backbone of ``process`` is sized from its tokenizer, for error messages."""
  if process.text_vocab_size == process.vocab_size:
    return ("len(tokenizer), [PAD] included" if process.mask_id is None
            else "len(tokenizer), the mask one of its ids")
  return "len(tokenizer) + 1, the mask id last"


def mask_is_a_token(process) -> bool:
  """Whether the mask is one of the tokenizer's own ids (LLaDA), not an id appended after
  them (MDLM) nor absent (DUO): then the embedding may be padded past the tokenizer."""
  return process.mask_id is not None and process.text_vocab_size == process.vocab_size


def check_vocab(process, tokenizer_size: int, what: str) -> None:
  """Refuses a tokenizer / language whose ids are not the process's text ids.

  Args:
    process: the backbone's diffusion process (``.name``, ``.vocab_size``,
      ``.text_vocab_size``, ``.mask_id``).
    tokenizer_size: ids of the tokenizer (after ``process.prepare_tokenizer``) or of the
      synthetic language.
    what: names the tokenizer in the message.
  """
  if tokenizer_size == process.text_vocab_size:
    return
  if mask_is_a_token(process):
    if process.mask_id < tokenizer_size <= process.vocab_size:
      return  # a padded embedding (LLaDA-8B: 126464 rows)
    raise EvalError(
        f"vocabulary mismatch: the {process.name} backbone has vocab_size "
        f"{process.vocab_size} with the mask id {process.mask_id} among the tokenizer's ids, "
        f"but {what} has {tokenizer_size} tokens; it needs more than {process.mask_id} "
        f"(the mask must be one of them) and at most {process.vocab_size}. The checkpoint "
        f"and the tokenizer do not belong together")
  # The backbone size that this tokenizer would need under the process's rule.
  want = tokenizer_size + (process.vocab_size - process.text_vocab_size)
  raise EvalError(
      f"vocabulary mismatch: the {process.name} backbone has vocab_size {process.vocab_size} "
      f"but {what} has {tokenizer_size} tokens; a {process.name} backbone needs "
      f"{_vocab_rule(process)} = {want}. The checkpoint and the tokenizer do not belong "
      f"together")


def check_text_ids(tokens: np.ndarray, process, num_ids: int | None = None) -> None:
  """Refuses ids the judge cannot read: a mask left in an MDLM sample (LLaDA's mask is a
  token of its tokenizer and decodes), or an id past the tokenizer in a padded embedding.

  Args:
    tokens: int[N, L] sampled ids.
    process: the backbone's diffusion process.
    num_ids: ids the diffusion tokenizer has (default ``process.text_vocab_size``).
  """
  limit = process.text_vocab_size if num_ids is None else min(num_ids, process.text_vocab_size)
  bad = tokens >= limit
  if bad.any():
    rows = int(bad.any(axis=1).sum())
    if limit < process.text_vocab_size:
      hint = (f" (ids of the padded embedding rows {limit}..{process.vocab_size - 1} that "
              f"the tokenizer does not have; no training target is ever one, so a trained "
              f"backbone gives them no mass)")
    elif process.mask_id is not None:
      hint = " (masks left by noise_removal='none'; use 'greedy')"
    else:
      hint = ""
    raise EvalError(
        f"{int(bad.sum())} sampled ids in {rows} of {tokens.shape[0]} samples are >= "
        f"{limit}, outside the judge's text vocabulary{hint}")


# ----------------------------------------------------------------------------- decoding


SPECIAL_TOKENS = ("keep", "skip")


def decode_texts(tokenizer, tokens: np.ndarray, *, clean_up_tokenization_spaces: bool,
                 skip_special_tokens: bool = False) -> list[str]:
  """The texts of sampled ids int[N, L], as the released evaluations decode them.

  MDLM and DUO call plain ``tokenizer.batch_decode(samples)``: special tokens stay in the
  text (an <|endoftext|> is retokenized to EOS and weighted by the protocol), and under
  their pinned transformers 4.38 the default ``clean_up_tokenization_spaces=True`` then
  removes the space before . , ? ! and the contractions 's 'm 've 're n't. transformers
  >= 4.45 defaults to False, so the choice is passed explicitly here. LLaDA's
  ``generate.py`` decodes with ``skip_special_tokens=True`` (its EOS / EoT padding and any
  committed mask drop out of the text).
  """
  return tokenizer.batch_decode(np.asarray(tokens).tolist(),
                                skip_special_tokens=bool(skip_special_tokens),
                                clean_up_tokenization_spaces=bool(clean_up_tokenization_spaces))


# ----------------------------------------------------------------------------- judges


class GPT2Judge:
  """Gen-PPL of decoded samples under a Flax GPT-2 (MDLM/DUO protocol).

  Args:
    model: a loaded :class:`genppl.GPT2Model`.
    tokenizer: the diffusion model's tokenizer (decodes ids to text); prepared here with
      ``process.prepare_tokenizer`` and checked against the backbone's vocabulary.
    process: the diffusion process of the backbone whose samples are judged.
    max_length: retokenization length; the protocol uses the sample length (for
      conditional judging: the completion's length).
    mesh: mesh of the judge's jitted batches.
    batch_size: chunks per jitted call.
    group_size: texts per retokenization call.
    buckets: chunk widths below the judge's context (:class:`genppl.GenPPLEvaluator`).
    clean_up_tokenization_spaces: decode as transformers 4.38 did by default (True, the
      released evaluations) or raw (False); see :func:`decode_texts`.
    skip_special_tokens: drop special tokens when decoding (LLaDA's generate.py) or keep
      them (MDLM/DUO).
    progress: tqdm bar over judge batches.
    settings: recorded in results.json beside kind and name.
  """

  kind = "gpt2"
  metrics = GEN_PPL_METRICS

  def __init__(self, model: genppl.GPT2Model, tokenizer, *, process, max_length: int,
               mesh: Mesh, batch_size: int = 8, group_size: int = 8,
               buckets: tuple[int, ...] = (), clean_up_tokenization_spaces: bool = True,
               skip_special_tokens: bool = False, progress: bool = True,
               settings: dict | None = None):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from tokendrift_jax.eval import genppl  # pylint: disable=import-outside-toplevel
    tokenizer = process.prepare_tokenizer(tokenizer)
    check_vocab(process, len(tokenizer),
                f"the diffusion tokenizer {getattr(tokenizer, 'name_or_path', '')!r}")
    if group_size < 1:
      raise EvalError(f"judge_group_size must be >= 1, got {group_size}")
    self.name = model.name
    self.process = process
    self.tokenizer = tokenizer
    self.num_ids = len(tokenizer)
    self.group_size = int(group_size)
    self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
    self.skip_special_tokens = bool(skip_special_tokens)
    self.settings = dict(settings or {})
    try:
      # float32 judges run float32 matmuls ("highest": no TF32 on GPUs, as PyTorch's
      # default); a bfloat16 judge keeps XLA's default precision.
      bf16 = jnp.dtype(getattr(model.module, "dtype", jnp.float32)) == jnp.bfloat16
      self.scorer = genppl.GenPPLEvaluator(model, max_length=int(max_length),
                                           batch_size=int(batch_size), mesh=mesh,
                                           buckets=tuple(buckets),
                                           matmul_precision=None if bf16 else "highest",
                                           progress=progress)
    except ValueError as e:
      raise EvalError(f"judge_batch: {e}") from e

  def decode(self, tokens: np.ndarray) -> list[str]:
    check_text_ids(tokens, self.process, self.num_ids)
    return decode_texts(self.tokenizer, tokens,
                        clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
                        skip_special_tokens=self.skip_special_tokens)

  def score(self, tokens: np.ndarray, texts: list[str] | None,
            prompts: list[str] | None = None) -> dict[str, float]:
    """Gen-PPL under GPT-2: ``gen_ppl``, ``nll_sum``, ``num_tokens`` (the protocol's weight
    sum)."""
    del tokens
    if not texts:
      raise EvalError("the sample set is empty; Gen-PPL needs at least one sample")
    try:
      r = self.scorer.score(texts, group_size=self.group_size, prompts=prompts)
    except ValueError as e:
      raise EvalError(f"Gen-PPL: {e}") from e
    return {"gen_ppl": float(r.gen_ppl), "nll_sum": float(r.nll_sum),
            "num_tokens": float(r.weight_sum)}


class SyntheticJudge:
  """Exact likelihood of token ids under the synthetic language (the offline demo).

  Gen-PPL = exp(mean per-token NLL over all tokens of all samples)
  (:func:`data.synthetic.nll_per_token`). Samples have no text form (``decode`` gives None).

  Args:
    lang: the language (``data.synthetic.SyntheticLanguage``).
    process: the backbone's diffusion process; its text ids must be the language's
      (MDLM: ``lang.vocab_size + 1`` ids with the mask last; DUO: ``lang.vocab_size``).
    progress: tqdm bar over scored chunks.
    settings: recorded in results.json beside kind and name.
  """

  kind = "synthetic"
  metrics = GEN_PPL_METRICS
  _CHUNK = 256  # samples per host scoring call (bounds the temporary arrays)

  def __init__(self, lang, *, process, progress: bool = True, settings: dict | None = None):
    check_vocab(process, lang.vocab_size, f"the synthetic language (seed {lang.seed})")
    self.lang = lang
    self.process = process
    self.progress = progress
    self.settings = dict(settings or {})
    self.name = (f"synthetic(seed={lang.seed}, V={lang.vocab_size}, K={lang.n_topics}, "
                 f"order={lang.order})")

  def decode(self, tokens: np.ndarray) -> None:
    del tokens
    return None

  def score(self, tokens: np.ndarray, texts: list[str] | None,
            prompts: list[str] | None = None) -> dict[str, float]:
    """The exact NLL under the language: ``gen_ppl``, ``nll_sum``, ``num_tokens``."""
    from tokendrift_jax.data import synthetic  # pylint: disable=import-outside-toplevel
    del texts
    if prompts is not None:
      raise EvalError("the synthetic judge scores whole sequences; conditional judging "
                      "(config.prompt) needs the GPT-2 judge (judge_kind='gpt2')")
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
      raise EvalError(f"the sample set is empty (tokens of shape {tokens.shape}); Gen-PPL "
                      f"needs at least one sample")
    check_text_ids(tokens, self.process)
    nll = []
    for start in tqdm.trange(0, tokens.shape[0], self._CHUNK, desc="synthetic judge",
                             disable=not self.progress, leave=False):
      nll.append(synthetic.nll_per_token(self.lang, tokens[start:start + self._CHUNK]))
    # All samples have length L: sum of per-token NLLs = L * sum of per-sample means.
    nll_sum = float(np.sum(np.concatenate(nll), dtype=np.float64)) * tokens.shape[1]
    num_tokens = float(tokens.size)
    return perplexity_metrics(nll_sum, num_tokens)


# ----------------------------------------------------------------------------- building


def build_judge(cfg: ml_collections.ConfigDict, *, process, max_length: int, mesh: Mesh,
                family=None, prefix: str = "config", progress: bool = True) -> Judge:
  """Loads the judge that ``cfg`` (fields of :func:`eval_config.judge_config`) describes.

  Checks, before anything heavy is computed: the judge kind, that the judge weights and
  tokenizers exist (the error says how to convert GPT-2), that the backbone's vocabulary
  fits the tokenizer / language, and that ``judge_batch`` divides over the mesh.

  Args:
    cfg: config section with the judge fields.
    process: the diffusion process of the backbone to judge (its vocabulary rule).
    max_length: sample length (the GPT-2 retokenization length; of prompted samples, the
      completion's length).
    mesh: mesh of the judge computation.
    family: the backbone's ``models.base.Family``; its ``tokenizer`` and
      ``skip_special_tokens`` are the defaults of ``cfg.tokenizer = ""`` and
      ``cfg.special_tokens = ""``.
    prefix: how the section is named in error messages ("config", "config.sample_eval").
    progress: progress bars while scoring.
  """
  kind = str(cfg.judge_kind)
  if kind not in KINDS:
    raise EvalError(f"{prefix}.judge_kind must be one of {KINDS}, got {kind!r}")
  if kind == "synthetic":
    from tokendrift_jax.data import synthetic  # pylint: disable=import-outside-toplevel
    try:
      lang = synthetic.language_from_config(cfg.synthetic)
    except ValueError as e:
      raise EvalError(f"{prefix}.synthetic: {e}") from e
    return SyntheticJudge(lang, process=process, progress=progress,
                          settings=synthetic.language_fields(cfg.synthetic))
  from tokendrift_jax.data import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.eval import genppl  # pylint: disable=import-outside-toplevel
  if not str(cfg.judge):
    raise EvalError(f"{prefix}.judge is empty; give a converted GPT-2 directory or a hub "
                    f"name (default {genppl.DEFAULT_JUDGE!r})")
  cleanup = cfg.clean_up_tokenization_spaces
  if not isinstance(cleanup, bool):
    raise EvalError(f"{prefix}.clean_up_tokenization_spaces must be True or False, got "
                    f"{cleanup!r}")
  buckets = eval_config.check_buckets(cfg.judge_buckets, f"{prefix}.judge_buckets")
  special = str(cfg.get("special_tokens", ""))
  if special not in ("",) + SPECIAL_TOKENS:
    raise EvalError(f"{prefix}.special_tokens must be one of {('',) + SPECIAL_TOKENS} (\"\" = "
                    f"as the backbone family's released code decodes), got {special!r}")
  skip_special = (special == "skip" if special else
                  bool(getattr(family, "skip_special_tokens", False)))
  tokenizer_name = str(cfg.tokenizer) or str(getattr(family, "tokenizer", ""))
  if not tokenizer_name:
    raise EvalError(f"{prefix}.tokenizer is empty and the backbone family "
                    f"{getattr(family, 'name', None)!r} names no default tokenizer; give the "
                    f"diffusion tokenizer's directory")
  # Cheap checks first: the diffusion tokenizer and the vocabulary before the judge weights.
  diffusion_tok = process.prepare_tokenizer(
      tok_lib.load_tokenizer(tokenizer_name, field=f"{prefix}.tokenizer"))
  check_vocab(process, len(diffusion_tok),
              f"the diffusion tokenizer {prefix}.tokenizer={tokenizer_name!r}")
  if str(cfg.judge_dtype) not in genppl.DTYPES:
    raise EvalError(f"{prefix}.judge_dtype must be one of {sorted(genppl.DTYPES)}, got "
                    f"{cfg.judge_dtype!r}")
  model = genppl.load_gpt2(str(cfg.judge), str(cfg.judge_tokenizer) or None,
                           dtype=str(cfg.judge_dtype), config_field=f"{prefix}.judge")
  settings = dict(dtype=str(cfg.judge_dtype), group_size=int(cfg.judge_group_size),
                  tokenizer=tokenizer_name,
                  judge_tokenizer=str(cfg.judge_tokenizer) or model.name,
                  clean_up_tokenization_spaces=cleanup,
                  special_tokens="skip" if skip_special else "keep", buckets=list(buckets),
                  # MDLM's compute_generative_perplexity and DUO's
                  # record_generative_perplexity score N // b full batches of b texts per
                  # call (b = 8 / eval_ppl_batch_size) and drop a partial last batch; here
                  # every text is scored (docs/EVALUATION.md).
                  partial_batches="scored")
  return GPT2Judge(model, diffusion_tok, process=process, max_length=max_length, mesh=mesh,
                   batch_size=int(cfg.judge_batch), group_size=int(cfg.judge_group_size),
                   buckets=buckets, clean_up_tokenization_spaces=cleanup,
                   skip_special_tokens=skip_special, progress=progress, settings=settings)

