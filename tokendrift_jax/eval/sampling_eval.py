"""Sample-based evaluation: draw samples at fixed NFEs and judge them.

Samples are unconditional, or (LLaDA backbones) completions of given prompts, judged as
completions given their prompts (docs/EVALUATION.md, "Conditional judging").

The reusable core of ``launch/eval.py`` (:mod:`.cli`) and of the in-training hook
(:mod:`.hook`): :class:`SampleEvaluator` draws ``num_samples`` samples of a backbone for
every (NFE, seed) with one cached jitted sampler (:func:`diffusion.make_sampler`; the step
count is a traced argument, so every NFE reuses one compilation), decodes them and scores
them with a :class:`judges.Judge`. One result row per (NFE, seed). Entropy is
:func:`eval.entropy.mean_entropy` of the token ids (before decoding), per (NFE, seed), as
DUO's ``record_entropy``.

Counts (one name each, in code, rows and docs):

* ``nfe``: the number of denoising steps (``SampleResult.steps``), the paper's convention;
* ``nfe_model``: the backbone forwards actually made per sampling batch (including the
  final noise-removal forward; MDLM's cache can make it smaller), see docs/DIFFUSION.md;
* ``num_samples``: samples per (NFE, seed).

Reproducibility: the samples of batch ``b`` (b = 0, 1, ...) of seed ``s`` at NFE ``n`` come
from the key ``fold_in(fold_in(PRNGKey(s), n), b)`` (:func:`sample_key`), so they depend on
(seed, NFE, batch index, batch size, length) and the weights only, not on the order in which
NFEs or seeds are evaluated, nor on the device count (the samplers draw with the global
shape). When ``num_samples`` is not a multiple of the batch, the last batch is drawn whole
and its first rows are kept.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import Mesh

from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import llada_sampling
from tokendrift_jax.diffusion import sampling as sampling_lib
from tokendrift_jax.eval import entropy as entropy_lib
from tokendrift_jax.eval import judges
from tokendrift_jax.eval.eval_config import EvalError, check_int_list, check_num_samples

MODEL_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SAMPLER_PRECISIONS = ("", "float32", "float64")


def sample_key(seed: int, nfe: int, batch_index: int) -> jax.Array:
  """The sampler key of batch ``batch_index`` of ``seed`` at ``nfe`` steps."""
  key = jax.random.PRNGKey(int(seed))
  return jax.random.fold_in(jax.random.fold_in(key, int(nfe)), int(batch_index))


@dataclasses.dataclass
class Evaluation:
  """Result of :meth:`SampleEvaluator.evaluate`.

  Attributes:
    rows: one dict per (NFE, seed) with nfe, seed, the judge's metrics (``judge.score``'s
      names: gen_ppl, nll_sum, num_tokens for the judges here), entropy, num_samples,
      nfe_model (mean backbone forwards per sampling batch), temperature, sample_time_s,
      score_time_s, and the process's ``sample_metrics`` (LLaDA: masks_left).
    samples: one dict per sample (nfe, seed, index, text, token_ids), or None.
  """
  rows: list[dict]
  samples: list[dict] | None


def check_llada_nfes(nfes: Sequence[int], gen_length: int, block_length: int,
                     prefix: str = "config") -> tuple[int, ...]:
  """The NFEs of a LLaDA evaluation, after generate.py's checks: ``block_length`` divides
  ``gen_length`` and every NFE is a multiple of the number of blocks (EvalError naming the
  field otherwise). Cheap: callers run it before loading anything."""
  nfes = check_int_list(nfes, f"{prefix}.nfe", minimum=1)
  if (isinstance(block_length, bool) or not isinstance(block_length, int)
      or not 1 <= block_length <= gen_length or gen_length % block_length):
    raise EvalError(f"{prefix}.llada.block_length={block_length!r} must divide the sample "
                    f"length {gen_length}")
  for n in nfes:
    try:
      llada_sampling.check_steps(n, gen_length, block_length)
    except ValueError as e:
      raise EvalError(f"{prefix}.nfe: {e}") from e
  return nfes


class SampleEvaluator:
  """Samples a backbone at several NFEs and seeds and judges the samples.

  Args:
    model_cfg: the backbone architecture (any registered family's config).
    process: its diffusion process (``diffusion.make_process_for_model``).
    judge: a :class:`judges.Judge`.
    mesh: the device mesh; ``batch`` must divide over its batch shards.
    batch: samples per sampler call (global, over all devices).
    length: sample length (default and maximum: ``model_cfg.length``).
    noise_removal: None / "" = the process's default.
    sampler_precision: None / "" = the process's default, or "float32" / "float64".
    model_dtype: backbone compute dtype ("float32" or "bfloat16").
    attention_impl: passed to the backbone ("" / None = XLA's choice).
    progress: tqdm bar over sampling batches.
    prefix: config prefix named in error messages.
    sampler_options: ``temperature`` (every process: MDLM/DUO draw each step from
      p_x0^(1/τ), default 1; LLaDA: generate.py's, default
      ``LLaDAProcess.unconditional_temperature``); LLaDA only: generate.py's
      ``block_length`` (0 / None = length), ``remasking``, ``cfg_scale``
      (:func:`llada_sampling.make_generate`).
    prompt_length: P > 0 draws prompt-conditioned samples (LLaDA only): every sample
      completes a given prompt of P tokens with ``length`` tokens (P + length at most the
      backbone's length); :meth:`evaluate` then takes the prompts.
  """

  def __init__(self, model_cfg, process, judge: judges.Judge, *, mesh: Mesh, batch: int,
               length: int | None = None, noise_removal: str | None = None,
               sampler_precision: str | None = None, model_dtype: str = "float32",
               attention_impl: str | None = None, progress: bool = True,
               prefix: str = "config", sampler_options: dict | None = None,
               prompt_length: int = 0):
    prompt_length = int(prompt_length)
    room = model_cfg.length - prompt_length
    length = room if not length else int(length)
    if prompt_length and not 1 <= prompt_length < model_cfg.length:
      raise EvalError(f"{prefix}.prompt.length={prompt_length} must be in [1, "
                      f"{model_cfg.length - 1}] (the backbone's length is {model_cfg.length})")
    if not 1 <= length <= room:
      raise EvalError(f"{prefix}.length={length} must be in [1, {room}] (the backbone's "
                      f"length {model_cfg.length}"
                      + (f" minus the prompt's {prompt_length})" if prompt_length else ")"))
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
    options = {k: v for k, v in dict(sampler_options or {}).items() if v is not None}
    if prompt_length and not process.prompted:
      raise EvalError(f"{prefix}: prompt-conditioned sampling is built for LLaDA backbones "
                      f"only (this one is sampled by the {process.name} sampler)")
    try:
      # The process fills in its own defaults (LLaDA: temperature, one block) and refuses
      # options its sampler does not take.
      options = process.sampler_options(options, length)
    except ValueError as e:
      raise EvalError(f"{prefix}: {e}") from e
    self.model_cfg, self.process, self.judge, self.mesh = model_cfg, process, judge, mesh
    self.batch, self.length, self.progress = int(batch), length, progress
    self.prompt_length, self.prefix = prompt_length, prefix
    self.noise_removal = noise_removal or process.default_noise_removal
    self.float64 = process.default_float64 if float64 is None else float64
    self.block_length = options.get("block_length")
    self.sampler_options = options
    self.temperature = float(options.get("temperature", 1.0))
    gdef = models.graphdef(model_cfg, dtype=MODEL_DTYPES[model_dtype],
                           attention_impl=attention_impl or None)

    def apply_fn(params, x, sigma):
      return models.merge(gdef, params)(x, sigma)

    try:
      # One jitted sampler for every NFE: the step count is a traced argument.
      if prompt_length:
        self._generate = process.make_generate(
            apply_fn, batch=self.batch, prompt_length=prompt_length, gen_length=length,
            float64=self.float64, mesh=mesh, **options)
        self._sampler = None
      else:
        self._sampler = sampling_lib.make_sampler(
            process, apply_fn, batch=self.batch, length=length,
            noise_removal=self.noise_removal, cache=True, float64=self.float64, mesh=mesh,
            **options)
    except (TypeError, ValueError) as e:
      raise EvalError(f"{prefix}: {e}") from e

  def check_nfes(self, nfes: Sequence[int]) -> tuple[int, ...]:
    """The NFEs as ints, each one the sampler can run (``process.check_steps``; LLaDA: a
    multiple of the number of blocks, generate.py's assert); EvalError naming the field
    otherwise."""
    nfes = check_int_list(nfes, f"{self.prefix}.nfe", minimum=1)
    for n in nfes:
      try:
        self.process.check_steps(n, self.length, self.sampler_options)
      except ValueError as e:
        raise EvalError(f"{self.prefix}.nfe: {e}") from e
    return nfes

  def sample(self, params, nfe: int, seed: int, num_samples: int, bar=None,
             prompts: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """int32[num_samples, length] samples (of prompted sampling: the completions) and the
    backbone forwards (nfe_model) of each sampling batch.

    ``prompts``: int[num_samples, P] when the evaluator was built with ``prompt_length``
    P: sample i completes prompts[i] (the last batch's missing rows repeat its first).
    """
    num_batches = math.ceil(num_samples / self.batch)
    if self.prompt_length:
      prompts = self._check_prompts(prompts, num_samples)
    tokens, nfe_model = [], []
    for b in range(num_batches):
      key = sample_key(seed, nfe, b)
      if self.prompt_length:
        rows = np.arange(b * self.batch, (b + 1) * self.batch)
        rows = np.where(rows < num_samples, rows, b * self.batch)
        prompt = sharding.to_global(prompts[rows], sharding.replicated(self.mesh))
        res = self._generate(params, prompt, key, int(nfe))
        out = sharding.to_host(res.tokens)[:, self.prompt_length:]
      else:
        res = self._sampler(params, key, int(nfe))
        out = sharding.to_host(res.tokens)
      tokens.append(out)
      nfe_model.append(int(jax.device_get(res.nfe_model)))
      if bar is not None:
        bar.update(1)
    return np.concatenate(tokens)[:num_samples].astype(np.int32), nfe_model

  def _check_prompts(self, prompts, num_samples: int) -> np.ndarray:
    if prompts is None:
      raise EvalError(f"{self.prefix}: the evaluator samples prompt-conditioned "
                      f"(prompt length {self.prompt_length}) but no prompts were given")
    prompts = np.asarray(prompts)
    want = (num_samples, self.prompt_length)
    if (prompts.ndim != 2 or prompts.shape != want
        or not np.issubdtype(prompts.dtype, np.integer)):
      raise EvalError(f"{self.prefix}: prompts must be int {list(want)} (one of "
                      f"{self.prompt_length} tokens per sample), got "
                      f"{prompts.dtype}{list(prompts.shape)}")
    return prompts.astype(np.int32)

  def evaluate(self, params, nfes: Sequence[int], seeds: Sequence[int], num_samples: int,
               *, keep_samples: bool = True, skip: Sequence[tuple[int, int]] = (),
               on_row=None, prompts: np.ndarray | None = None) -> Evaluation:
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
      prompts: int[num_samples, P] of a prompt-conditioned evaluator: sample i of every
        (NFE, seed) completes prompts[i]; the judge scores each completion given its
        decoded prompt, entropy is that of the completions.
    """
    skip = {(int(n), int(s)) for n, s in skip}
    nfes = self.check_nfes(nfes)
    seeds = check_int_list(seeds, "seeds", minimum=0)
    num_samples = check_num_samples(num_samples, "num_samples")
    prompt_texts = None
    if self.prompt_length:
      prompts = self._check_prompts(prompts, num_samples)
      prompt_texts = self.judge.decode(prompts)
      if prompt_texts is None:
        raise EvalError(f"{self.prefix}: the {self.judge.kind} judge has no text form; "
                        f"conditional judging needs the GPT-2 judge")
    num_batches = math.ceil(num_samples / self.batch)
    rows, samples = [], ([] if keep_samples else None)
    bar = tqdm.tqdm(total=len(nfes) * len(seeds) * num_batches, desc="sampling",
                    unit="batch", disable=not self.progress, dynamic_ncols=True)
    try:
      for nfe in nfes:
        for seed in seeds:
          if (nfe, seed) in skip:
            bar.update(num_batches)
            continue
          bar.set_description(f"sampling NFE={nfe} seed={seed}")
          t0 = time.time()
          tokens, nfe_model = self.sample(params, nfe, seed, num_samples, bar, prompts)
          t1 = time.time()
          texts = self.judge.decode(tokens)
          score = dict(self.judge.score(tokens, texts, prompt_texts))
          ent = entropy_lib.mean_entropy(tokens)
          t2 = time.time()
          # The judge's metrics under its own names (gen_ppl, nll_sum, num_tokens, ...).
          row = dict(nfe=nfe, seed=seed, **score, entropy=ent,
                     num_samples=int(tokens.shape[0]),
                     nfe_model=float(np.mean(nfe_model)), temperature=self.temperature,
                     sample_time_s=t1 - t0, score_time_s=t2 - t1)
          row.update(self.process.sample_metrics(tokens))
          rows.append(row)
          mine = None
          if keep_samples:
            mine = [dict(nfe=nfe, seed=seed, index=i, text=None if texts is None else texts[i],
                         token_ids=tokens[i].tolist()) for i in range(tokens.shape[0])]
            if prompt_texts is not None:
              for i, m in enumerate(mine):
                m.update(prompt=prompt_texts[i], prompt_ids=prompts[i].tolist())
            samples.extend(mine)
          if on_row is not None:
            on_row(rows[-1], mine)
    finally:
      bar.close()
    return Evaluation(rows=rows, samples=samples)
