"""Look at a backbone's samples: ``python launch/sample.py CKPT --tokenizer DIR``.

Prints ``--num-samples`` samples per seed at ``--nfe`` steps, one block per sample with
the seed and NFE in its header, and writes them to ``--out`` (default ./samples.jsonl);
``--compare CKPT2`` prints a second checkpoint's samples beside the first's, drawn with the
same keys. CKPT is a backbone checkpoint (a converted release, a run's WORKDIR/backbone) or
a training checkpoint (WORKDIR, WORKDIR/checkpoints[/STEP]; ``--weights raw|ema``). User
errors are one ``error: ...`` line and exit status 2. The work is done by
tokendrift_jax/eval/samples_cli.py.
"""

from __future__ import annotations

import sys

from tokendrift_jax import malloc


def _reader(path, weights):
  from convert.export import Source  # pylint: disable=import-outside-toplevel
  source = Source(path, weights=weights)
  return source.config, source.meta


def _loader(path, weights):
  from convert.export import Source  # pylint: disable=import-outside-toplevel
  source = Source(path, weights=weights)
  return source.config, source.params(), source.meta


if __name__ == "__main__":
  malloc.use_allocator_tunables()   # re-executes under glibc's allocator tunables (tokendrift_jax/malloc.py)
  from tokendrift_jax.eval import samples_cli  # pylint: disable=import-outside-toplevel
  sys.exit(samples_cli.run(sys.argv[1:], reader=_reader, loader=_loader))
