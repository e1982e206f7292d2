"""Sample entropy: entropy of each sample's token-id frequencies (DUO ``record_entropy``).

For one sample x of length L with count c_v of token id v, p_v = c_v / L and
H(x) = -sum_v p_v log p_v (nats). The reported number is the mean of H over
samples. It is computed on the diffusion model's token ids, before decoding.

Implementation: with c(x_t) the count of the token at position t,
sum_v p_v log p_v = sum_t (1/L) log(c(x_t)/L), so H = -mean_t log(c(x_t) / L).
The counts come from a sort and two searchsorted calls: O(L log L), no [L, V]
histogram, jittable with static shapes.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np


def _check_tokens(tokens) -> None:
  shape = tuple(np.shape(tokens))
  if len(shape) != 2:
    raise ValueError(f"tokens must be int[B, L], got shape {shape}")
  if shape[0] == 0:
    raise ValueError(f"entropy needs at least one sample, got tokens of shape {shape}")
  if shape[1] == 0:
    raise ValueError(f"entropy needs samples of length >= 1, got tokens of shape {shape}")
  dtype = np.dtype(tokens.dtype) if hasattr(tokens, "dtype") else np.asarray(tokens).dtype
  if not np.issubdtype(dtype, np.integer):
    raise ValueError(f"tokens must be integer token ids, got dtype {dtype}")


def _row_entropy(row: jax.Array) -> jax.Array:
  s = jnp.sort(row)
  count = (jnp.searchsorted(s, row, side="right") - jnp.searchsorted(s, row, side="left"))
  length = jnp.asarray(row.shape[0], jnp.float32)
  return -jnp.mean(jnp.log(count.astype(jnp.float32) / length))


@jax.jit
def _entropy(tokens: jax.Array) -> jax.Array:
  # Trace-time contract (host inputs get the one-line errors of _check_tokens first).
  chex.assert_rank(tokens, 2)
  chex.assert_type(tokens, int)
  out = jax.vmap(_row_entropy)(tokens)
  chex.assert_shape(out, tokens.shape[:1])
  chex.assert_type(out, jnp.float32)
  return out


def sample_entropy(tokens) -> jax.Array:
  """Per-sample entropy of token-id frequencies.

  Args:
    tokens: int[B, L] token ids (B, L >= 1).

  Returns:
    float32[B], in nats.
  """
  _check_tokens(tokens)
  return _entropy(jnp.asarray(tokens))


def mean_entropy(tokens) -> float:
  """Mean over samples of :func:`sample_entropy` (the reported entropy)."""
  return float(np.mean(np.asarray(sample_entropy(tokens), np.float64)))
