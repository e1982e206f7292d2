"""FIFO feature queues vs a collections.deque reference (TokenDrift Alg. 1 line 11, Table 5).

``push`` runs under ``chex.variants(with_jit=True, without_jit=True)``: traced (as in the
train step) and eagerly (Q = 1024 jitted only: each push size compiles anew without jit).
"""

from __future__ import annotations

import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from tokendrift_jax.drift import queue as qlib

DIM = 3


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
  chex.assert_trees_all_equal(got[:count], want)
  # The valid slots hold exactly the queued rows (as a multiset: rows sorted on both
  # sides, the slot order is checked above through ``ordered``); the others were never
  # written.
  buf = np.asarray(queue.buf)
  mask = np.asarray(qlib.valid_mask(queue))
  chex.assert_trees_all_equal(np.array(sorted(map(tuple, buf[mask])), np.float32).reshape(-1, DIM),
                              np.array(sorted(map(tuple, want)), np.float32).reshape(-1, DIM))
  chex.assert_trees_all_equal(buf[~mask], np.zeros_like(buf[~mask]))
  chex.assert_trees_all_close(qlib.fill_fraction(queue), np.float32(count / queue.capacity),
                              rtol=1e-7)


def check_fifo(push, capacity):
  """Pushes of several sizes through ``push`` (jitted or not) vs the deque reference."""
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


class QueueVariantsTest(chex.TestCase):
  """push traced and eager; the deque is the reference."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(4, 64)
  def test_fifo_order_wraparound_and_eviction(self, capacity):
    check_fifo(self.variant(qlib.push), capacity)

  @chex.variants(with_jit=True, without_jit=True)
  def test_oldest_evicted_small_example(self):
    push = self.variant(qlib.push)
    q = qlib.init_queue(4, DIM)
    q = push(q, rows(1, 3))
    q = push(q, rows(4, 2))  # 1 is evicted, the write wraps to slot 0
    got, valid = qlib.ordered(q)
    chex.assert_trees_all_equal(
        (got[:, 0], valid, q.ptr, q.count, q.buf[:, 0]),
        (np.float32([2, 3, 4, 5]), np.ones(4, bool), np.int32(1), np.int32(4),
         np.float32([5, 2, 3, 4])))

  @chex.variants(with_jit=True, without_jit=True)
  def test_partial_fill_mask_and_dtypes(self):
    push = self.variant(qlib.push)
    q = push(qlib.init_queue(8, DIM), rows(10, 3))
    chex.assert_trees_all_equal(qlib.valid_mask(q), np.arange(8) < 3)
    chex.assert_type([q.ptr, q.count], jnp.int32)
    with jax.enable_x64(True):
      q64 = push(q, rows(13, 2).astype(np.float64))
      chex.assert_type([q64.ptr, q64.count], jnp.int32)
      chex.assert_type(q64.buf, jnp.float32)
    chex.assert_trees_all_equal(qlib.valid_mask(q64), np.arange(8) < 5)


def test_push_is_stop_gradient_and_bad_shape_raises():
  q = qlib.init_queue(4, DIM)
  g = jax.grad(lambda x: jnp.sum(qlib.push(q, x).buf))(jnp.ones((2, DIM)))
  chex.assert_trees_all_equal(g, jnp.zeros((2, DIM)))
  with pytest.raises(ValueError, match=r"shape \[n, 3\]"):
    qlib.push(q, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="capacity"):
    qlib.init_queue(0, DIM)


def test_fifo_order_wraparound_and_eviction_1024():
  """The paper's Q = 1024, jitted only (the variants above run Q = 4 and 64)."""
  check_fifo(jax.jit(qlib.push), 1024)
