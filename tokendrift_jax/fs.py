"""Output destinations: checked before the expensive work, replaced write-new-then-swap.

:func:`check_writable_destination` finds the problems a write would only hit at the end
(a parent that is a file, no permission, a read-only or full file system, a file where a
directory is expected) and reports them as one-line :class:`DestinationError` s.

:func:`write_then_swap` writes a new file or directory next to the destination and swaps
it in only once it is complete: an existing destination survives every failure before
that point, and is removed only after the new one is in place.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import tempfile
import uuid
from typing import Callable

MiB = 1 << 20


class DestinationError(ValueError):
  """A destination that cannot be written (one line, names the path and the reason)."""


def _human(n: int) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if n < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n}"


def _os_reason(e: OSError) -> str:
  return e.strerror or str(e) or type(e).__name__


def nearest_existing_dir(path: str) -> str:
  """The closest ancestor of ``path`` that exists; DestinationError when it (or a dangling
  link on the way) is not a directory, as a write under it would fail."""
  path = os.path.abspath(os.fspath(path))
  anc = os.path.dirname(path)
  while not os.path.isdir(anc):
    if os.path.lexists(anc):
      what = "a dangling symbolic link" if os.path.islink(anc) else "a file"
      raise DestinationError(f"{path}: cannot be created, {anc} is {what}, not a directory")
    parent = os.path.dirname(anc)
    if parent == anc:   # pragma: no cover - the root always exists
      break
    anc = parent
  return anc


def check_writable_destination(path: str | os.PathLike, *, kind: str = "dir",
                               need_bytes: int = MiB, create_parents: bool = True) -> str:
  """Checks that ``path`` can be written (as a ``kind`` "dir" or "file"); returns it absolute.

  * an existing ``path`` must be of the same kind (a file is never replaced by a
    directory, nor a directory by a file);
  * its parent must exist (or, with ``create_parents``, its nearest existing ancestor)
    and be a directory;
  * a probe entry must be creatable there (catches permissions, read-only file systems;
    unlike ``os.access`` also right for root);
  * at least ``need_bytes`` must be free there.

  Nothing is left behind. Raises DestinationError (a ValueError) with one line.
  """
  if kind not in ("dir", "file"):
    raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
  path = os.path.abspath(os.fspath(path))
  if os.path.lexists(path):
    if kind == "dir" and not os.path.isdir(path):
      raise DestinationError(f"{path} exists and is not a directory; the output is a directory "
                             f"(remove the file or choose another destination)")
    if kind == "file" and os.path.isdir(path):
      raise DestinationError(f"{path} exists and is a directory; the output is a file "
                             f"(remove the directory or choose another destination)")
  parent = os.path.dirname(path)
  anc = nearest_existing_dir(path)
  if anc != parent and not create_parents:
    raise DestinationError(f"{parent}: the parent directory of the destination does not exist")
  try:
    probe = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.probe-", dir=anc)
    os.rmdir(probe)
  except OSError as e:
    raise DestinationError(f"{path}: cannot write in {anc} ({_os_reason(e)})") from e
  try:
    free = shutil.disk_usage(anc).free
  except OSError:   # pragma: no cover - the probe above succeeded, so this is unusual
    free = None
  if free is not None and free < need_bytes:
    raise DestinationError(f"{path}: not enough free space in {anc} ({_human(free)} free, "
                           f"about {_human(need_bytes)} needed)")
  return path


def tree_bytes(path: str) -> int:
  """Bytes of a file, or of the files directly and recursively under a directory."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  total = 0
  for root, _, files in os.walk(path):
    for f in files:
      try:
        total += os.path.getsize(os.path.join(root, f))
      except OSError:
        pass
  return total


def remove(path: str) -> None:
  """Removes a file, link or directory tree if present (errors ignored for trees)."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.unlink(path)


def sibling(dst: str, label: str, tag: str | None = None) -> str:
  """A hidden, unique sibling name of ``dst``: ``DIR/.BASE.LABEL-TAG``."""
  parent, base = os.path.split(os.path.abspath(dst))
  return os.path.join(parent, f".{base}.{label}-{tag or uuid.uuid4().hex[:8]}")


def swap_into_place(new: str, dst: str, *, tag: str | None = None) -> None:
  """Renames the complete ``new`` to ``dst``. An existing ``dst`` is first renamed aside
  (``.BASE.old-TAG``), restored if the rename of ``new`` fails, and removed once ``new`` is
  in place. ``new`` is left to the caller on failure."""
  if not os.path.lexists(dst):
    os.rename(new, dst)
    return
  old = sibling(dst, "old", tag)
  os.rename(dst, old)
  try:
    os.rename(new, dst)
  except BaseException:
    os.rename(old, dst)
    raise
  remove(old)


def write_then_swap(dst: str, write: Callable[[str], object], *, label: str = "new") -> None:
  """Calls ``write(tmp)`` for a temporary sibling ``tmp`` of ``dst`` (absent), then swaps it
  in with :func:`swap_into_place`. ``tmp`` is removed on any error, so a failure leaves
  ``dst`` as it was (absent, or the old one intact)."""
  tag = uuid.uuid4().hex[:8]
  tmp = sibling(dst, label, tag) + ".tmp"
  try:
    write(tmp)
    if not os.path.lexists(tmp):
      raise OSError(errno.ENOENT, f"the writer produced nothing at {tmp}")
    swap_into_place(tmp, dst, tag=tag)
  finally:
    remove_with_leftovers(tmp)


def remove_with_leftovers(tmp: str) -> None:
  """Removes ``tmp`` and the writer's own temporaries beside it (``tmp*``, e.g. orbax's
  ``TMP.orbax-checkpoint-tmp-N``); ``tmp`` carries a unique tag, so nothing else matches."""
  remove(tmp)
  for leftover in glob.glob(glob.escape(tmp) + "*"):
    remove(leftover)
