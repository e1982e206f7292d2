"""Gen-PPL: the Flax judge evaluation == the MDLM/DUO protocol run in PyTorch.

Reference (`torch_protocol` in tests/references/torch_genppl.py) is written from MDLM
``Diffusion.compute_generative_perplexity`` / ``eval_retokenize`` and DUO
``Metrics.record_generative_perplexity``: one tokenizer call per group (pad = EOS,
truncation, padding=True, max_length), ``torch.split`` into judge-context chunks,
``GPT2LMHeadModel(chunk, attention_mask=...)``, ``F.cross_entropy`` of tokens[1:]
from logits[:-1], weights ``first_eos[1:] + token_mask[1:]``, exp(sum nll*w / sum w).
It runs in float64 on the same tiny random GPT-2 (context 32, so texts longer than
one chunk are cheap).
"""

from __future__ import annotations

import math

import chex
import jax
import numpy as np
import pytest
import torch
import transformers

from tests.references.torch_genppl import torch_protocol
from tokendrift_jax import sharding
from tokendrift_jax.eval import genppl

CONTEXT = 32      # judge n_positions (tiny_gpt2_judge, tests/conftest.py)
VOCAB = 320       # the tiny judge's vocabulary; EOS = VOCAB - 1
EOS = "<|endoftext|>"
MAX_LENGTH = 80   # retokenization max_length: up to 3 chunks (32 + 32 + 16)
# The Flax judge runs float32 (highest matmul precision) against a float64 PyTorch
# reference; per-token NLLs of O(5) agree to ~1e-6 relative and the sums over a few
# hundred tokens to the same order, so 1e-4 (the bound) has ample margin
# while a single wrongly weighted token (~1/300 of the sum) would exceed it.
REL_TOL = 1e-4

_WORDS = ("the quick brown fox jumps over lazy dog cat sat on mat diffusion model "
          "tokens judge entropy 1024 sea shells sailor reddit").split()


def _texts(seed: int, n: int) -> list[str]:
  """Word soup with EOS markers at random places, of very different lengths."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    n_words = int(rng.integers(1, 70))
    words = [str(w) for w in rng.choice(_WORDS, size=n_words)]
    for _ in range(int(rng.integers(0, 4))):
      words.insert(int(rng.integers(0, len(words) + 1)), EOS)
    text = " ".join(words)
    if i % 4 == 0:
      text = EOS + text   # MDLM samples start with BOS (= EOS for GPT-2)
    out.append(text)
  # Fixed cases: no EOS at all and short (its first padding EOS is scored); EOS
  # only at the very end; bytes the BPE never merged; two EOS in a row.
  out += ["hello world", "the cat sat on the mat" + EOS, "Zebra ÿ ünïcödé €42 !!",
          "sea shells" + EOS + EOS + "by the shore"]
  return out


@pytest.fixture(scope="module")
def judge_dirs(tiny_gpt2_judge):
  return tiny_gpt2_judge.pt, tiny_gpt2_judge.flax


@pytest.fixture(scope="module")
def judge(judge_dirs):
  return genppl.load_gpt2(str(judge_dirs[1]))


def _check_coverage(tokenizer, texts):
  """The texts must exercise what the protocol is about, or the test proves little."""
  tokenizer.pad_token = tokenizer.eos_token
  enc = tokenizer(texts, truncation=True, padding=True, max_length=MAX_LENGTH)
  ids, mask = np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])
  eos = tokenizer.eos_token_id
  lengths = mask.sum(-1)
  assert ids.shape[1] == MAX_LENGTH and (lengths > CONTEXT).sum() >= 3, "need multi-chunk texts"
  real_eos = (ids == eos) & (mask == 1)
  inner = real_eos.copy()
  inner[:, 0] = False
  assert inner.any(axis=1).sum() >= 3, "need texts with inner EOS"
  assert (real_eos[:, 0]).any(), "need texts starting with EOS"
  assert ((real_eos.cumsum(-1) >= 2) & real_eos).any(), "need a second EOS in one text"
  # An EOS opening a later chunk is that chunk's first EOS but sits at position 0,
  # which is never a target.
  assert real_eos[:, CONTEXT::CONTEXT].any(), "need an EOS at a chunk start"
  assert (lengths < ids.shape[1]).any() and (lengths == ids.shape[1]).any()


def _assert_close(result, ref):
  ppl, nll, w = ref
  chex.assert_trees_all_equal(result.sample_weight_sum, w)  # integer counts: exact
  chex.assert_trees_all_close(result.sample_nll_sum, nll, rtol=REL_TOL, atol=1e-9)
  assert abs(result.gen_ppl - ppl) <= REL_TOL * ppl
  assert result.weight_sum == w.sum()
  assert abs(result.nll_sum - nll.sum()) <= REL_TOL * nll.sum()


def test_parity_with_torch_protocol_on_8_device_mesh(judge_dirs, judge):
  texts = _texts(seed=0, n=12)
  _check_coverage(transformers.AutoTokenizer.from_pretrained(str(judge_dirs[0])), texts)
  evaluator = genppl.GenPPLEvaluator(judge, max_length=MAX_LENGTH, batch_size=8,
                                     mesh=sharding.make_mesh(), progress=False)
  result = evaluator.score(texts)
  ref = torch_protocol(judge_dirs[0], texts, MAX_LENGTH, CONTEXT)
  assert result.num_samples == len(texts)
  _assert_close(result, ref)
  # The judge is far from uniform, so this is not log(V) by accident.
  assert abs(math.log(result.gen_ppl) - math.log(len(judge.tokenizer))) > 0.1


def test_parity_per_group_retokenization_single_device(judge_dirs, judge):
  # One tokenizer call per group of 3 texts, like one call per sampling batch;
  # odd batch size 3 leaves a partly filled last batch.
  texts = _texts(seed=1, n=9)
  evaluator = genppl.GenPPLEvaluator(judge, max_length=MAX_LENGTH, batch_size=3,
                                     mesh=sharding.make_mesh(devices=jax.devices()[:1]),
                                     progress=False)
  result = evaluator.score(texts, group_size=3)
  _assert_close(result, torch_protocol(judge_dirs[0], texts, MAX_LENGTH, CONTEXT, group_size=3))
  # Grouping matters only through padding: it must not be a no-op in this set,
  # otherwise the test above would not show that groups are honoured.
  whole = evaluator.score(texts)
  # An inequality (grouping must change the counts): chex has no "arrays differ" assert.
  assert not np.array_equal(whole.sample_weight_sum, result.sample_weight_sum)
  merged = genppl.GenPPLResult.merge(
      [evaluator.score(texts[i:i + 3]) for i in range(0, len(texts), 3)])
  chex.assert_trees_all_close(merged.sample_nll_sum, result.sample_nll_sum, rtol=1e-6, atol=0)
  assert merged.gen_ppl == pytest.approx(result.gen_ppl, rel=1e-6)


def test_chunk_smaller_than_judge_context(judge_dirs, judge):
  # context_size below n_positions: chunks of 16 over max_length 40.
  texts = _texts(seed=2, n=6)
  evaluator = genppl.GenPPLEvaluator(judge, max_length=40, batch_size=8, context_size=16,
                                     progress=False)
  _assert_close(evaluator.score(texts), torch_protocol(judge_dirs[0], texts, 40, 16))


def _numpy_weights(tokens, lengths, eos):
  """Weights from the rule in words: a target counts if it is not EOS, or if it is
  the first EOS of its chunk; targets are positions 1.. of the chunk's true length."""
  b, c = tokens.shape
  w = np.zeros((b, c - 1))
  for i in range(b):
    seen_eos = False
    for t in range(lengths[i]):
      first = tokens[i, t] == eos and not seen_eos
      seen_eos |= tokens[i, t] == eos
      if t >= 1 and (tokens[i, t] != eos or first):
        w[i, t - 1] = 1
  return w


def test_protocol_weights_match_rule():
  eos = 7
  tokens = np.array([
      [1, 2, 3, 4, 5, 6],        # no EOS: all targets
      [7, 2, 3, 7, 5, 7],        # leading EOS (BOS): no EOS target counts
      [1, 7, 7, 3, 7, 2],        # first EOS counts, later ones not
      [1, 2, 7, 7, 7, 7],        # text + padding: only the first pad counts
      [1, 2, 3, 9, 9, 9],        # short last chunk (length 3): filler ignored
      [7, 7, 7, 7, 7, 7],        # filler row (length 0)
  ], dtype=np.int32)
  lengths = np.array([6, 6, 6, 6, 3, 0], dtype=np.int32)
  got = np.asarray(genppl.protocol_weights(tokens, lengths, eos))
  chex.assert_shape(got, (tokens.shape[0], tokens.shape[1] - 1))
  chex.assert_trees_all_equal(got, _numpy_weights(tokens, lengths, eos))
  chex.assert_trees_all_equal(got[3], np.array([1, 1, 0, 0, 0]))


def test_chunk_nll_sums_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)) * 3
  tokens = np.array([[1, 10, 3, 10, 4], [10, 2, 2, 10, 10], [5, 6, 7, 8, 9]], dtype=np.int32)
  lengths = np.array([5, 5, 4], dtype=np.int32)
  nll_w, w = genppl.chunk_nll_sums(logits.astype(np.float32), tokens, lengths, eos_id=10)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  weights = _numpy_weights(tokens, lengths, 10)
  nll = -np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
  # float32 log-softmax of O(10) logits: ~1e-6 relative.
  chex.assert_trees_all_close(nll_w, (nll * weights).sum(-1), rtol=1e-5, atol=0)
  chex.assert_trees_all_equal(w, weights.sum(-1))


def test_split_chunks_matches_torch_split():
  ids = np.arange(2 * 7).reshape(2, 7) + 1
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  tokens, m, lengths, sample = genppl.split_chunks(ids, mask, context=3, pad_id=99)
  pieces = torch.split(torch.from_numpy(ids), 3, dim=-1)
  chex.assert_shape(tokens, (6, 3))
  assert lengths.tolist() == [3, 3, 1] * 2
  assert sample.tolist() == [0, 0, 0, 1, 1, 1]
  for k, piece in enumerate(pieces):
    for row in range(2):
      got = tokens[row * 3 + k, :lengths[k]]
      chex.assert_trees_all_equal(got, piece[row].numpy())
  assert (tokens[lengths.tolist().index(1), 1:] == 99).all() and m[2, 1:].sum() == 0


def test_bfloat16_close_to_float32(judge_dirs):
  texts = _texts(seed=0, n=12)
  results = {}
  for dtype in ("float32", "bfloat16"):
    j = genppl.load_gpt2(str(judge_dirs[1]), dtype=dtype)
    ev = genppl.GenPPLEvaluator(j, max_length=MAX_LENGTH, batch_size=8, progress=False,
                                matmul_precision=None if dtype == "bfloat16" else "highest")
    results[dtype] = ev.score(texts)
  f32, bf16 = results["float32"], results["bfloat16"]
  mean_nll = {k: r.sample_nll_sum / r.sample_weight_sum for k, r in results.items()}
  rel = abs(bf16.gen_ppl / f32.gen_ppl - 1)
  per_sample = np.abs(mean_nll["bfloat16"] - mean_nll["float32"]).max()
  print(f"tiny judge Gen-PPL float32 {f32.gen_ppl:.6f} bfloat16 {bf16.gen_ppl:.6f} "
        f"rel diff {rel:.2e}; max per-sample mean-NLL diff {per_sample:.2e} nats")
  # bfloat16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%) per activation, so
  # logits of scale ~4 move by up to ~0.05 and a sample's mean NLL by a few 1e-3
  # nats (measured 1.9e-3 here; the pooled Gen-PPL moved 2.3e-4 relative as errors
  # partly cancel). The bounds are >= 25x the measurements; a broken bf16 path
  # gives O(1) differences.
  chex.assert_trees_all_close(mean_nll["bfloat16"], mean_nll["float32"], rtol=0, atol=5e-2)
  chex.assert_trees_all_close(bf16.gen_ppl, f32.gen_ppl, rtol=2e-2, atol=0)
  chex.assert_trees_all_equal(results["bfloat16"].sample_weight_sum,
                              results["float32"].sample_weight_sum)


# ---- errors -------------------------------------------------------------------------

def test_missing_judge_directory_says_how_to_convert(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"does not exist.*python -m convert\.gpt2 SRC DST"):
    genppl.load_gpt2(str(tmp_path / "no_judge"))


def test_pytorch_only_directory_says_how_to_convert(judge_dirs):
  pt_dir = str(judge_dirs[0])
  with pytest.raises(FileNotFoundError, match=r"PyTorch weights.*python -m convert\.gpt2"):
    genppl.load_gpt2(pt_dir)


def test_judge_directory_without_tokenizer(judge_dirs, tmp_path):
  weights_only = tmp_path / "weights_only"
  weights_only.mkdir()
  for name in ("flax_model.msgpack", "config.json"):
    (weights_only / name).write_bytes((judge_dirs[1] / name).read_bytes())
  with pytest.raises(FileNotFoundError, match="no GPT-2 tokenizer files"):
    genppl.load_gpt2(str(weights_only))
  # An explicit tokenizer directory makes the same weights usable.
  j = genppl.load_gpt2(str(weights_only), tokenizer_name_or_path=str(judge_dirs[1]))
  assert j.eos_id == VOCAB - 1 and j.context_size == CONTEXT


def test_hub_name_unavailable_offline_says_how_to_convert():
  # conftest sets HF_HUB_OFFLINE=1; the name does not exist in any cache.
  with pytest.raises(FileNotFoundError, match=r"gpt2-large.*python -m convert\.gpt2.*"
                     + genppl.JUDGE_CONFIG_FIELD.replace(".", r"\.")):
    genppl.load_gpt2("tokendrift-tests/no-such-judge")
  assert genppl.DEFAULT_JUDGE == "gpt2-large"


def test_empty_and_bad_inputs(judge):
  ev = genppl.GenPPLEvaluator(judge, max_length=MAX_LENGTH, batch_size=8, progress=False)
  with pytest.raises(ValueError, match="at least one sample"):
    ev.score([])
  with pytest.raises(ValueError, match="no token .* is scored"):
    ev.score(["", ""])
  with pytest.raises(ValueError, match="single string"):
    ev.score("the cat")
  with pytest.raises(ValueError, match=r"texts\[1\]"):
    ev.score(["the cat", 3])
  with pytest.raises(ValueError, match="not divisible"):
    genppl.GenPPLEvaluator(judge, max_length=MAX_LENGTH, batch_size=3)
  with pytest.raises(ValueError, match="context_size 64"):
    genppl.GenPPLEvaluator(judge, max_length=MAX_LENGTH, context_size=64)
  with pytest.raises(ValueError, match="dtype"):
    genppl.load_gpt2("unused", dtype="float16")
  with pytest.raises(ValueError, match="at least one result"):
    genppl.GenPPLResult.merge([])
