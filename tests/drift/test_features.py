"""drift/features: pooling over a subset of positions (prompt-conditioned "completion").

The reference is float64 NumPy: the mean of each of the last two hidden states over the
selected positions of each row, concatenated and L2-normalised.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax.drift import features as feat

B, L, D = 3, 7, 5


def _np_pool(pen, last, positions):
  """float64 h = normalize([mean_{t∈S} pen_t, mean_{t∈S} last_t]) per row."""
  w = np.asarray(positions, np.float64)[..., None]
  pooled = np.concatenate([(np.asarray(x, np.float64) * w).sum(1) / w.sum(1)
                           for x in (pen, last)], axis=-1)
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def _hidden(dtype):
  rng = np.random.default_rng(0)
  # Offsets per position make the all-position and subset means clearly different.
  hs = [rng.standard_normal((B, L, D)) + np.arange(L)[None, :, None] for _ in range(3)]
  return [jnp.asarray(h, dtype) for h in hs]


class PoolVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_positions_select_the_averaged_positions(self):
    hidden = _hidden(jnp.float32)
    # Rows: a prompt of 3 (completion 4), of 0 (all 7), of 6 (one completion position).
    plen = np.array([3, 0, 6])
    completion = np.arange(L)[None, :] >= plen[:, None]
    pool = self.variant(feat.pool_features)
    got = pool(hidden, jnp.asarray(completion))
    chex.assert_shape(got, (B, 2 * D))
    # float32 sums of ≤ 7 values of size ≲ 10 and one normalisation: ≲ 1e-6 of unit vectors.
    chex.assert_trees_all_close(got, _np_pool(*hidden[-2:], completion), rtol=0, atol=1e-6)
    got_all = pool(hidden, None)
    chex.assert_trees_all_close(got_all, _np_pool(*hidden[-2:], np.ones((B, L), bool)),
                                rtol=0, atol=1e-6)
    # Row 1 pools every position either way (identical programs of the mean up to
    # summation order); rows 0 and 2 drop the prompt and must move.
    chex.assert_trees_all_close(got[1], got_all[1], rtol=0, atol=1e-6)
    assert float(jnp.max(jnp.abs(got[0] - got_all[0]))) > 1e-2  # a lower bound: it selects
    assert float(jnp.max(jnp.abs(got[2] - got_all[2]))) > 1e-2

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_hidden_states_accumulate_in_float32(self):
    hidden = _hidden(jnp.bfloat16)
    completion = np.arange(L)[None, :] >= np.array([2, 4, 1])[:, None]
    got = self.variant(feat.pool_features)(hidden, jnp.asarray(completion))
    chex.assert_type(got, jnp.float32)
    # The reference reads the same bf16 values; only float32 accumulation differs.
    ref = _np_pool(*(np.asarray(h, np.float32) for h in hidden[-2:]), completion)
    chex.assert_trees_all_close(got, ref, rtol=0, atol=1e-6)


def test_positions_errors():
  hidden = _hidden(jnp.float32)
  with pytest.raises(ValueError, match=r"positions must be bool \[B, L\] = \(3, 7\)"):
    feat.pool_features(hidden, jnp.ones((B, L), jnp.int32))
  with pytest.raises(ValueError, match="positions must be bool"):
    feat.pool_features(hidden, jnp.ones((B, L - 1), bool))


def test_attention_mask_reaches_the_encoder_and_restricts_the_pool():
  """Padded rows: the encoder is called with the mask, and h pools the real positions
  (∩ the given positions) only; float64 NumPy reference of the pooling."""
  hidden = _hidden(jnp.float32)
  seen = {}

  def encoder_hidden(embeds, sigma, **kw):
    seen.update(kw)
    return hidden

  real = np.arange(L)[None, :] < np.array([7, 4, 5])[:, None]       # right padding
  completion = np.arange(L)[None, :] >= np.array([2, 0, 4])[:, None]
  embeds, sigma = jnp.zeros((B, L, D)), jnp.zeros((B,))
  got = feat.encoder_features(encoder_hidden, embeds, sigma, jnp.asarray(completion),
                              attention_mask=jnp.asarray(real))
  chex.assert_trees_all_equal(seen["attention_mask"], real)
  # float32 sums of ≤ 7 values of size ≲ 10 and one normalisation: ≲ 1e-6 of unit vectors.
  chex.assert_trees_all_close(got, _np_pool(*hidden[-2:], completion & real), rtol=0,
                              atol=1e-6)
  got = feat.encoder_features(encoder_hidden, embeds, sigma, attention_mask=jnp.asarray(real))
  chex.assert_trees_all_close(got, _np_pool(*hidden[-2:], real), rtol=0, atol=1e-6)
  with pytest.raises(ValueError, match=r"attention_mask must be bool \[B, L\] = \[3, 7\]"):
    feat.encoder_features(encoder_hidden, embeds, sigma, attention_mask=jnp.ones((B, L)))
