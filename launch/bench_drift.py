"""Times one TokenDrift drift-plus-queue micro-step at queue sizes 1024 and 65536.

What is timed (jitted, queues donated, full queues): building the Alg. 1 reference sets
(current features ∪ queue, self-exclusion and validity masks), the multi-temperature drift
field for N anchors, the fixed-point loss, and pushing the N real and N generated features.
A second line per size times the queue pushes alone. Prints a table; asserts nothing.

  python launch/bench_drift.py            # m = 1536 (2 x 768), N = 8, Q = 1024 and 65536
  python launch/bench_drift.py --quick    # seconds-long smoke run (m = 128, 2 timed steps)

The measurement is ``tokendrift_jax/perf/drift_timing.py: measure`` (also what
``launch/benchmark.py --drift_share`` reports next to the model's step time).
"""

from __future__ import annotations

import argparse

import jax

from tokendrift_jax import malloc
from tokendrift_jax.perf import drift_timing


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
  rows = drift_timing.measure(args.q_sizes, dim, args.batch, iters, args.normalization)
  print(drift_timing.table(rows))


if __name__ == "__main__":
  malloc.use_allocator_tunables()   # re-executes under glibc's allocator tunables (tokendrift_jax/malloc.py)
  main()
