"""Times one TokenDrift drift-plus-queue micro-step at queue sizes 1024 and 65536.

What is timed (jitted, queues donated, full queues): building the Alg. 1 reference sets
(current features ∪ queue, self-exclusion and validity masks), the multi-temperature drift
field for N anchors, the fixed-point loss, and pushing the N real and N generated features.
A second line per size times the queue pushes alone. Prints a table; asserts nothing.

  python launch/bench_drift.py            # m = 1536 (2 x 768), N = 8, Q = 1024 and 65536
  python launch/bench_drift.py --quick    # seconds-long smoke run (m = 128, 2 timed steps)

``measure`` is importable so a caller can print the model-pass cost next to these numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tokendrift_jax.drift import objective as obj  # noqa: E402
from tokendrift_jax.drift import queue as qlib  # noqa: E402


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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="m = 128, 2 timed steps")
  parser.add_argument("--q-sizes", type=int, nargs="+", default=[1024, 65536])
  parser.add_argument("--dim", type=int, default=1536, help="feature size m = 2d")
  parser.add_argument("--batch", type=int, default=8, help="anchors N per micro-step")
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--normalization", default="joint", choices=["joint", "drifting_alg2"])
  args = parser.parse_args(argv)
  dim, iters = (128, 2) if args.quick else (args.dim, args.iters)
  print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"normalization {args.normalization}, median of {iters} steps")
  rows = measure(args.q_sizes, dim, args.batch, iters, args.normalization)
  print(f"{'Q':>7} {'m':>5} {'N':>3} {'queues MiB':>10} {'drift+push ms':>14} "
        f"{'push ms':>8} {'1st call s':>10}")
  for r in rows:
    print(f"{r['Q']:>7} {r['m']:>5} {r['N']:>3} {r['queue_MiB']:>10.1f} "
          f"{r['drift+push_ms']:>14.2f} {r['push_ms']:>8.3f} {r['drift+push_first_s']:>10.2f}")


if __name__ == "__main__":
  main()
