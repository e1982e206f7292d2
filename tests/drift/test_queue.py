"""FIFO feature queues vs a collections.deque reference (TokenDrift Alg. 1 line 11, Table 5)."""

from __future__ import annotations

import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax.drift import queue as qlib

DIM = 3
push = jax.jit(qlib.push)


def rows(start, n):
  """n distinct rows [start .. start+n) so every slot's identity is checkable."""
  ids = np.arange(start, start + n, dtype=np.float32)
  return np.stack([ids, -ids, ids + 0.5], axis=1)


def check_against(queue, ref: collections.deque):
  got, valid = qlib.ordered(queue)
  count = int(queue.count)
  assert count == len(ref)
  assert int(np.sum(np.asarray(valid))) == count == int(np.sum(np.asarray(qlib.valid_mask(queue))))
  want = np.array(list(ref), np.float32).reshape(-1, DIM)
  np.testing.assert_array_equal(np.asarray(got)[:count], want)
  # The valid slots hold exactly the queued rows, the others were never written.
  buf = np.asarray(queue.buf)
  mask = np.asarray(qlib.valid_mask(queue))
  assert sorted(map(tuple, buf[mask])) == sorted(map(tuple, want))
  assert np.all(buf[~mask] == 0.0)
  np.testing.assert_allclose(float(qlib.fill_fraction(queue)), count / queue.capacity)


@pytest.mark.parametrize("capacity", [4, 64, 1024])
def test_fifo_order_wraparound_and_eviction(capacity):
  queue = qlib.init_queue(capacity, DIM)
  ref = collections.deque(maxlen=capacity)
  check_against(queue, ref)
  start = 1
  # Pushes of 3 (several steps to wrap), 8 (the paper's micro-batch), n = Q, n > Q.
  sizes = [3, 3, 8, 8, 3] * 2 + [capacity, 3, capacity + 5, 8]
  for n in sizes:
    new = rows(start, n)
    start += n
    queue = push(queue, new)
    ref.extend(map(tuple, new))
    check_against(queue, ref)
  # The pushes of Q and Q + 5 rows above start mid-ring, so they wrap for every size.
  for _ in range(2):
    new = rows(start, 8)
    start += 8
    queue = push(queue, new)
    ref.extend(map(tuple, new))
  check_against(queue, ref)


def test_oldest_evicted_small_example():
  q = qlib.init_queue(4, DIM)
  q = push(q, rows(1, 3))
  q = push(q, rows(4, 2))  # 1 is evicted, the write wraps to slot 0
  got, valid = qlib.ordered(q)
  np.testing.assert_array_equal(np.asarray(got)[:, 0], [2, 3, 4, 5])
  assert np.all(np.asarray(valid))
  assert int(q.ptr) == 1 and int(q.count) == 4
  np.testing.assert_array_equal(np.asarray(q.buf)[:, 0], [5, 2, 3, 4])


def test_partial_fill_mask_and_dtypes():
  q = push(qlib.init_queue(8, DIM), rows(10, 3))
  np.testing.assert_array_equal(np.asarray(qlib.valid_mask(q)), [1, 1, 1, 0, 0, 0, 0, 0])
  chex.assert_type([q.ptr, q.count], jnp.int32)
  with jax.enable_x64(True):
    q64 = jax.jit(qlib.push)(q, rows(13, 2).astype(np.float64))
    chex.assert_type([q64.ptr, q64.count], jnp.int32)
    assert q64.buf.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(qlib.valid_mask(q64)), [1, 1, 1, 1, 1, 0, 0, 0])


def test_push_is_stop_gradient_and_bad_shape_raises():
  q = qlib.init_queue(4, DIM)
  g = jax.grad(lambda x: jnp.sum(qlib.push(q, x).buf))(jnp.ones((2, DIM)))
  assert np.all(np.asarray(g) == 0.0)
  with pytest.raises(ValueError, match=r"shape \[n, 3\]"):
    qlib.push(q, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="capacity"):
    qlib.init_queue(0, DIM)
