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
import json
import os
import shutil
import socket
import sys
import tempfile
import time
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
    apply_umask(tmp)   # the user's umask, whatever modes the writer chose
    swap_into_place(tmp, dst, tag=tag)
  finally:
    remove_with_leftovers(tmp)


def remove_with_leftovers(tmp: str) -> None:
  """Removes ``tmp`` and the writer's own temporaries beside it (``tmp*``, e.g. orbax's
  ``TMP.orbax-checkpoint-tmp-N``); ``tmp`` carries a unique tag, so nothing else matches."""
  remove(tmp)
  for leftover in glob.glob(glob.escape(tmp) + "*"):
    remove(leftover)


# ----------------------------------------------------------------------------- --force
# What --force (or a rerun that rewrites its outputs) may replace: only what this project
# wrote, recognised from its content, or an empty directory. Every writer (convert,
# convert.export, the trainer's export, eval outputs, launch/sample.py --out) calls
# :func:`check_replace` before it computes anything.

BACKBONE_FORMAT = "tokendrift_jax.backbone/v1"
# The safetensors metadata key every export carries (transformers reads only "format").
EXPORT_TAG = "tokendrift_jax"
_HF_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")


def _json_file(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _first_json_line(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if line.strip():
          return json.loads(line)
  except (OSError, ValueError):
    return None
  return None


def safetensors_metadata(path: str) -> dict | None:
  """The ``__metadata__`` of a safetensors file's header (read without the tensors)."""
  try:
    with open(path, "rb") as f:
      n = int.from_bytes(f.read(8), "little")
      if not 2 <= n <= 100 << 20:
        return None
      header = json.loads(f.read(n).decode("utf-8"))
  except (OSError, ValueError):
    return None
  meta = header.get("__metadata__") if isinstance(header, dict) else None
  return meta if isinstance(meta, dict) else {}


def _is_export_safetensors(path: str) -> bool:
  return EXPORT_TAG in (safetensors_metadata(path) or {})


def _is_export_ckpt(path: str) -> bool:
  """A Lightning .ckpt written by convert.export: its pickle holds a "tokendrift_jax" key."""
  import zipfile  # pylint: disable=import-outside-toplevel
  try:
    with zipfile.ZipFile(path) as z:
      names = [n for n in z.namelist() if n.endswith("data.pkl")]
      return bool(names) and EXPORT_TAG.encode() in z.read(names[0])
  except (OSError, ValueError, zipfile.BadZipFile):
    return False


def _is_backbone_dir(path: str, entries: list[str]) -> bool:
  if not (os.path.isdir(os.path.join(path, "params")) and os.path.isdir(
      os.path.join(path, "config"))):
    return False
  # orbax's own files only beside params/ and config/ (no user file inside).
  if any(e not in ("params", "config", "commit_success.txt") and not e.startswith("_")
         for e in entries):
    return False
  payload = _json_file(os.path.join(path, "config", "metadata"))
  return isinstance(payload, dict) and payload.get("format") == BACKBONE_FORMAT


def _is_hf_export_dir(path: str, entries: list[str]) -> bool:
  shards = [e for e in entries if e.endswith(".safetensors")]
  if "config.json" not in entries or not shards:
    return False
  if any(e not in _HF_FILES and not (e.startswith("model-") and e.endswith(".safetensors"))
         for e in entries):
    return False
  return all(_is_export_safetensors(os.path.join(path, s)) for s in shards)


_SAMPLE_KEYS = {"nfe", "seed", "index", "text"}


def recognise(path: str) -> str | None:
  """What this project wrote at ``path`` ("a backbone checkpoint", ...), or None.

  Recognised: an empty directory or file; a backbone checkpoint (params/, config/ of the
  backbone format and orbax's files, nothing else); an HF export directory or a
  .safetensors / .ckpt export (tagged by convert.export); samples (JSON lines with nfe,
  seed, index, text); an evaluation's results.json / results.md.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.islink(path):
    return None
  if os.path.isdir(path):
    try:
      entries = sorted(os.listdir(path))
    except OSError:
      return None
    if not entries:
      return "an empty directory"
    if _is_backbone_dir(path, entries):
      return "a tokendrift_jax backbone checkpoint"
    if _is_hf_export_dir(path, entries):
      return "a tokendrift_jax export"
    return None
  if not os.path.isfile(path):
    return None
  if os.path.getsize(path) == 0:
    return "an empty file"
  name = os.path.basename(path)
  if name.endswith(".safetensors") and _is_export_safetensors(path):
    return "a tokendrift_jax export"
  if name.endswith(".ckpt") and _is_export_ckpt(path):
    return "a tokendrift_jax export"
  if name.endswith(".jsonl"):
    row = _first_json_line(path)
    if isinstance(row, dict) and _SAMPLE_KEYS <= set(row):
      return "tokendrift_jax samples"
  if name == "results.json":
    payload = _json_file(path)
    if isinstance(payload, dict) and {"summary", "sampling", "rows"} <= set(payload):
      return "tokendrift_jax evaluation results"
  if name == "results.md":
    try:
      with open(path, encoding="utf-8") as f:
        if f.readline().startswith("# Sample evaluation: "):
          return "tokendrift_jax evaluation results"
    except (OSError, ValueError):
      return None
  return None


def _overlap(dst: str, src: str) -> str | None:
  d, s = os.path.realpath(dst), os.path.realpath(src)
  if d == s:
    return "is SRC"
  if s.startswith(d.rstrip(os.sep) + os.sep):
    return "contains SRC"
  if d.startswith(s.rstrip(os.sep) + os.sep):
    return "lies inside SRC"
  return None


def _show_entries(path: str) -> str:
  try:
    entries = sorted(os.listdir(path))
  except OSError:
    return ""
  shown = ", ".join(entries[:3]) + (f", ... ({len(entries)} entries)" if len(entries) > 3
                                    else "")
  return f" (holds {shown})"


def check_replace(dst: str | os.PathLike, *, force: bool, sources=(), flag: str = "--force",
                  what: str = "DST", kind: str | None = None) -> str:
  """The one check of every writer before it computes anything; returns ``dst`` absolute.

  * ``dst`` must not be any of ``sources``, contain one or lie inside one;
  * an existing ``dst`` must be of ``kind`` ("dir" / "file", when given), needs ``force``
    (``flag`` names the option), and is replaced only when it is recognisably this
    project's output or empty (:func:`recognise`).

  Raises DestinationError with one line naming the path.
  """
  dst = os.path.abspath(os.fspath(dst))
  for src in sources:
    if src is None:
      continue
    why = _overlap(dst, os.fspath(src))
    if why:
      raise DestinationError(f"{dst}: {what} must not be SRC, contain SRC or lie inside it "
                             f"(it {why} {os.path.abspath(os.fspath(src))}); {flag} never "
                             f"replaces a source")
  if not os.path.lexists(dst):
    return dst
  if kind == "dir" and not os.path.isdir(dst):
    raise DestinationError(f"{dst} exists and is not a directory; the output is a directory "
                           f"(remove the file or choose another destination)")
  if kind == "file" and os.path.isdir(dst):
    raise DestinationError(f"{dst} exists and is a directory; the output is a file "
                           f"(remove the directory or choose another destination)")
  if not force:
    raise DestinationError(f"{dst} already exists; pass {flag} to overwrite")
  if recognise(dst) is None:
    kind = "directory" if os.path.isdir(dst) else "file"
    raise DestinationError(
        f"{dst}: {flag} replaces only an earlier output of tokendrift_jax (a backbone "
        f"checkpoint, an export, samples, results) or an empty directory; this {kind} is "
        f"none of them{_show_entries(dst) if kind == 'directory' else ''}: choose another "
        f"{what} or remove it yourself")
  return dst


# ----------------------------------------------------------------------------- modes


def umask() -> int:
  mask = os.umask(0)  # the only way to read it; set back at once
  os.umask(mask)
  return mask


def apply_umask(path: str) -> None:
  """Gives ``path`` (a file, or a tree) the modes a plain open()/mkdir would: 0666 / 0777
  less the umask (writers such as safetensors and mkstemp create 0600 files)."""
  mask = umask()
  if os.path.isfile(path):
    os.chmod(path, 0o666 & ~mask)
    return
  for root, dirs, files in os.walk(path):
    os.chmod(root, 0o777 & ~mask)
    for f in files:
      p = os.path.join(root, f)
      if not os.path.islink(p):
        os.chmod(p, 0o666 & ~mask)


# ----------------------------------------------------------------------------- workdir lock

LOCK_NAME = ".tokendrift.lock"


class WorkdirBusy(DestinationError):
  """Another run holds the workdir's lock (one line naming it)."""


def _holder(path: str) -> str:
  info = _json_file(path)
  if not isinstance(info, dict):
    return "another process"
  since = info.get("since")
  when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(
      since, (int, float)) else "?"
  return (f"{info.get('what', 'a run')} (pid {info.get('pid')} on {info.get('host')}, "
          f"since {when}: {info.get('command', '')})")


def _try_flock(fd: int, shared: bool = False) -> bool:
  import fcntl  # pylint: disable=import-outside-toplevel
  try:
    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False


class WorkdirLock:
  """An exclusive lock on a workdir: ``flock`` on ``WORKDIR/.tokendrift.lock``, which holds
  the holder's pid, host, start time and command.

  The kernel drops an flock when its holder dies (also by kill -9), so a lock file left
  behind is never stale: the next run takes it. On NFS, Linux maps flock to fcntl byte-
  range locks, which the server releases when the client process dies. Released (and the
  file removed) by :meth:`release`; a context manager.
  """

  def __init__(self, workdir: str, what: str):
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.what = what
    self._fd: int | None = None

  @staticmethod
  def check_free(workdir: str) -> None:
    """WorkdirBusy if a run holds ``workdir`` now; writes nothing (a probe before the
    expensive checks of a second run)."""
    path = os.path.join(os.path.abspath(os.fspath(workdir)), LOCK_NAME)
    try:
      fd = os.open(path, os.O_RDONLY)
    except OSError:
      return
    try:
      free = _try_flock(fd, shared=True)
    except OSError:   # a file system that locks only files open for writing
      return
    finally:
      os.close(fd)
    if not free:
      raise WorkdirBusy(f"{os.path.dirname(path)} is in use by {_holder(path)}; wait for it "
                        f"to finish or choose another --workdir")

  def acquire(self) -> "WorkdirLock":
    os.makedirs(self.workdir, exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
      try:
        if not _try_flock(fd):
          raise WorkdirBusy(f"{self.workdir} is in use by {_holder(self.path)}; wait for it "
                            f"to finish or choose another --workdir")
        # The previous holder may have removed the file between our open and flock: then
        # the lock is on a file nobody else sees; take the new one.
        try:
          same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
          same = False
      except BaseException:
        os.close(fd)
        raise
      if same:
        break
      os.close(fd)
    info = {"what": self.what, "pid": os.getpid(), "host": socket.gethostname(),
            "since": time.time(), "command": " ".join(sys.argv)[:200]}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.unlink(self.path)   # while still held: no one can hold this inode after us
    except OSError:
      pass
    os.close(fd)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
