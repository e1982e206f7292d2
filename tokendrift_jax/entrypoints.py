"""Process-level entry points of the launch scripts: start-up, dispatch, one-line errors.

``train_main`` is what ``launch/train.py`` runs. It sits above ``train/`` and ``eval/`` (it
builds the Fig. 2 sampling hook from ``eval/`` and hands it to the trainer), so neither
package imports the other.
"""

from __future__ import annotations

import importlib
import logging
import sys

import ml_collections

from tokendrift_jax import checkpoints
from tokendrift_jax import runtime


def _user_errors() -> tuple[type[BaseException], ...]:
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.data import sources
  from tokendrift_jax.train import trainer
  return (trainer.TrainError, checkpoints.CheckpointError, sources.SourceNotFoundError,
          FileNotFoundError, ValueError)


def _setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # Orphaned tensorstore/orbax tasks of a failed checkpoint read log "Event loop is closed"
  # tracebacks; the read failure itself is reported in one line by the trainer.
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def train_main(config: ml_collections.ConfigDict, workdir: str | None) -> int:
  """Runs the training (or the experiment) ``config`` describes; returns the exit code.

  0 when done, 143 when preempted by SIGTERM and 130 when stopped by Ctrl-C (both after a
  checkpoint: rerun the same command to resume), 2 for a user error, printed as one line
  ``error: ...`` before anything is written, or for a non-finite training state (one line;
  its metrics row is in metrics.jsonl and no non-finite checkpoint was saved). A second
  Ctrl-C aborts at once: one line ``error: interrupted ...``, exit 130.
  """
  # pylint: disable=import-outside-toplevel
  _setup_logging()
  repeated = runtime.repeated_sequence_overrides(sys.argv, config)
  if repeated:
    print(f"error: {repeated}", file=sys.stderr)
    return 2
  workdir = workdir or config.get("workdir")
  if not workdir:
    print("error: pass --workdir=DIR (where checkpoints and metrics go)", file=sys.stderr)
    return 2
  runtime.init_distributed(config.get("distributed", ml_collections.ConfigDict()))
  from tokendrift_jax.train import trainer
  try:
    experiment = config.get("experiment")
    if experiment:
      module = importlib.import_module(f"tokendrift_jax.experiments.{experiment}")
      return int(module.run(config, workdir) or 0)
    from tokendrift_jax.eval import hook
    trainer.check_config(config)   # before the hook loads its judge
    hooks = []
    if config.get("sample_eval") and config.sample_eval.enabled:
      hooks.append(hook.make_sample_eval_hook(config, workdir))
    summary = trainer.train(config, workdir, hooks=hooks)
  except _user_errors() as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:
    print(f"error: {str(e) or 'interrupted (Ctrl-C) before training started'}", file=sys.stderr)
    return trainer.EXIT_INTERRUPTED
  if summary.get("preempted"):
    what = "interrupted (Ctrl-C)" if summary.get("signal") == "SIGINT" else "preempted"
    print(f"{what} at step {summary['step']}; checkpoint in {summary['workdir']}/checkpoints"
          f" (rerun the same command to resume)")
    return int(summary.get("exit_code", trainer.EXIT_PREEMPTED))
  print(f"done: step {summary['step']} in {summary['workdir']}"
        + (f"; backbone exported to {summary['backbone']}" if summary.get("backbone") else ""))
  return 0
