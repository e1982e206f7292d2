"""Generative perplexity (Gen-PPL) of text samples under GPT-2, in JAX.

This module loads GPT-2 (:func:`load_gpt2` -> :class:`GPT2Model`) and scores texts with it
(:class:`GenPPLEvaluator`); :class:`judges.GPT2Judge` puts it behind the judge interface.

Protocol of MDLM ``Diffusion.compute_generative_perplexity`` / ``eval_retokenize``
and DUO ``Metrics.record_generative_perplexity`` / ``_eval_retokenize``:

1. The diffusion samples are decoded to text (caller) and retokenized with the
   judge's tokenizer, pad token = EOS, in one call per group of texts with
   ``truncation=True, padding=True, max_length=<diffusion model length>``:
   ``padding=True`` pads to the longest text *of that call* (right side).
2. Each padded row is split into consecutive chunks of the judge context (1024
   for GPT-2); every chunk is scored on its own, with the tokenizer's attention
   mask.
3. Per chunk: NLL of ``tokens[1:]`` under ``logits[:-1]``, weights on positions
   ``1:`` = ``(token != eos) | (cumsum(token == eos) == 1)`` (the chunk's first
   EOS counts, later EOS / padding do not).
4. Gen-PPL = exp(sum(nll * w) / sum(w)) over all chunks of all samples.

Scoring runs jitted over fixed-shape batches of chunks ``int32[batch_size, W]``, with the
batch split over the mesh by :mod:`tokendrift_jax.sharding`. W is the smallest of a few
*bucket* widths (and the context) that holds the chunk's true length, so a 128-token sample
is judged as 128 positions, not padded to the 1024 of GPT-2's context; the scores are those
of the full-width chunk, since causal attention keeps the dropped filler positions (weight
0, after every scored one) from changing the logits of the kept ones. One shape is compiled
per width in use (the last batch of a width is padded with weight-0 rows).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
import transformers
from jax.sharding import Mesh

from tokendrift_jax import sharding

DEFAULT_JUDGE = "gpt2-large"
# How a PyTorch GPT-2 directory becomes a judge directory (convert/gpt2.py).
CONVERT_COMMAND = "python -m convert.gpt2"
# The config field that names the judge (MDLM/DUO call it the same).
JUDGE_CONFIG_FIELD = "eval.gen_ppl_eval_model_name_or_path"
FLAX_WEIGHTS = ("flax_model.msgpack", "flax_model.msgpack.index.json")
_PT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _how_to_get(name: str, field: str = JUDGE_CONFIG_FIELD) -> str:
  return (
      f"Download {DEFAULT_JUDGE} on a machine with network (e.g. `hf download "
      f"openai-community/{DEFAULT_JUDGE} --local-dir SRC`), convert it with "
      f"`{CONVERT_COMMAND} SRC DST`, and set {field}=DST "
      f"(currently {name!r}).")


@dataclasses.dataclass(frozen=True)
class GPT2Model:
  """A loaded GPT-2 that scores texts (the Gen-PPL judge's model).

  Attributes:
    module: the linen ``FlaxGPT2LMHeadModule`` (its ``dtype`` is the compute dtype).
    params: its parameters (float32 as stored).
    tokenizer: the judge's tokenizer with pad = EOS.
    context_size: the judge's context (``n_positions``; 1024 for GPT-2).
    eos_id: EOS token id (50256 for GPT-2).
    name: where it was loaded from.
  """
  module: Any
  params: Any
  tokenizer: Any
  context_size: int
  eos_id: int
  name: str


def _looks_like_path(name: str) -> bool:
  return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def load_gpt2(model_name_or_path: str = DEFAULT_JUDGE,
              tokenizer_name_or_path: str | None = None,
              *, dtype: str = "float32",
              config_field: str = JUDGE_CONFIG_FIELD) -> GPT2Model:
  """Loads ``FlaxGPT2LMHeadModel`` weights and the GPT-2 tokenizer.

  Args:
    model_name_or_path: a local directory with ``flax_model.msgpack`` (see
      ``python -m convert.gpt2``) or a hub name (default ``gpt2-large``; needs the
      hub or its cache).
    tokenizer_name_or_path: defaults to ``model_name_or_path``, like MDLM/DUO
      (all GPT-2 sizes share one tokenizer; the converter copies it beside the
      weights).
    dtype: compute dtype, ``"float32"`` (default, the protocol's) or
      ``"bfloat16"`` (parameters stay float32, logits are cast back to float32).
    config_field: the config field that names the judge, quoted in the
      how-to-convert hints of errors (callers with their own config pass theirs).

  Raises:
    FileNotFoundError: missing directory, a directory without Flax weights, or a
      hub name that cannot be fetched; the message says how to convert.
    ValueError: unknown dtype, or a tokenizer without EOS.
  """
  if dtype not in DTYPES:
    raise ValueError(f"Gen-PPL dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
  name = str(model_name_or_path)
  if _looks_like_path(name):
    path = pathlib.Path(name).expanduser()
    if not path.is_dir():
      raise FileNotFoundError(f"Gen-PPL judge directory {name!r} does not exist. "
                              + _how_to_get(name, config_field))
    if not any((path / f).is_file() for f in FLAX_WEIGHTS):
      pt = [f for f in _PT_WEIGHTS if (path / f).is_file()]
      found = f"it has PyTorch weights ({', '.join(pt)}) only" if pt else "it has no model weights"
      raise FileNotFoundError(
          f"Gen-PPL judge directory {name!r} has no {FLAX_WEIGHTS[0]}: {found}. "
          f"Convert it with `{CONVERT_COMMAND} {name} DST` and set "
          f"{config_field}=DST.")
    name = str(path)
  try:
    # _do_init=False: read the weights without a throw-away random init.
    model, params = transformers.FlaxGPT2LMHeadModel.from_pretrained(
        name, dtype=DTYPES[dtype], _do_init=False)
  except OSError as e:
    raise FileNotFoundError(
        f"cannot load the Gen-PPL judge {name!r} as a Flax GPT-2 ({e}). "
        + _how_to_get(name, config_field)) from e
  tok_name = name if tokenizer_name_or_path is None else str(tokenizer_name_or_path)
  if _looks_like_path(tok_name):
    tok_path = pathlib.Path(tok_name).expanduser()
    if not any((tok_path / f).is_file() for f in TOKENIZER_FILES):
      raise FileNotFoundError(
          f"no GPT-2 tokenizer files ({', '.join(TOKENIZER_FILES)}) in {tok_name!r}; "
          f"`{CONVERT_COMMAND}` copies them beside the weights, or pass tokenizer_name_or_path")
    tok_name = str(tok_path)
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tok_name)
  except OSError as e:
    raise FileNotFoundError(
        f"cannot load the Gen-PPL tokenizer {tok_name!r} ({e}). "
        + _how_to_get(tok_name, config_field)) from e
  if tokenizer.eos_token_id is None:
    raise ValueError(f"tokenizer {tok_name!r} has no eos_token; Gen-PPL pads and weights with EOS")
  if tokenizer.pad_token is None:
    # MDLM/DUO: pad = EOS when the tokenizer has no pad token (GPT-2 has none).
    tokenizer.pad_token = tokenizer.eos_token
  if tokenizer.padding_side != "right" or tokenizer.truncation_side != "right":
    raise ValueError(
        f"tokenizer {tok_name!r} pads on the {tokenizer.padding_side} and truncates on the "
        f"{tokenizer.truncation_side}; the protocol (GPT-2's tokenizer) uses the right side for both")
  if len(tokenizer) > model.config.vocab_size:
    raise ValueError(
        f"tokenizer {tok_name!r} has {len(tokenizer)} tokens but the judge {name!r} only "
        f"{model.config.vocab_size} logits")
  return GPT2Model(module=model.module, params=params, tokenizer=tokenizer,
                   context_size=int(model.config.n_positions),
                   eos_id=int(tokenizer.eos_token_id), name=name)


def retokenize(tokenizer, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """One tokenizer call of the protocol (MDLM ``eval_retokenize``, GPT-2 branch).

  Returns:
    (input_ids int64[N, T], attention_mask int64[N, T]), right-padded with the pad
    token (= EOS) to T = min(longest text, max_length).
  """
  enc = tokenizer(
      list(texts), return_tensors="np", return_token_type_ids=False,
      return_attention_mask=True, truncation=True, padding=True, max_length=max_length)
  return np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])


def retokenize_pairs(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                     max_length: int, context: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One tokenizer call of conditional judging: each row is prompt + completion.

  The completion is retokenized as :func:`retokenize` does (``truncation=True,
  max_length``); the prompt is tokenized on its own (so the split between the two is
  exact) and only its last ``context − len(completion)`` tokens are kept when the row would
  not fit the judge's window. Rows are right-padded with the pad token (= EOS, attention 0)
  to the longest row of the call, as the protocol's ``padding=True``.

  Returns:
    (input_ids int64[N, T], attention_mask int64[N, T], starts int32[N]): T ≤ ``context``,
    ``starts`` the position of each row's first completion token.
  """
  if len(prompts) != len(completions):
    raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
  if max_length >= context:
    raise ValueError(f"conditional judging scores each completion in one window of the "
                     f"judge's context {context}, with its prompt; the completions' "
                     f"max_length {max_length} leaves no room for a prompt")
  kwargs = dict(return_token_type_ids=False, return_attention_mask=False)
  comp = tokenizer(list(completions), truncation=True, max_length=max_length, **kwargs)
  prom = tokenizer(list(prompts), **kwargs)
  rows, starts = [], []
  for p, c in zip(prom["input_ids"], comp["input_ids"]):
    p = list(p)[max(0, len(p) - (context - len(c))):]
    rows.append(p + list(c))
    starts.append(len(p))
  t = max(1, max(len(r) for r in rows))
  ids = np.full((len(rows), t), tokenizer.pad_token_id, np.int64)
  mask = np.zeros((len(rows), t), np.int64)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  return ids, mask, np.asarray(starts, np.int32)


def split_chunks(input_ids: np.ndarray, attention_mask: np.ndarray, context: int,
                 pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Splits [N, T] rows into fixed-size chunks, like ``torch.split(x, context, -1)``.

  The last chunk of a row is shorter when ``context`` does not divide T; here it is
  filled up to ``context`` with ``pad_id`` / mask 0 and its true length is returned,
  so the scorer gives the filler weight 0 (causal attention keeps it from changing
  the logits of the true positions).

  Returns:
    tokens int32[N * K, context], mask int32[N * K, context], lengths int32[N * K]
    (true chunk lengths) and sample int64[N * K] (row of origin), K = ceil(T / context).
  """
  n, t = input_ids.shape
  k = max(1, math.ceil(t / context))
  full = k * context
  tokens = np.full((n, full), pad_id, dtype=np.int32)
  tokens[:, :t] = input_ids
  mask = np.zeros((n, full), dtype=np.int32)
  mask[:, :t] = attention_mask
  lengths = np.clip(t - context * np.arange(k), 0, context).astype(np.int32)
  return (tokens.reshape(n * k, context), mask.reshape(n * k, context),
          np.tile(lengths, n), np.repeat(np.arange(n), k))


def protocol_weights(tokens: jax.Array, lengths: jax.Array, eos_id: int,
                     starts: jax.Array | None = None) -> jax.Array:
  """Weights of the targets ``tokens[:, 1:]`` (MDLM/DUO ``first_eos`` + ``token_mask``).

  Args:
    tokens: int[B, C] chunk tokens.
    lengths: int[B] true chunk lengths; positions at or beyond them weigh 0.
    eos_id: EOS id.
    starts: int[B] first scored position of each chunk (conditional judging: the
      completion's first token; the prompt before it is context only), or None = 0. The
      EOS rule counts EOS from there on.

  Returns:
    float32[B, C - 1]: 1 where the target is at or after ``starts`` and is not EOS or is
    the first EOS from ``starts`` on.
  """
  chex.assert_rank([tokens, lengths], [2, 1])
  chex.assert_type([tokens, lengths], int)
  chex.assert_equal_shape_prefix([tokens, lengths], 1)
  pos = jnp.arange(tokens.shape[-1], dtype=jnp.int32)[None, :]
  if starts is None:
    scored = jnp.ones(tokens.shape, bool)
  else:
    chex.assert_shape(starts, lengths.shape)
    chex.assert_type(starts, int)
    scored = pos >= starts[:, None]
  is_eos = jnp.logical_and(tokens == eos_id, scored)
  first_eos = jnp.cumsum(is_eos.astype(jnp.int32), axis=-1) == 1
  keep = jnp.logical_and(jnp.logical_or(first_eos, jnp.logical_not(is_eos)), scored)
  in_chunk = pos < lengths[:, None]
  return jnp.logical_and(keep, in_chunk)[:, 1:].astype(jnp.float32)


def chunk_nll_sums(logits: jax.Array, tokens: jax.Array, lengths: jax.Array,
                   eos_id: int, starts: jax.Array | None = None
                   ) -> tuple[jax.Array, jax.Array]:
  """Weighted NLL sums of chunks (float32).

  Args:
    logits: float[B, C, V] judge logits of ``tokens``.
    tokens: int[B, C].
    lengths: int[B] true chunk lengths.
    eos_id: EOS id.
    starts: int[B] first scored positions (:func:`protocol_weights`), or None = 0.

  Returns:
    (sum_t nll_t * w_t, sum_t w_t), each float32[B], with nll_t the cross entropy of
    ``tokens[:, t + 1]`` under ``logits[:, t]``.
  """
  chex.assert_rank([logits, tokens, lengths], [3, 2, 1])
  chex.assert_type([logits, tokens, lengths], [float, int, int])
  chex.assert_equal_shape_prefix([logits, tokens], 2)
  chex.assert_equal_shape_prefix([tokens, lengths], 1)
  nll = optax.softmax_cross_entropy_with_integer_labels(
      logits[:, :-1].astype(jnp.float32), tokens[:, 1:])
  w = protocol_weights(tokens, lengths, eos_id, starts)
  # where(), not nll * w: a weight-0 filler position must not leak a NaN/inf.
  nll_w = jnp.where(w > 0, nll * w, jnp.zeros_like(nll))
  return jnp.sum(nll_w, axis=-1), jnp.sum(w, axis=-1)


def _score_batch(params, tokens, mask, lengths, starts, *, module, eos_id):
  """Judge forward + weighted NLL sums for int32[B, C] chunks -> 2 x float32[B]."""
  chex.assert_rank([tokens, mask, lengths, starts], [2, 2, 1, 1])
  chex.assert_equal_shape([tokens, mask])
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1], dtype=jnp.int32)[None, :], tokens.shape)
  logits = module.apply({"params": params}, tokens, mask, positions,
                        deterministic=True, return_dict=False)[0]
  return chunk_nll_sums(logits, tokens, lengths, eos_id, starts)


@dataclasses.dataclass(frozen=True)
class GenPPLResult:
  """Gen-PPL and the sums it is made of.

  Attributes:
    gen_ppl: exp(nll_sum / weight_sum).
    nll_sum: sum of nll * w over every chunk of every sample (float64 on host).
    weight_sum: sum of w (number of scored tokens).
    sample_nll_sum: float64[N] per-sample part of ``nll_sum``.
    sample_weight_sum: float64[N] per-sample part of ``weight_sum``.
    judged_positions: token positions run through the judge (rows x width of every
      jitted batch, filler rows included): the judge's cost.
  """
  gen_ppl: float
  nll_sum: float
  weight_sum: float
  sample_nll_sum: np.ndarray
  sample_weight_sum: np.ndarray
  judged_positions: int = 0

  @property
  def num_samples(self) -> int:
    return int(self.sample_nll_sum.shape[0])

  @classmethod
  def from_sample_sums(cls, sample_nll_sum: np.ndarray, sample_weight_sum: np.ndarray,
                       judged_positions: int = 0) -> GenPPLResult:
    nll_sum = float(np.sum(sample_nll_sum, dtype=np.float64))
    weight_sum = float(np.sum(sample_weight_sum, dtype=np.float64))
    if weight_sum <= 0:
      raise ValueError(
          f"no token of the {len(sample_nll_sum)} samples is scored (sum of weights is "
          f"{weight_sum}); Gen-PPL is undefined")
    return cls(gen_ppl=math.exp(nll_sum / weight_sum), nll_sum=nll_sum, weight_sum=weight_sum,
               sample_nll_sum=np.asarray(sample_nll_sum, np.float64),
               sample_weight_sum=np.asarray(sample_weight_sum, np.float64),
               judged_positions=int(judged_positions))

  @classmethod
  def merge(cls, results: Sequence[GenPPLResult]) -> GenPPLResult:
    """Pools results of several calls (e.g. one per sampling batch), like the metric."""
    if not results:
      raise ValueError("GenPPLResult.merge needs at least one result")
    return cls.from_sample_sums(
        np.concatenate([r.sample_nll_sum for r in results]),
        np.concatenate([r.sample_weight_sum for r in results]),
        sum(r.judged_positions for r in results))


class GenPPLEvaluator:
  """Scores text samples with GPT-2 (the MDLM/DUO protocol), jitted and batched over a mesh.

  Args:
    model: from :func:`load_gpt2`.
    max_length: retokenization truncation length; the protocol passes the
      diffusion model's length (1024 for OpenWebText).
    batch_size: chunks per jitted call; must divide over the mesh's batch shards.
      The last batch is filled with weight-0 rows, so one shape is compiled.
    mesh: device mesh (default: every device on ``data``).
    context_size: chunk length (default and maximum: the judge's ``n_positions``).
    buckets: widths a chunk may be judged at besides ``context_size`` (each chunk takes
      the smallest that holds its true length; widths >= the context are ignored). Empty:
      every chunk at the full context, as the references do. Scores do not depend on it.
    matmul_precision: for the judge's matmuls; ``"highest"`` (default) keeps
      float32 matmuls float32 on GPUs that would use TF32, as PyTorch does by
      default, so a float32 judge means float32.
    progress: show a tqdm bar over batches.
  """

  def __init__(self, model: GPT2Model, *, max_length: int, batch_size: int = 8,
               mesh: Mesh | None = None, context_size: int | None = None,
               buckets: Sequence[int] = (), matmul_precision: str | None = "highest",
               progress: bool = True):
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1, got {max_length}")
    context = model.context_size if context_size is None else int(context_size)
    if not 2 <= context <= model.context_size:
      raise ValueError(
          f"context_size {context} must be in [2, {model.context_size}] (the judge's n_positions)")
    self.model = model
    self.max_length = int(max_length)
    self.context_size = context
    bad = [w for w in buckets if isinstance(w, bool) or not isinstance(w, (int, np.integer))
           or w < 2]
    if bad:
      raise ValueError(f"judge chunk buckets must be integers >= 2, got {tuple(buckets)}")
    self.widths = tuple(sorted({int(w) for w in buckets if w < context} | {context}))
    self.batch_size = int(batch_size)
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_divisible(self.batch_size, self.mesh, "Gen-PPL batch_size")
    self.matmul_precision = matmul_precision
    self.progress = progress
    self._params = sharding.to_global(
        model.params, sharding.param_sharding(model.params, self.mesh, "replicated"))
    self._rows = sharding.batch_sharding(self.mesh, ndim=2)
    self._vec = sharding.batch_sharding(self.mesh, ndim=1)
    self._score = jax.jit(functools.partial(_score_batch, module=model.module, eos_id=model.eos_id))

  def _chunks(self, texts: Sequence[str], group_size: int | None,
              prompts: Sequence[str] | None = None):
    """(tokens, mask, lengths, starts, sample) of every chunk, one tokenizer call per group."""
    group = len(texts) if group_size is None else int(group_size)
    if group < 1:
      raise ValueError(f"group_size must be >= 1, got {group_size}")
    parts = []
    for start in range(0, len(texts), group):
      part = slice(start, start + group)
      if prompts is None:
        ids, mask = retokenize(self.model.tokenizer, texts[part], self.max_length)
        first = None
      else:
        ids, mask, first = retokenize_pairs(self.model.tokenizer, prompts[part], texts[part],
                                            self.max_length, self.context_size)
      tok, msk, lengths, sample = split_chunks(ids, mask, self.context_size, self.model.eos_id)
      # A conditional row is one chunk (retokenize_pairs fits it into the context).
      starts = np.zeros_like(lengths) if first is None else first[sample]
      parts.append((tok, msk, lengths, starts, sample + start))
    return [np.concatenate(p) for p in zip(*parts)]

  def score(self, texts: Sequence[str], *, group_size: int | None = None,
            prompts: Sequence[str] | None = None) -> GenPPLResult:
    """Gen-PPL of ``texts`` (decoded diffusion samples).

    Args:
      texts: the samples as strings (with ``prompts``: the completions).
      group_size: texts per retokenization call. MDLM/DUO call the tokenizer once
        per sampling batch, which sets how far each batch is padded and hence
        whether a text's first padding EOS is scored; pass the sampling batch size
        to reproduce that, or None to retokenize ``texts`` in one call.
      prompts: for conditional judging, the prompt text of each sample: the judge reads
        prompt + completion (:func:`retokenize_pairs`) and scores only the completion's
        tokens, each given the prompt and the completion before it.

    Returns:
      A :class:`GenPPLResult` over all texts.

    Raises:
      ValueError: empty ``texts``, a non-string entry, prompts not one per text, or no
        scored token.
    """
    texts = _check_texts(texts, "texts")
    if prompts is not None:
      prompts = _check_texts(prompts, "prompts")
      if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts; give one per text")
    tokens, mask, lengths, starts, sample = self._chunks(texts, group_size, prompts)
    batches = self._batches(tokens, mask, lengths, starts)
    outputs = []
    with jax.default_matmul_precision(self.matmul_precision):
      for rows, arrays in tqdm.tqdm(batches, desc="Gen-PPL", disable=not self.progress):
        outputs.append((rows, self._score(
            self._params,
            *sharding.to_global(arrays, (self._rows, self._rows, self._vec, self._vec)))))
    nll_w = np.zeros(tokens.shape[0], np.float64)
    w = np.zeros(tokens.shape[0], np.float64)
    for rows, (o_nll, o_w) in outputs:
      # Every process holds all texts, so every process gathers every batch's sums.
      nll_w[rows] = sharding.to_host(o_nll).astype(np.float64)[:len(rows)]
      w[rows] = sharding.to_host(o_w).astype(np.float64)[:len(rows)]
    sample_nll = np.zeros(len(texts), np.float64)
    sample_w = np.zeros(len(texts), np.float64)
    np.add.at(sample_nll, sample, nll_w)
    np.add.at(sample_w, sample, w)
    positions = sum(a[0].size for _, a in batches)
    return GenPPLResult.from_sample_sums(sample_nll, sample_w, positions)

  def chunk_widths(self, lengths: np.ndarray) -> np.ndarray:
    """The width each chunk is judged at: the smallest bucket >= its true length."""
    widths = np.asarray(self.widths)
    return widths[np.searchsorted(widths, np.maximum(lengths, 1))]

  def _batches(self, tokens, mask, lengths, starts):
    """[(chunk rows, (tokens, mask, lengths, starts) of one jitted call)], width by width;
    each width's last batch is filled with weight-0 rows (true length 0)."""
    b = self.batch_size
    widths = self.chunk_widths(lengths)
    out = []
    for width in self.widths:
      idx = np.flatnonzero(widths == width)
      for start in range(0, len(idx), b):
        rows = idx[start:start + b]
        fill = b - len(rows)
        out.append((rows, (
            np.concatenate([tokens[rows, :width],
                            np.full((fill, width), self.model.eos_id, np.int32)]),
            np.concatenate([mask[rows, :width], np.ones((fill, width), np.int32)]),
            np.concatenate([lengths[rows], np.zeros((fill,), np.int32)]),
            np.concatenate([starts[rows], np.zeros((fill,), np.int32)]).astype(np.int32))))
    return out


def _check_texts(texts, what: str) -> list[str]:
  if isinstance(texts, str):
    raise ValueError(f"{what} must be a sequence of strings, got a single string")
  texts = list(texts)
  if not texts:
    raise ValueError(f"Gen-PPL needs at least one sample; got an empty list of {what}")
  bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
  if bad:
    raise ValueError(f"{what}[{bad[0]}] is a {type(texts[bad[0]]).__name__}, not a str")
  return texts

