"""Conditional judging (prompted LLaDA samples): each completion is scored given its prompt.

The Flax judge (``GenPPLEvaluator.score(texts, prompts=...)``) against an independent
float64 PyTorch reference of the definition (``torch_conditional`` in
tests/references/torch_genppl.py), on the tiny random GPT-2 (context 32): prompts that fit,
one that must be cut from the left to fit the window, an empty one, completions longer
than max_length (truncated), EOS inside prompts and completions, a partial last group.
"""

from __future__ import annotations

import chex
import numpy as np
import pytest

from tests.references.torch_genppl import torch_conditional
from tokendrift_jax import sharding
from tokendrift_jax.eval import genppl

CONTEXT = 32      # tiny_gpt2_judge's n_positions
MAX_LENGTH = 12   # the completions' retokenization length (the sampled completion length)
GROUP = 2         # pairs per tokenizer call: 7 pairs leave a partial last group
EOS = "<|endoftext|>"
# As tests/eval/test_genppl.py: float32 judge vs float64 reference, NLLs of O(5) agree to
# ~1e-6 relative; one token weighted wrongly (a prompt token scored, say: ~1/60 of the sum)
# would be off by far more than 1e-4.
REL_TOL = 1e-4

PAIRS = [
    ("the quick brown fox", " jumps over the lazy dog"),
    ("sea shells" + EOS + " by the", " shore the sailor sat on the mat" + EOS + " cat"),
    ("", "hello world"),
    # 40+ prompt tokens: only its last CONTEXT - len(completion) tokens fit.
    (" ".join(["diffusion model tokens judge entropy"] * 8), " sat on the mat"),
    ("the cat", " sat on the mat and the dog sat on the cat and the fox"),   # > MAX_LENGTH
    ("reddit", EOS + EOS + " lazy"),
    ("Zebra ÿ ünïcödé", " €42 !!"),
]


@pytest.fixture(scope="module")
def judge(tiny_gpt2_judge):
  model = genppl.load_gpt2(str(tiny_gpt2_judge.flax))
  return genppl.GenPPLEvaluator(model, max_length=MAX_LENGTH, batch_size=8,
                                mesh=sharding.make_mesh(), buckets=(16,), progress=False)


def test_conditional_gen_ppl_equals_the_torch_reference(judge, tiny_gpt2_judge):
  prompts, completions = [p for p, _ in PAIRS], [c for _, c in PAIRS]
  got = judge.score(completions, prompts=prompts, group_size=GROUP)
  ref_ppl, ref_nll, ref_w = torch_conditional(tiny_gpt2_judge.pt, prompts, completions,
                                              MAX_LENGTH, CONTEXT, group_size=GROUP)
  chex.assert_trees_all_equal(got.sample_weight_sum, ref_w)
  chex.assert_trees_all_close(got.sample_nll_sum, ref_nll, rtol=REL_TOL, atol=0)
  chex.assert_trees_all_close(got.gen_ppl, ref_ppl, rtol=REL_TOL, atol=0)
  # Only completion tokens are scored: at most MAX_LENGTH (+ one padding EOS) per pair.
  assert np.all(got.sample_weight_sum <= MAX_LENGTH + 1)
  # The prompt is context: the same completions judged alone score differently.
  alone = judge.score(completions, group_size=GROUP)
  assert not np.allclose(alone.sample_nll_sum, got.sample_nll_sum, rtol=1e-3)


def test_conditional_pairs_are_checked(judge):
  with pytest.raises(ValueError, match="2 prompts for 3 texts"):
    judge.score(["a", "b", "c"], prompts=["x", "y"])
  with pytest.raises(ValueError, match=r"prompts\[1\] is a int"):
    judge.score(["a", "b"], prompts=["x", 3])
  wide = genppl.GenPPLEvaluator(judge.model, max_length=CONTEXT, batch_size=8,
                                mesh=judge.mesh, progress=False)
  with pytest.raises(ValueError, match="leaves no room for a prompt"):
    wide.score(["a"], prompts=["x"])
