"""Times one TokenDrift drift-plus-queue micro-step at given queue sizes.

What is timed (jitted, queues donated, full queues): building the Alg. 1 reference sets
(current features ∪ queue, self-exclusion and validity masks), the multi-temperature drift
field for N anchors, the fixed-point loss, and pushing the N real and N generated features.
A second measurement per size times the queue pushes alone. Asserts nothing.

``measure`` is what ``launch/benchmark.py --drift_share`` puts next to each drift step's
time (``tokendrift_jax/perf/benchmark.py``); ``launch/bench_drift.py`` prints ``table`` of it
on its own.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

from tokendrift_jax.drift import objective as obj
from tokendrift_jax.drift import queue as qlib


def _unit(key, shape):
  x = jax.random.normal(key, shape, jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _full_queue(key, capacity, dim):
  return qlib.FeatureQueue(buf=_unit(key, (capacity, dim)), ptr=jnp.zeros((), jnp.int32),
                           count=jnp.full((), capacity, jnp.int32))


def _time(fn, args, iters):
  """Median wall time (s) of ``iters`` calls; fn returns (outputs, new queue args)."""
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    out, args = fn(*args)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  return statistics.median(times), args


def measure(q_sizes=(1024, 65536), dim=1536, batch=8, iters=5,
            normalization="joint", seed=0) -> list[dict]:
  """Per queue size: compile time and median step time (ms) of drift+push and push alone."""
  results = []
  for q in q_sizes:
    config = obj.DriftConfig(queue_size=q, normalization=normalization)
    keys = jax.random.split(jax.random.key(seed), 4)
    h, u = _unit(keys[0], (batch, dim)), _unit(keys[1], (batch, dim))
    q_real, q_gen = _full_queue(keys[2], q, dim), _full_queue(keys[3], q, dim)

    def drift_step(h, u, q_real, q_gen, config=config):
      v, diag = obj.drift_from_features(h, u, q_real, q_gen, config)
      loss = obj.fixed_point_loss(h, v)
      q_real, q_gen = obj.push_features(q_real, q_gen, u, h, after=v)
      return (loss, diag), q_real, q_gen

    def push_step(h, u, q_real, q_gen):
      q_real, q_gen = obj.push_features(q_real, q_gen, u, h)
      return q_real.ptr, q_real, q_gen

    row = {"Q": q, "m": dim, "N": batch, "queue_MiB": 2 * q * dim * 4 / 2 ** 20}
    for name, step in (("drift+push", drift_step), ("push", push_step)):
      jitted = jax.jit(step, donate_argnums=(2, 3))

      def call(h, u, q_real, q_gen, jitted=jitted):
        out, q_real, q_gen = jitted(h, u, q_real, q_gen)
        return out, (h, u, q_real, q_gen)

      start = time.perf_counter()
      out, args = call(h, u, q_real, q_gen)
      jax.block_until_ready(out)
      row[f"{name}_first_s"] = time.perf_counter() - start
      row[f"{name}_ms"], (h, u, q_real, q_gen) = _time(call, args, iters)
      row[f"{name}_ms"] *= 1e3
    results.append(row)
  return results


def table(rows: list[dict]) -> str:
  """The plain-text table of ``measure``'s rows (one line per queue size)."""
  lines = [f"{'Q':>7} {'m':>5} {'N':>3} {'queues MiB':>10} {'drift+push ms':>14} "
           f"{'push ms':>8} {'1st call s':>10}"]
  for r in rows:
    lines.append(f"{r['Q']:>7} {r['m']:>5} {r['N']:>3} {r['queue_MiB']:>10.1f} "
                 f"{r['drift+push_ms']:>14.2f} {r['push_ms']:>8.3f} "
                 f"{r['drift+push_first_s']:>10.2f}")
  return "\n".join(lines)
