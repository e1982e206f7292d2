"""Atomic output files of the evaluation (results.json, samples.jsonl, eval.jsonl, ...).

Every file is written to a temporary file in the target's directory and then renamed with
``os.replace`` (atomic on POSIX within one file system), so a crash or a preemption never
leaves a partial file under the final name: a reader sees the old content or the new one.
The files get the mode a plain ``open(path, "w")`` gives (0666 less the umask), not the
0600 of the temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Iterable, TextIO


def _atomic_write(path: str, write: Callable[[TextIO], None]) -> None:
  directory = os.path.dirname(os.path.abspath(path)) or "."
  # Same directory as the target: os.replace must not cross file systems.
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      # mkstemp creates the file 0600; give it the mode open() would (0666 less the umask).
      os.fchmod(f.fileno(), 0o666 & ~_umask())
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _umask() -> int:
  mask = os.umask(0)  # the only way to read it; set back at once
  os.umask(mask)
  return mask


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (UTF-8)."""
  _atomic_write(path, lambda f: f.write(text))


def write_json(path: str, payload: Any) -> None:
  """Writes ``payload`` as indented JSON; NaN / inf are refused (not valid JSON)."""
  _atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2, allow_nan=False) + "\n"))


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  """Writes one JSON object per line (the whole file replaced at once)."""
  def write(f):
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")
  _atomic_write(path, write)


def append_jsonl(path: str, rows: Iterable[dict]) -> None:
  """Appends one JSON object per line (not atomic: for logs that grow, like eval.jsonl;
  a torn last line is what :func:`read_jsonl` of a crashed run could meet)."""
  with open(path, "a", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, allow_nan=False) + "\n")


def read_jsonl(path: str) -> list[dict]:
  """The objects of a JSON-lines file (blank lines skipped)."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
