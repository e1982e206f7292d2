"""Sample entropy == a float64 NumPy reference written from -sum_v p_v log p_v."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from tokendrift_jax.eval import entropy


def _numpy_entropy(row: np.ndarray) -> float:
  _, counts = np.unique(row, return_counts=True)
  p = counts.astype(np.float64) / counts.sum()
  return float(-(p * np.log(p)).sum())


def _fixed_tokens() -> np.ndarray:
  rng = np.random.default_rng(0)
  rows = [
      np.full(64, 50256),                      # one id: H = 0
      np.arange(64) * 797,                     # all distinct: H = log 64
      np.repeat(np.arange(8), 8),              # 8 ids, uniform: H = log 8
      np.array([3] * 48 + [5] * 16),           # p = (3/4, 1/4)
      rng.integers(0, 50258, size=64),         # GPT-2-sized vocabulary + mask id
      rng.zipf(1.3, size=64) % 50257,          # skewed, many repeats
      np.concatenate([np.arange(32), np.arange(32)[::-1]]),
  ]
  return np.stack(rows).astype(np.int32)


def test_matches_numpy_reference():
  tokens = _fixed_tokens()
  got = np.asarray(entropy.sample_entropy(tokens))
  want = np.array([_numpy_entropy(r) for r in tokens])
  chex.assert_type(got, np.float32)
  chex.assert_shape(got, (tokens.shape[0],))
  # float32 logs of counts <= 64 averaged over 64 positions: ~1e-7 relative; 1e-6
  # absolute covers the zero-entropy row and rounding of log(64) ~ 4.16.
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
  # The reference itself on the hand-computed rows (float64: 1e-12 absolute).
  chex.assert_trees_all_close(
      want[:4], np.array([0.0, np.log(64), np.log(8),
                          -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))]), rtol=1e-7, atol=1e-12)
  assert entropy.mean_entropy(tokens) == pytest.approx(want.mean(), rel=1e-6)


def test_jittable_and_same_under_x64():
  tokens = _fixed_tokens()
  base = np.asarray(entropy.sample_entropy(tokens))
  with jax.enable_x64(True):
    wide = np.asarray(entropy.sample_entropy(tokens.astype(np.int64)))
  chex.assert_type(wide, np.float32)
  chex.assert_trees_all_close(wide, base, rtol=1e-6, atol=1e-7)
  jitted = jax.jit(entropy.sample_entropy)
  chex.assert_trees_all_close(jitted(tokens), base, rtol=1e-6, atol=1e-7)


def test_bad_inputs():
  with pytest.raises(ValueError, match="at least one sample"):
    entropy.sample_entropy(np.zeros((0, 8), np.int32))
  with pytest.raises(ValueError, match="length >= 1"):
    entropy.sample_entropy(np.zeros((2, 0), np.int32))
  with pytest.raises(ValueError, match=r"int\[B, L\].*\(8,\)"):
    entropy.sample_entropy(np.zeros((8,), np.int32))
  with pytest.raises(ValueError, match="integer"):
    entropy.sample_entropy(np.zeros((2, 8), np.float32))
