"""FIFO ring buffers of detached pooled features (TokenDrift Alg. 1 line 11, App. F).

A :class:`FeatureQueue` is a pytree of three device arrays, so it lives inside the train
state, is donated and sharded like any other leaf (replicated: every device holds the same
queue), and is pushed inside the jitted step:

* ``buf``   float [Q, m]: slots; never-written slots stay zero and are masked, never read.
* ``ptr``   int32 []: the next slot to write.
* ``count`` int32 []: how many slots hold features (≤ Q).

The entries, oldest to newest, sit in slots (ptr − count + k) mod Q for k = 0 … count − 1.
A push of n rows writes them in order starting at ``ptr`` (wrapping), evicting the oldest;
if n > Q only the newest Q rows survive. Q and n are static (array shapes), the pointer
arithmetic is traced, and the write is one scatter of min(n, Q) rows.
"""

from __future__ import annotations

import chex
import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class FeatureQueue:
  buf: jax.Array    # [Q, m]
  ptr: jax.Array    # int32 []
  count: jax.Array  # int32 []

  @property
  def capacity(self) -> int:
    return self.buf.shape[0]

  @property
  def dim(self) -> int:
    return self.buf.shape[1]


def init_queue(capacity: int, dim: int, dtype=jnp.float32) -> FeatureQueue:
  """An empty queue of ``capacity`` slots for ``dim``-sized features (zero-filled)."""
  if int(capacity) < 1:
    raise ValueError(f"queue capacity must be >= 1, got {capacity}")
  if int(dim) < 1:
    raise ValueError(f"queue feature dim must be >= 1, got {dim}")
  return FeatureQueue(
      buf=jnp.zeros((int(capacity), int(dim)), dtype=dtype),
      ptr=jnp.zeros((), dtype=jnp.int32),
      count=jnp.zeros((), dtype=jnp.int32))


def _check(queue: FeatureQueue) -> None:
  """Trace-time contract of a queue: buf [Q, m], ptr and count int scalars."""
  chex.assert_rank(queue.buf, 2)
  chex.assert_rank([queue.ptr, queue.count], 0)
  chex.assert_type([queue.ptr, queue.count], int)


def _slots(q: int) -> jax.Array:
  return jnp.arange(q, dtype=jnp.int32)


def _start(queue: FeatureQueue) -> jax.Array:
  """Slot of the oldest entry."""
  return jnp.mod(queue.ptr - queue.count, queue.capacity).astype(jnp.int32)


def push(queue: FeatureQueue, feats: jax.Array) -> FeatureQueue:
  """Appends ``feats`` [n, m] (stop-gradient), evicting the oldest; returns the new queue."""
  _check(queue)
  if feats.ndim != 2 or feats.shape[1] != queue.dim:
    raise ValueError(f"queue push expects features of shape [n, {queue.dim}], got {feats.shape}")
  q, n = queue.capacity, feats.shape[0]
  if n == 0:
    return queue
  keep = min(n, q)
  rows = jax.lax.stop_gradient(feats[n - keep:]).astype(queue.buf.dtype)
  # Rows n-keep … n-1 of a sequential write that starts at ptr land here:
  idx = jnp.mod(queue.ptr + (n - keep) + _slots(keep), q).astype(jnp.int32)
  buf = queue.buf.at[idx].set(rows, unique_indices=True, mode="promise_in_bounds")
  ptr = jnp.mod(queue.ptr + n, q).astype(jnp.int32)
  count = jnp.minimum(queue.count + n, q).astype(jnp.int32)
  return FeatureQueue(buf=buf, ptr=ptr, count=count)


def valid_mask(queue: FeatureQueue) -> jax.Array:
  """bool [Q]: True for slots that hold a pushed feature."""
  _check(queue)
  age = jnp.mod(_slots(queue.capacity) - _start(queue), queue.capacity)
  return age < queue.count


def ordered(queue: FeatureQueue) -> tuple[jax.Array, jax.Array]:
  """(rows [Q, m], valid [Q]): entries oldest→newest first, then the empty slots."""
  _check(queue)
  idx = jnp.mod(_start(queue) + _slots(queue.capacity), queue.capacity)
  return queue.buf[idx], _slots(queue.capacity) < queue.count


def fill_fraction(queue: FeatureQueue) -> jax.Array:
  """count / Q as float32 (the diagnostic "queue fill")."""
  return queue.count.astype(jnp.float32) / jnp.float32(queue.capacity)
