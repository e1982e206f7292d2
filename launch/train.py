"""Train: ``python launch/train.py --config=configs/mdlm_drift.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.optim.lr=5e-5``
(``--config=FILE --help`` lists them with their defaults; a misspelled field or a missing
config file is one ``error: ...`` line and exit status 2). Multi-host runs set
``--config.distributed.*`` (or rely on the cluster environment) and start the same command
on every host. A config that defines ``experiment`` (e.g. configs/demo.py) runs that
experiment instead of a single training run.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from tokendrift_jax import malloc
from tokendrift_jax import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "training config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, logs)")


def main(argv):
  del argv
  from tokendrift_jax import entrypoints  # pylint: disable=import-outside-toplevel
  sys.exit(entrypoints.train_main(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  malloc.use_allocator_tunables()   # re-executes under glibc's allocator tunables (tokendrift_jax/malloc.py)
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=runtime.flags_parser("configs/mdlm_drift.py"))
