"""Training checkpoints with orbax's CheckpointManager (``WORKDIR/checkpoints``).

Each step directory holds three items:

* ``state``: the TrainState pytree (params, optimizer, EMA, queues, RNG, step), restored
  onto the shardings of an abstract target, so a checkpoint resumes on any mesh;
* ``data``: the input iterator's state (JSON; identical on every process);
* ``meta``: JSON with the config, written for humans and for mismatch checks.

orbax writes each step to a temporary directory and renames it when complete, so an
interrupted save never leaves a checkpoint that looks valid.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Thin wrapper: save(step, state, data_state, meta) / latest_step() / restore(...)."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, save_every: int = 1000):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.save_every = int(save_every)
    options = ocp.CheckpointManagerOptions(max_to_keep=int(max_to_keep), create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state: Any, data_state: dict, meta: dict, *, force: bool = False
           ) -> bool:
    if not force and step in self.manager.all_steps():
      return False
    saved = self.manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(data_state),
                                meta=ocp.args.JsonSave(meta)),
        force=True)
    self.manager.wait_until_finished()
    return bool(saved)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
    """Restores (state, data_state, meta) at ``step`` onto ``abstract_state``'s shardings."""
    out = self.manager.restore(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["data"]), dict(out["meta"])

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def peek_latest_meta(workdir: str) -> tuple[int, dict] | None:
  """(step, meta) of the newest checkpoint under ``workdir`` without creating anything."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return None
  manager = ocp.CheckpointManager(directory,
                                  options=ocp.CheckpointManagerOptions(create=False,
                                                                       read_only=True),
                                  item_names=("state", "data", "meta"))
  try:
    step = manager.latest_step()
    if step is None:
      return None
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    return int(step), dict(meta)
  finally:
    manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each leaf's sharding (the restore target)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree)
