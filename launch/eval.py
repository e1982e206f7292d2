"""Evaluate a backbone: ``python launch/eval.py --config=configs/eval.py
--config.checkpoint=DIR --workdir=OUT``.

For every NFE in ``config.nfe`` and seed in ``config.seeds``: ``config.num_samples``
unconditional samples with the backbone's sampler (MDLM, DUO or LLaDA), decoded and scored
(Gen-PPL by the judge, entropy of the token ids); for LLaDA also completions of given
prompts (``config.prompt``), judged given their prompts. Writes ``OUT/results.json``, ``OUT/results.md`` (a Tables 1-2
shaped table, mean ± SD over seeds) and ``OUT/samples.jsonl``. Any config field can be
overridden, e.g. ``--config.nfe=(4,8) --config.judge=/data/gpt2-large-flax``;
``--config=configs/eval.py --help`` lists the fields with their defaults. A row is labelled
``config.label``, else by its run (``WORKDIR`` for a training run's ``WORKDIR/backbone``).

User errors (a misspelled ``--config.*`` field or a missing config file, missing
checkpoint or judge, vocabulary mismatch, empty sample set, a batch that does not divide
over the devices, ...) print one ``error: ...`` line to stderr and exit with status 2,
before any output is written. See docs/EVALUATION.md; the work is done
by tokendrift_jax/eval/cli.py.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from tokendrift_jax import malloc
from tokendrift_jax import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "evaluation config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (results.json, results.md, "
                                                "samples.jsonl)")


def main(argv):
  del argv
  from tokendrift_jax.eval import cli  # pylint: disable=import-outside-toplevel
  sys.exit(cli.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  malloc.use_allocator_tunables()   # re-executes under glibc's allocator tunables (tokendrift_jax/malloc.py)
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=runtime.flags_parser("configs/eval.py"))
