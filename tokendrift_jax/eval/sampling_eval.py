"""Sample-based evaluation: draw unconditional samples at fixed NFEs and judge them.

The reusable core of ``launch/eval.py`` and of the in-training hook (:mod:`.hook`):

* :class:`SampleEvaluator` draws ``num_samples`` samples of a backbone for every
  (NFE, seed) with one cached jitted sampler (:func:`diffusion.make_sampler`; the step
  count is a traced argument, so every NFE reuses one compilation), decodes them and
  scores them with a :class:`Judge`. One result row per (NFE, seed).
* Two judges implement the :class:`Judge` protocol:

  - :class:`GPT2Judge`: decodes token ids with the diffusion tokenizer and scores the
    texts with :class:`genppl.GenPPLEvaluator` (GPT-2 Large by default; the MDLM/DUO
    Gen-PPL protocol, one retokenization call per ``group_size`` texts);
  - :class:`SyntheticJudge`: scores token ids by their exact likelihood under the
    synthetic language of :mod:`tokendrift_jax.data.synthetic` (the offline demo).

Entropy is :func:`eval.entropy.mean_entropy` of the token ids (before decoding), per
(NFE, seed), as DUO's ``record_entropy``.

NFE: the number of denoising steps (``SampleResult.steps``), the paper's convention; rows
also carry ``nfe_model``, the backbone forwards actually made per sampling batch (including
the final noise-removal forward; MDLM's cache can make it smaller), see docs/DIFFUSION.md.

Reproducibility: the samples of batch ``b`` (b = 0, 1, ...) of seed ``s`` at NFE ``n`` come
from the key ``fold_in(fold_in(PRNGKey(s), n), b)`` (:func:`sample_key`), so they depend on
(seed, NFE, batch index, batch size, length) and the weights only, not on the order in which
NFEs or seeds are evaluated, nor on the device count (the samplers draw with the global
shape). When ``num_samples`` is not a multiple of the batch, the last batch is drawn whole
and its first rows are kept.

Vocabulary convention (MDLM/DUO with GPT-2): an MDLM backbone has ``len(tokenizer) + 1``
ids, the mask being the last; a DUO backbone has ``len(tokenizer)`` ids counting the [PAD]
that DUO's tokenizer setup adds (:func:`prepare_tokenizer`): 50258 for both releases.
Anything else is a :class:`EvalError` naming both sizes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.sharding import Mesh

from tokendrift_jax import checkpoints
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import sampling as sampling_lib
from tokendrift_jax.eval import entropy as entropy_lib
from tokendrift_jax.eval import eval_config
from tokendrift_jax.eval import genppl
from tokendrift_jax.models.dit import DiTConfig

JUDGE_KINDS = ("gpt2", "synthetic")
MODEL_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SAMPLER_PRECISIONS = ("", "float32", "float64")
# Fields of the synthetic language (data/synthetic.make_language keyword arguments).
SYNTHETIC_FIELDS = ("seed", "vocab_size", "n_topics", "order", "successors", "topic_vocab_size",
                    "concentration", "floor")


class EvalError(ValueError):
  """A configuration or input problem of the evaluation, reported as one line."""


# ----------------------------------------------------------------------------- config


judge_config = eval_config.judge_config


def check_int_list(values: Any, field: str, *, minimum: int) -> tuple[int, ...]:
  """A non-empty tuple of distinct ints >= ``minimum`` from a config value."""
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


def check_num_samples(num_samples: Any, field: str) -> int:
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
    raise EvalError(f"{field} must be an integer, got {num_samples!r}")
  if num_samples < 1:
    raise EvalError(f"{field}={num_samples}: the sample set is empty; Gen-PPL and entropy "
                    f"need at least one sample")
  return int(num_samples)


# ----------------------------------------------------------------------------- judges


@dataclasses.dataclass(frozen=True)
class JudgeScore:
  """A judge's verdict on one set of samples.

  Attributes:
    gen_ppl: exp(nll_sum / num_tokens).
    nll_sum: summed NLL (nats) of the scored tokens.
    num_tokens: number of scored tokens (the protocol's weight sum for GPT-2).
  """
  gen_ppl: float
  nll_sum: float
  num_tokens: float


class Judge(Protocol):
  """What :class:`SampleEvaluator` needs from a judge.

  Attributes:
    kind: "gpt2" or "synthetic".
    name: what judges (a path, a hub name, a language description).
  """

  kind: str
  name: str

  def decode(self, tokens: np.ndarray) -> list[str] | None:
    """Texts of int32[N, L] token ids, or None when the judge has no text form."""

  def score(self, tokens: np.ndarray, texts: list[str] | None) -> JudgeScore:
    """Gen-PPL of the samples (``tokens`` int32[N, L] and their ``decode``)."""


def expected_vocab_size(arch: str, tokenizer_size: int) -> int:
  """Backbone vocabulary for a tokenizer of ``tokenizer_size`` ids.

  MDLM appends the mask id; DUO has no mask, and ``tokenizer_size`` must then count the
  [PAD] that DUO's ``get_tokenizer`` adds to a tokenizer without one (GPT-2: 50257 + 1;
  :func:`prepare_tokenizer`).
  """
  if arch == "mdlm":
    return tokenizer_size + 1
  if arch == "duo":
    return tokenizer_size
  raise EvalError(f"unknown backbone {arch!r}; expected 'mdlm' or 'duo'")


def prepare_tokenizer(tokenizer, arch: str):
  """The diffusion tokenizer as the backbone's repository set it up.

  DUO sizes its vocabulary as ``len(tokenizer)`` after adding a [PAD] token when there is
  none (its ``dataloader.get_tokenizer``), so a released DUO model has GPT-2's 50257 ids +
  [PAD]; the uniform prior can sample that id, and it decodes to "[PAD]" as in DUO. MDLM's
  mask id is ``len(tokenizer)`` before any such addition (and never survives sampling).
  """
  if arch == "duo" and tokenizer.pad_token is None:
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
  return tokenizer


def check_vocab(arch: str, vocab_size: int, tokenizer_size: int, what: str) -> None:
  want = expected_vocab_size(arch, tokenizer_size)
  if vocab_size != want:
    rule = ("len(tokenizer) + 1, the mask id last" if arch == "mdlm"
            else "len(tokenizer), [PAD] included")
    raise EvalError(
        f"vocabulary mismatch: the {arch} backbone has vocab_size {vocab_size} but {what} "
        f"has {tokenizer_size} tokens; a {arch} backbone needs {rule} = {want}. The "
        f"checkpoint and the tokenizer do not belong together")


def _check_text_ids(tokens: np.ndarray, text_vocab: int, arch: str) -> None:
  """Refuses ids the judge cannot read (a mask left in an MDLM sample)."""
  bad = tokens >= text_vocab
  if bad.any():
    rows = int(bad.any(axis=1).sum())
    hint = (" (masks left by noise_removal='none'; use 'greedy')" if arch == "mdlm" else "")
    raise EvalError(
        f"{int(bad.sum())} sampled ids in {rows} of {tokens.shape[0]} samples are >= "
        f"{text_vocab}, outside the judge's text vocabulary{hint}")


class GPT2Judge:
  """Gen-PPL of decoded samples under a Flax GPT-2 (MDLM/DUO protocol).

  Args:
    judge: a loaded :class:`genppl.Judge`.
    tokenizer: the diffusion model's tokenizer (decodes ids to text).
    arch: "mdlm" | "duo" of the backbone whose samples are judged.
    vocab_size: the backbone's vocabulary (checked against ``tokenizer``).
    max_length: retokenization length; the protocol uses the sample length.
    mesh: mesh of the judge's jitted batches.
    batch_size: chunks per jitted call.
    group_size: texts per retokenization call.
    progress: tqdm bar over judge batches.
  """

  kind = "gpt2"

  def __init__(self, judge: genppl.Judge, tokenizer, *, arch: str, vocab_size: int,
               max_length: int, mesh: Mesh, batch_size: int = 8, group_size: int = 8,
               progress: bool = True):
    tokenizer = prepare_tokenizer(tokenizer, arch)
    check_vocab(arch, int(vocab_size), len(tokenizer),
                f"the diffusion tokenizer {getattr(tokenizer, 'name_or_path', '')!r}")
    if group_size < 1:
      raise EvalError(f"judge_group_size must be >= 1, got {group_size}")
    self.name = judge.name
    self.arch = arch
    self.tokenizer = tokenizer
    self.group_size = int(group_size)
    try:
      # float32 judges run float32 matmuls ("highest": no TF32 on GPUs, as PyTorch's
      # default); a bfloat16 judge keeps XLA's default precision.
      bf16 = jnp.dtype(getattr(judge.module, "dtype", jnp.float32)) == jnp.bfloat16
      self.evaluator = genppl.GenPPLEvaluator(judge, max_length=int(max_length),
                                              batch_size=int(batch_size), mesh=mesh,
                                              matmul_precision=None if bf16 else "highest",
                                              progress=progress)
    except ValueError as e:
      raise EvalError(f"judge_batch: {e}") from e

  def decode(self, tokens: np.ndarray) -> list[str]:
    _check_text_ids(tokens, len(self.tokenizer), self.arch)
    # Special tokens stay in the text (MDLM/DUO batch_decode): an <|endoftext|> in a
    # sample is retokenized to EOS and weighted by the protocol.
    return self.tokenizer.batch_decode(np.asarray(tokens).tolist())

  def score(self, tokens: np.ndarray, texts: list[str] | None) -> JudgeScore:
    del tokens
    if not texts:
      raise EvalError("the sample set is empty; Gen-PPL needs at least one sample")
    r = self.evaluator.score(texts, group_size=self.group_size)
    return JudgeScore(gen_ppl=r.gen_ppl, nll_sum=r.nll_sum, num_tokens=r.weight_sum)


class SyntheticJudge:
  """Exact likelihood of token ids under the synthetic language (the offline demo).

  Gen-PPL = exp(mean per-token NLL over all tokens of all samples)
  (:func:`data.synthetic.gen_ppl`). Samples have no text form (``decode`` gives None).

  Args:
    lang: the language.
    arch: "mdlm" | "duo"; MDLM backbones have ``lang.vocab_size + 1`` ids (mask last),
      DUO backbones ``lang.vocab_size``.
    vocab_size: the backbone's vocabulary.
    progress: tqdm bar over scored chunks.
  """

  kind = "synthetic"
  _CHUNK = 256  # samples per host scoring call (bounds the temporary arrays)

  def __init__(self, lang, *, arch: str, vocab_size: int, progress: bool = True):
    check_vocab(arch, int(vocab_size), lang.vocab_size,
                f"the synthetic language (seed {lang.seed})")
    self.lang = lang
    self.arch = arch
    self.progress = progress
    self.name = (f"synthetic(seed={lang.seed}, V={lang.vocab_size}, K={lang.n_topics}, "
                 f"order={lang.order})")

  def decode(self, tokens: np.ndarray) -> None:
    del tokens
    return None

  def score(self, tokens: np.ndarray, texts: list[str] | None) -> JudgeScore:
    from tokendrift_jax.data import synthetic  # pylint: disable=import-outside-toplevel
    del texts
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
      raise EvalError(f"the sample set is empty (tokens of shape {tokens.shape}); Gen-PPL "
                      f"needs at least one sample")
    _check_text_ids(tokens, self.lang.vocab_size, self.arch)
    nll = []
    for start in tqdm.trange(0, tokens.shape[0], self._CHUNK, desc="synthetic judge",
                             disable=not self.progress, leave=False):
      nll.append(synthetic.nll_per_token(self.lang, tokens[start:start + self._CHUNK]))
    # All samples have length L: sum of per-token NLLs = L * sum of per-sample means.
    nll_sum = float(np.sum(np.concatenate(nll), dtype=np.float64)) * tokens.shape[1]
    num_tokens = float(tokens.size)
    return JudgeScore(gen_ppl=math.exp(nll_sum / num_tokens), nll_sum=nll_sum,
                      num_tokens=num_tokens)


def make_language(cfg: ml_collections.ConfigDict, field: str):
  """The synthetic language described by ``cfg`` (the ``synthetic`` config section)."""
  from tokendrift_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  missing = [f for f in SYNTHETIC_FIELDS if f not in cfg]
  if missing:
    raise EvalError(f"{field} lacks {missing}; it needs {list(SYNTHETIC_FIELDS)}")
  kwargs = {f: cfg[f] for f in SYNTHETIC_FIELDS if f != "seed"}
  try:
    return synthetic.make_language(int(cfg.seed), **kwargs)
  except ValueError as e:
    raise EvalError(f"{field}: {e}") from e


def build_judge(cfg: ml_collections.ConfigDict, *, arch: str, vocab_size: int,
                max_length: int, mesh: Mesh, prefix: str = "config",
                progress: bool = True) -> Judge:
  """Loads the judge that ``cfg`` (fields of :func:`judge_config`) describes.

  Checks, before anything heavy is computed: the judge kind, that the judge weights and
  tokenizers exist (the error says how to convert GPT-2), that the backbone's vocabulary
  fits the tokenizer / language, and that ``judge_batch`` divides over the mesh.

  Args:
    cfg: config section with the judge fields.
    arch: "mdlm" | "duo".
    vocab_size: the backbone's vocabulary.
    max_length: sample length (the GPT-2 retokenization length).
    mesh: mesh of the judge computation.
    prefix: how the section is named in error messages ("config", "config.sample_eval").
    progress: progress bars while scoring.
  """
  kind = str(cfg.judge_kind)
  if kind not in JUDGE_KINDS:
    raise EvalError(f"{prefix}.judge_kind must be one of {JUDGE_KINDS}, got {kind!r}")
  if kind == "synthetic":
    lang = make_language(cfg.synthetic, f"{prefix}.synthetic")
    return SyntheticJudge(lang, arch=arch, vocab_size=vocab_size, progress=progress)
  from tokendrift_jax.data import tokenizer as tok_lib  # pylint: disable=import-outside-toplevel
  if not str(cfg.judge):
    raise EvalError(f"{prefix}.judge is empty; give a converted GPT-2 directory or a hub "
                    f"name (default {genppl.DEFAULT_JUDGE!r})")
  # Cheap checks first: the diffusion tokenizer and the vocabulary before the judge weights.
  diffusion_tok = prepare_tokenizer(
      tok_lib.load_tokenizer(str(cfg.tokenizer), field=f"{prefix}.tokenizer"), arch)
  check_vocab(arch, int(vocab_size), len(diffusion_tok),
              f"the diffusion tokenizer {prefix}.tokenizer={str(cfg.tokenizer)!r}")
  if str(cfg.judge_dtype) not in genppl.DTYPES:
    raise EvalError(f"{prefix}.judge_dtype must be one of {sorted(genppl.DTYPES)}, got "
                    f"{cfg.judge_dtype!r}")
  loaded = genppl.load_judge(str(cfg.judge), str(cfg.judge_tokenizer) or None,
                             dtype=str(cfg.judge_dtype), config_field=f"{prefix}.judge")
  return GPT2Judge(loaded, diffusion_tok, arch=arch, vocab_size=vocab_size,
                   max_length=max_length, mesh=mesh, batch_size=int(cfg.judge_batch),
                   group_size=int(cfg.judge_group_size), progress=progress)


# ----------------------------------------------------------------------------- sampling


def sample_key(seed: int, nfe: int, batch_index: int) -> jax.Array:
  """The sampler key of batch ``batch_index`` of ``seed`` at ``nfe`` steps."""
  key = jax.random.PRNGKey(int(seed))
  return jax.random.fold_in(jax.random.fold_in(key, int(nfe)), int(batch_index))


@dataclasses.dataclass
class Evaluation:
  """Result of :meth:`SampleEvaluator.evaluate`.

  Attributes:
    rows: one dict per (NFE, seed) with nfe, seed, gen_ppl, entropy, num_samples,
      nfe_model (mean backbone forwards per sampling batch), nll_sum, num_tokens,
      sample_time_s, score_time_s.
    samples: one dict per sample (nfe, seed, index, text, token_ids), or None.
  """
  rows: list[dict]
  samples: list[dict] | None


class SampleEvaluator:
  """Samples a backbone at several NFEs and seeds and judges the samples.

  Args:
    model_cfg: the backbone architecture.
    process: its diffusion process (``diffusion.make_process``).
    judge: a :class:`Judge`.
    mesh: the device mesh; ``batch`` must divide over its batch shards.
    batch: samples per sampler call (global, over all devices).
    length: sample length (default and maximum: ``model_cfg.length``).
    noise_removal: None / "" = the backbone's default.
    sampler_precision: None / "" = the backbone's default, or "float32" / "float64".
    model_dtype: backbone compute dtype ("float32" or "bfloat16").
    attention_impl: passed to the DiT ("" / None = XLA's choice).
    progress: tqdm bar over sampling batches.
    prefix: config prefix named in error messages.
  """

  def __init__(self, model_cfg: DiTConfig, process, judge: Judge, *, mesh: Mesh, batch: int,
               length: int | None = None, noise_removal: str | None = None,
               sampler_precision: str | None = None, model_dtype: str = "float32",
               attention_impl: str | None = None, progress: bool = True,
               prefix: str = "config"):
    length = model_cfg.length if not length else int(length)
    if not 1 <= length <= model_cfg.length:
      raise EvalError(f"{prefix}.length={length} must be in [1, {model_cfg.length}] (the "
                      f"backbone's length)")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
      raise EvalError(f"{prefix}.batch must be a positive integer, got {batch!r}")
    try:
      sharding.check_batch_divisible(int(batch), mesh, f"{prefix}.batch")
    except ValueError as e:
      raise EvalError(str(e)) from e
    if model_dtype not in MODEL_DTYPES:
      raise EvalError(f"{prefix}.model_dtype must be one of {sorted(MODEL_DTYPES)}, got "
                      f"{model_dtype!r}")
    sampler_precision = sampler_precision or ""
    if sampler_precision not in SAMPLER_PRECISIONS:
      raise EvalError(f"{prefix}.sampler_precision must be one of {SAMPLER_PRECISIONS}, got "
                      f"{sampler_precision!r}")
    float64 = None if not sampler_precision else sampler_precision == "float64"
    if process.vocab_size != model_cfg.vocab_size:
      raise EvalError(f"the process has vocab_size {process.vocab_size} but the backbone "
                      f"{model_cfg.vocab_size}")
    self.model_cfg, self.process, self.judge, self.mesh = model_cfg, process, judge, mesh
    self.batch, self.length, self.progress = int(batch), length, progress
    self.noise_removal = noise_removal or sampling_lib.DEFAULT_NOISE_REMOVAL[process.name]
    self.float64 = (sampling_lib.DEFAULT_FLOAT64[process.name] if float64 is None else float64)
    gdef = checkpoints.graphdef(model_cfg, dtype=MODEL_DTYPES[model_dtype],
                                attention_impl=attention_impl or None)

    def apply_fn(params, x, sigma):
      return checkpoints.merge(gdef, params)(x, sigma)

    try:
      # One jitted sampler for every NFE: the step count is a traced argument.
      self._sampler = sampling_lib.make_sampler(
          process, apply_fn, batch=self.batch, length=length, noise_removal=self.noise_removal,
          cache=True, float64=self.float64, mesh=mesh)
    except ValueError as e:
      raise EvalError(f"{prefix}: {e}") from e

  def sample(self, params, nfe: int, seed: int, num_samples: int, bar=None
             ) -> tuple[np.ndarray, list[int]]:
    """int32[num_samples, length] samples and the backbone forwards of each batch."""
    n_batches = math.ceil(num_samples / self.batch)
    tokens, forwards = [], []
    for b in range(n_batches):
      res = self._sampler(params, sample_key(seed, nfe, b), int(nfe))
      tokens.append(sharding.to_host(res.tokens))
      forwards.append(int(jax.device_get(res.nfe_model)))
      if bar is not None:
        bar.update(1)
    return np.concatenate(tokens)[:num_samples].astype(np.int32), forwards

  def evaluate(self, params, nfes: Sequence[int], seeds: Sequence[int], num_samples: int,
               *, keep_samples: bool = True, skip: Sequence[tuple[int, int]] = (),
               on_row=None) -> Evaluation:
    """Samples and scores every (NFE, seed); NFE-major order.

    Args:
      params: backbone parameters (placed on the mesh or on the host).
      nfes: denoising step counts.
      seeds: sampling seeds.
      num_samples: samples per (NFE, seed).
      keep_samples: return the samples (text and ids) as well.
      skip: (nfe, seed) pairs not to evaluate (already done by an interrupted run); every
        process must pass the same pairs.
      on_row: called as ``on_row(row, samples)`` after each (NFE, seed), with that pair's
        samples (None unless ``keep_samples``), so a caller can save progress.
    """
    skip = {(int(n), int(s)) for n, s in skip}
    nfes = check_int_list(nfes, "nfe", minimum=1)
    seeds = check_int_list(seeds, "seeds", minimum=0)
    num_samples = check_num_samples(num_samples, "num_samples")
    n_batches = math.ceil(num_samples / self.batch)
    rows, samples = [], ([] if keep_samples else None)
    bar = tqdm.tqdm(total=len(nfes) * len(seeds) * n_batches, desc="sampling", unit="batch",
                    disable=not self.progress, dynamic_ncols=True)
    try:
      for nfe in nfes:
        for seed in seeds:
          if (nfe, seed) in skip:
            bar.update(n_batches)
            continue
          bar.set_description(f"sampling NFE={nfe} seed={seed}")
          t0 = time.time()
          tokens, forwards = self.sample(params, nfe, seed, num_samples, bar)
          t1 = time.time()
          texts = self.judge.decode(tokens)
          score = self.judge.score(tokens, texts)
          ent = entropy_lib.mean_entropy(tokens)
          t2 = time.time()
          rows.append(dict(nfe=nfe, seed=seed, gen_ppl=score.gen_ppl, entropy=ent,
                           num_samples=int(tokens.shape[0]),
                           nfe_model=float(np.mean(forwards)), nll_sum=score.nll_sum,
                           num_tokens=score.num_tokens, sample_time_s=t1 - t0,
                           score_time_s=t2 - t1))
          mine = None
          if keep_samples:
            mine = [dict(nfe=nfe, seed=seed, index=i, text=None if texts is None else texts[i],
                         token_ids=tokens[i].tolist()) for i in range(tokens.shape[0])]
            samples.extend(mine)
          if on_row is not None:
            on_row(rows[-1], mine)
    finally:
      bar.close()
    return Evaluation(rows=rows, samples=samples)
