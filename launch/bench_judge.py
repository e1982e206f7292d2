"""Judged token positions and Gen-PPL with and without the judge's chunk buckets.

  python launch/bench_judge.py        # random 1-layer GPT-2, context 1024, 128-token samples
  python launch/bench_judge.py --judge DIR --length 1024

The measurement is ``tokendrift_jax/perf/judge_cost.py``; by default the judge is a random
GPT-2 with the GPT-2 tokenizer vendored in tests/assets/gpt2 (cost does not depend on the
weights), so it runs offline. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os

from tokendrift_jax import malloc
from tokendrift_jax.eval import eval_config
from tokendrift_jax.perf import judge_cost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--judge", default="", help="a judge directory (python -m convert.gpt2); "
                      "default: a random GPT-2 built with --tokenizer at --context")
  parser.add_argument("--tokenizer", default=os.path.join(ROOT, "tests", "assets", "gpt2"))
  parser.add_argument("--context", type=int, default=1024)
  parser.add_argument("--num-samples", type=int, default=32)
  parser.add_argument("--length", type=int, default=128, help="sample length in tokens")
  parser.add_argument("--batch", type=int, default=8, help="chunks per jitted judge call")
  parser.add_argument("--buckets", type=int, nargs="*",
                      default=list(eval_config.judge_config().judge_buckets))
  args = parser.parse_args(argv)
  print(judge_cost.run(judge=args.judge, tokenizer=args.tokenizer, context=args.context,
                       num_samples=args.num_samples, length=args.length, batch=args.batch,
                       buckets=tuple(args.buckets)))


if __name__ == "__main__":
  malloc.use_allocator_tunables()   # re-executes under glibc's allocator tunables (tokendrift_jax/malloc.py)
  main()
