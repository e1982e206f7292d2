"""Gen-PPL on real English with the real GPT-2 BPE (issue 17): the Flax judge equals a
float64 PyTorch reference of MDLM's ``compute_generative_perplexity``; judging at bucket
widths gives the same Gen-PPL for a fraction of the judged positions.

The judge is a tiny random GPT-2 (1 layer, width 16, context 256) with the vendored GPT-2
tokenizer (tests/conftest.py: ``bpe_gpt2_judge``), so the retokenization, the EOS weights
and the chunking run on real BPE ids.
"""

from __future__ import annotations

import chex
import numpy as np
import pytest
import transformers

from tests.references.torch_genppl import torch_protocol
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import MDLMProcess
from tokendrift_jax.eval import eval_config
from tokendrift_jax.eval import genppl
from tokendrift_jax.eval import judges

# Same argument as tests/eval/test_genppl.py: float32 judge vs float64 reference, per-token
# NLLs of O(10) agree to ~1e-6 relative; one wrongly weighted token of the ~300 scored
# would move Gen-PPL by ~3e-3.
REL_TOL = 1e-4
SAMPLE_LEN = 32   # diffusion sample length = retokenization max_length


@pytest.fixture(scope="module")
def samples(english_docs, gpt2_bpe):
  """11 fixed-length 'samples' (a partial last batch of 8): real English cut into
  SAMPLE_LEN GPT-2 ids, decoded as the released evaluations decode (4.38's cleanup), some
  with EOS inside."""
  tok = transformers.AutoTokenizer.from_pretrained(gpt2_bpe)
  stream = []
  for d in english_docs:
    stream += tok.encode(d) + [tok.eos_token_id]
  rows = np.asarray(stream[:11 * SAMPLE_LEN], np.int32).reshape(11, SAMPLE_LEN)
  assert (rows == tok.eos_token_id).any(axis=1).sum() >= 4
  texts = judges.decode_texts(tok, rows, clean_up_tokenization_spaces=True)
  return rows, texts


def test_gen_ppl_equals_the_torch_protocol_and_buckets_change_only_the_cost(
    bpe_gpt2_judge, samples):
  _, texts = samples
  model = genppl.load_gpt2(str(bpe_gpt2_judge.flax))
  mesh = sharding.make_mesh()
  full = genppl.GenPPLEvaluator(model, max_length=SAMPLE_LEN, batch_size=8, mesh=mesh,
                                progress=False).score(texts, group_size=8)
  bucketed = genppl.GenPPLEvaluator(model, max_length=SAMPLE_LEN, batch_size=8, mesh=mesh,
                                    buckets=(16, 32, 64), progress=False
                                    ).score(texts, group_size=8)
  ref_ppl, ref_nll, ref_w = torch_protocol(bpe_gpt2_judge.pt, texts, SAMPLE_LEN,
                                           bpe_gpt2_judge.context, group_size=8)
  chex.assert_trees_all_close(full.gen_ppl, ref_ppl, rtol=REL_TOL, atol=0)
  chex.assert_trees_all_equal(full.sample_weight_sum, ref_w)
  chex.assert_trees_all_close(full.sample_nll_sum, ref_nll, rtol=REL_TOL, atol=0)
  # Same chunks, fewer filler columns: the same numbers up to float32 reassociation of
  # the (shorter) matmuls, per sample.
  chex.assert_trees_all_equal(bucketed.sample_weight_sum, full.sample_weight_sum)
  chex.assert_trees_all_close(bucketed.sample_nll_sum, full.sample_nll_sum, rtol=1e-6, atol=0)
  # Context 256 vs samples of <= 32 GPT-2 tokens: 8x fewer judged positions (two jitted
  # batches of 8 rows each, the second filled with weight-0 rows).
  assert full.judged_positions == 16 * 256
  assert bucketed.judged_positions == 16 * 32
  print(f"judged positions: {full.judged_positions} at full context, "
        f"{bucketed.judged_positions} bucketed")


def test_judge_from_config_records_the_protocol_choices(bpe_gpt2_judge, gpt2_bpe, samples):
  rows, texts = samples
  cfg = eval_config.judge_config()
  cfg.judge, cfg.tokenizer, cfg.judge_batch = str(bpe_gpt2_judge.flax), gpt2_bpe, 8
  process = MDLMProcess(vocab_size=50258)
  judge = judges.build_judge(cfg, process=process, max_length=SAMPLE_LEN,
                             mesh=sharding.make_mesh(), progress=False)
  assert judge.settings["clean_up_tokenization_spaces"] is True
  assert judge.settings["buckets"] == [128, 256, 512]
  assert judge.settings["partial_batches"] == "scored"
  assert judge.decode(rows) == texts
  cfg.clean_up_tokenization_spaces = False
  raw = judges.build_judge(cfg, process=process, max_length=SAMPLE_LEN,
                           mesh=sharding.make_mesh(), progress=False)
  assert raw.decode(rows) != texts
  cfg.judge_buckets = (1,)
  with pytest.raises(judges.EvalError, match=r"config.judge_buckets must hold integers >= 2"):
    judges.build_judge(cfg, process=process, max_length=SAMPLE_LEN, mesh=sharding.make_mesh())
