"""Process start-up shared by every entry point (train, eval, experiments).

Neutral ground between ``train/`` and ``eval/``: both launchers start ``jax.distributed``
and check their command lines here, so neither imports the other.
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections


def init_distributed(cfg: ml_collections.ConfigDict) -> None:
  """jax.distributed from config.distributed, or from the cluster environment ("auto").

  On CPU the cross-process collectives go through gloo.
  """
  mode = str(cfg.get("initialize", "auto"))
  explicit = bool(cfg.get("coordinator_address")) or int(cfg.get("num_processes", 0)) > 1
  if mode == "never" or (mode == "auto" and not explicit and not _cluster_env()):
    return
  if mode not in ("auto", "always", "never"):
    raise ValueError(f"config.distributed.initialize must be auto|always|never, got {mode!r}")
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if cfg.get("coordinator_address"):
    kwargs["coordinator_address"] = cfg.coordinator_address
  if int(cfg.get("num_processes", 0)) > 0:
    kwargs["num_processes"] = int(cfg.num_processes)
  if int(cfg.get("process_id", -1)) >= 0:
    kwargs["process_id"] = int(cfg.process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d global devices", jax.process_index(),
               jax.process_count(), jax.device_count())


def _cluster_env() -> bool:
  return any(v in os.environ for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                                       "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS"))


def repeated_sequence_overrides(argv, config: ml_collections.ConfigDict) -> str | None:
  """A message if a tuple / list field is overridden twice on the command line, else None.

  ml_collections concatenates repeated overrides of a sequence field (``--config.seeds=(0,1)
  --config.seeds=(2,)`` gives ``(0, 1, 2)``) instead of keeping the last one, so a script's
  default plus a user's override would silently run both; refuse it instead.
  """
  seen: dict[str, int] = {}
  for arg in argv:
    if arg.startswith("--config.") and len(arg) > len("--config."):
      field = arg[len("--config."):].split("=", 1)[0]
      seen[field] = seen.get(field, 0) + 1
  for field, count in seen.items():
    if count < 2:
      continue
    node = config
    try:
      for part in field.split("."):
        node = node[part]
    except (KeyError, AttributeError, TypeError):
      continue
    if isinstance(node, (tuple, list)):
      return (f"--config.{field} is given {count} times; ml_collections would concatenate the "
              f"values into {tuple(node)}; give it once")
  return None
