"""Training checkpoints with orbax's CheckpointManager (``WORKDIR/checkpoints``).

Each step directory holds three items:

* ``state``: the TrainState pytree (params, optimizer, EMA, the objective's auxiliary
  state, RNG, step), restored onto the shardings of an abstract target, so a checkpoint
  resumes on any mesh; a checkpoint written before a TrainState field was renamed
  (:data:`RENAMED_STATE_FIELDS`: ``queues`` -> ``aux``) is read under the new name;
* ``data``: the input iterator's state (JSON; identical on every process);
* ``meta``: JSON with the config, written for humans and for mismatch checks.

orbax writes each step to a temporary directory and renames it when complete, so an
interrupted save never leaves a checkpoint that looks valid. A checkpoint damaged later
(a truncated array file, a deleted manifest or metadata file) is found on restore:
:meth:`Checkpointer.restore_newest_intact` says so in one line and falls back to the next
older step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import sys
import warnings
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from tokendrift_jax.train import metrics_writer

# TrainState fields renamed since checkpoints were written: new name -> the old name a
# checkpoint may still hold (orbax matches the tree by key, so an old one fails to restore
# onto the new TrainState with a tree mismatch unless the target uses the old key).
RENAMED_STATE_FIELDS = {"aux": "queues"}
# The longest close() waits for orbax to finish (seconds).
CLOSE_TIMEOUT_S = 60.0
_NOISY_LOGGERS = ("absl", "orbax", "asyncio", "jax._src")


class SaveError(Exception):
  """A checkpoint could not be written (one line: the step, where, why); its temporary
  directory is removed and the older checkpoints are untouched."""


class DamagedCheckpoints(Exception):
  """No checkpoint could be restored; ``damaged`` = [(step, one-line reason)]."""

  def __init__(self, directory: str, damaged: list[tuple[int, str]]):
    self.directory, self.damaged = directory, damaged
    listed = "; ".join(f"step {s}: {why}" for s, why in damaged)
    super().__init__(f"no intact checkpoint in {directory} ({listed}); delete the damaged "
                     f"step directories (or the whole directory to start over) and rerun")


def one_line(e: BaseException, limit: int = 160) -> str:
  """``Type: first line of the message`` (tensorstore errors run over many lines)."""
  msg = (str(e).strip().splitlines() or [""])[0]
  if len(msg) > limit:
    msg = msg[:limit] + "..."
  return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _is_closed_loop_noise(unraisable) -> bool:
  exc = getattr(unraisable, "exc_value", None)
  if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
    return True
  # An orbax read coroutine orphaned by the failed restore, finalized later.
  code = getattr(getattr(unraisable, "object", None), "cr_code", None)
  return code is not None and "orbax" in str(getattr(code, "co_filename", ""))


def drop_closed_loop_noise() -> None:
  """Wraps sys.unraisablehook so that 'RuntimeError: Event loop is closed' (and errors of
  orphaned orbax coroutines) are dropped.

  After a failed tensorstore read, orbax closes its event loop while tensorstore threads
  still hold callbacks for it; each one later dies with that error, printed by the
  unraisable hook (hundreds of lines, issue 15.5) at a time no ``with`` block can cover.
  Every other unraisable exception goes to the previous hook. Idempotent.
  """
  current = sys.unraisablehook
  if getattr(current, "_drops_closed_loop_noise", False):
    return

  def hook(unraisable):
    if not _is_closed_loop_noise(unraisable):
      current(unraisable)

  hook._drops_closed_loop_noise = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


@contextlib.contextmanager
def quiet_orbax():
  """Silences orbax / absl / asyncio logging (tensorstore read errors come back as pages
  of tracebacks, then 'Event loop is closed' from orphaned tasks) while a possibly damaged
  checkpoint is read. What a failed read leaves behind is collected here, inside the
  silence."""
  drop_closed_loop_noise()
  loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.CRITICAL + 1)
  try:
    yield
  except BaseException:
    # Only a failed read orphans orbax coroutines; a read that succeeded leaves nothing to
    # collect, and a collection of a large heap costs a few tenths of a second (each
    # resume reads twice: peek_latest_meta, then the restore). Their coroutines die here
    # unawaited; Python's RuntimeWarning about each would reach the user's terminal.
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="coroutine .* was never awaited",
                              category=RuntimeWarning)
      gc.collect()
    raise
  finally:
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)


class Checkpointer:
  """Thin wrapper: save(step, state, data_state, meta) / latest_step() / restore(...)."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, save_every: int = 1000):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.save_every = int(save_every)
    options = ocp.CheckpointManagerOptions(max_to_keep=int(max_to_keep), create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "meta"))
    self.damaged: set[int] = set()  # steps restore_newest_intact found unreadable

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state: Any, data_state: dict, meta: dict, *, force: bool = False
           ) -> bool:
    if int(step) in self.damaged:  # unreadable: this run rewrites it
      self.manager.delete(int(step))
      self.damaged.discard(int(step))
    elif not force and step in self.manager.all_steps():
      return False
    try:
      with quiet_orbax():
        saved = self.manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    data=ocp.args.JsonSave(data_state),
                                    meta=ocp.args.JsonSave(meta)),
            force=True)
        self.manager.wait_until_finished()
    except Exception as e:  # orbax / tensorstore raise assorted types for a failed write
      self._remove_temporaries(int(step))
      raise SaveError(f"writing the checkpoint of step {int(step)} to "
                      f"{os.path.join(self.directory, str(int(step)))} failed "
                      f"({one_line(e)})") from e
    return bool(saved)

  def _remove_temporaries(self, step: int) -> None:
    import glob  # pylint: disable=import-outside-toplevel
    import shutil  # pylint: disable=import-outside-toplevel
    for tmp in glob.glob(os.path.join(glob.escape(self.directory), f"{step}.orbax-checkpoint-tmp*")):
      shutil.rmtree(tmp, ignore_errors=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
    """Restores (state, data_state, meta) at ``step`` onto ``abstract_state``'s shardings.

    A TrainState field saved under its old name (:data:`RENAMED_STATE_FIELDS`) is read
    into the new one."""
    renames = self._old_names(step, abstract_state)
    target = abstract_state
    if renames:
      # The same leaves keyed as the checkpoint keys them; orbax matches by key.
      target = {renames.get(f.name, f.name): getattr(abstract_state, f.name)
                for f in dataclasses.fields(abstract_state)}
      logging.info("checkpoint %s holds the TrainState field(s) %s under their old names; "
                   "reading them as %s", os.path.join(self.directory, str(int(step))),
                   sorted(renames.values()), sorted(renames))
    out = self.manager.restore(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    state = out["state"]
    if renames:
      state = type(abstract_state)(**{f.name: state[renames.get(f.name, f.name)]
                                      for f in dataclasses.fields(abstract_state)})
    return state, dict(out["data"]), dict(out["meta"])

  def _old_names(self, step: int, abstract_state: Any) -> dict[str, str]:
    """{new field: old name} for the renamed fields that checkpoint ``step`` holds under
    the old name only; {} when none (or its tree metadata is unreadable: the restore then
    reports the damage)."""
    if not dataclasses.is_dataclass(abstract_state):
      return {}
    names = {f.name for f in dataclasses.fields(abstract_state)}
    wanted = {new: old for new, old in RENAMED_STATE_FIELDS.items() if new in names}
    if not wanted:
      return {}
    try:
      from etils import epath  # pylint: disable=import-outside-toplevel
      with quiet_orbax():
        saved = ocp.StandardCheckpointHandler().metadata(
            epath.Path(os.path.join(self.directory, str(int(step)), "state"))).tree
      saved = set(saved.keys())
    except Exception:  # pylint: disable=broad-except
      return {}
    return {new: old for new, old in wanted.items() if new not in saved and old in saved}

  def all_steps(self) -> list[int]:
    return sorted(int(s) for s in self.manager.all_steps())

  def restore_newest_intact(self, abstract_state: Any, *,
                            warn: Callable[[str], None] = logging.warning
                            ) -> tuple[int, Any, dict, dict] | None:
    """(step, state, data_state, meta) of the newest checkpoint that restores; None if
    there is none. A damaged step is reported by ``warn`` in one line and skipped (left on
    disk); :class:`DamagedCheckpoints` when every step is damaged."""
    steps = self.all_steps()[::-1]
    damaged: list[tuple[int, str]] = []
    for i, step in enumerate(steps):
      try:
        with quiet_orbax():
          state, data, meta = self.restore(step, abstract_state)
        jax.block_until_ready(state)
      except Exception as e:  # pylint: disable=broad-except
        why = one_line(e)
        damaged.append((step, why))
        self.damaged.add(int(step))
        nxt = f"resuming from step {steps[i + 1]}" if i + 1 < len(steps) else "no older step"
        warn(f"checkpoint {os.path.join(self.directory, str(step))} is unreadable ({why}); "
             f"{nxt}")
        continue
      return step, state, data, meta
    if damaged:
      raise DamagedCheckpoints(self.directory, damaged)
    return None

  def close(self, timeout_s: float | None = None) -> None:
    """Waits for pending saves (at most ``timeout_s``, CLOSE_TIMEOUT_S) and closes."""
    def finish():
      self.manager.wait_until_finished()
      self.manager.close()
    metrics_writer.bounded_call(finish, CLOSE_TIMEOUT_S if timeout_s is None else timeout_s,
                                "closing the checkpoint manager")


def peek_latest_meta(workdir: str) -> tuple[int, dict] | None:
  """(step, meta) of the newest checkpoint under ``workdir`` without creating anything."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return None
  with quiet_orbax():  # orbax warns that a read-only manager saves nothing
    manager = ocp.CheckpointManager(directory,
                                    options=ocp.CheckpointManagerOptions(create=False,
                                                                         read_only=True),
                                    item_names=("state", "data", "meta"))
  try:
    # The newest step whose meta reads (a damaged step is reported at restore).
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        with quiet_orbax():
          meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                                 )["meta"]
      except Exception:  # pylint: disable=broad-except
        continue
      return int(step), dict(meta)
    return None
  finally:
    manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each leaf's sharding (the restore target)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
      tree)
