"""data/wrap: MDLM wrap semantics against an independent reference."""

from __future__ import annotations

import chex
import numpy as np
import pytest

from tests.references.mdlm_wrap import ref_wrap
from tokendrift_jax.data import wrap as wrap_lib


def random_docs(rng: np.random.Generator, n: int, vocab: int = 50) -> list[list[int]]:
  # Lengths 0..30 so that documents are shorter, equal to and longer than a piece.
  return [rng.integers(0, vocab, size=rng.integers(0, 31)).tolist() for _ in range(n)]


def test_wrap_hand_worked_example():
  # docs + EOS: 1 2 3 E 4 5 E -> pieces of 3: [1 2 3] [E 4 5], remainder [E] dropped.
  out = wrap_lib.wrap_documents([[1, 2, 3], [4, 5]], length=5, bos=90, eos=99)
  chex.assert_trees_all_equal(out, np.array([[90, 1, 2, 3, 99], [90, 99, 4, 5, 99]]))
  chex.assert_type(out, np.int32)


def test_wrap_too_short_group_gives_no_block():
  out = wrap_lib.wrap_documents([[1], [2]], length=8, bos=0, eos=9)  # 4 tokens < 6
  chex.assert_shape(out, (0, 8))
  chex.assert_type(out, np.int32)


@pytest.mark.parametrize("length", [3, 8, 17])
def test_wrap_documents_matches_reference(length):
  rng = np.random.default_rng(length)
  docs = random_docs(rng, 40)
  docs[3] = []  # an empty document still contributes its EOS
  got = wrap_lib.wrap_documents(docs, length=length, bos=50, eos=51)
  chex.assert_trees_all_equal(got, ref_wrap(docs, length, 50, 51, None))


@pytest.mark.parametrize("group_docs,flush_docs", [(1, 1), (4, 1000), (7, 1000), (None, 1),
                                                    (None, 3), (None, 1000)])
def test_iter_wrapped_blocks_matches_reference(group_docs, flush_docs):
  rng = np.random.default_rng(0)
  docs = random_docs(rng, 37)
  parts = list(wrap_lib.iter_wrapped_blocks(iter(docs), length=10, bos=50, eos=51,
                                            group_docs=group_docs, flush_docs=flush_docs))
  got = np.concatenate(parts)
  chex.assert_trees_all_equal(got, ref_wrap(docs, 10, 50, 51, group_docs))


def test_group_remainder_dropped_per_group():
  # 4 documents of 3 tokens (EOS included), pieces of 4. Groups of 2 documents:
  # 6 tokens -> 1 block each, "4 E" and "8 E" dropped. One group: 12 tokens -> 3 blocks.
  docs = [[1, 2], [3, 4], [5, 6], [7, 8]]
  per_group = np.concatenate(list(wrap_lib.iter_wrapped_blocks(
      docs, length=6, bos=0, eos=9, group_docs=2)))
  chex.assert_trees_all_equal(per_group, np.array([[0, 1, 2, 9, 3, 9], [0, 5, 6, 9, 7, 9]]))
  whole = wrap_lib.wrap_documents(docs, length=6, bos=0, eos=9)
  chex.assert_trees_all_equal(whole, np.array([[0, 1, 2, 9, 3, 9], [0, 4, 9, 5, 6, 9],
                                                [0, 9, 7, 8, 9, 9]]))
