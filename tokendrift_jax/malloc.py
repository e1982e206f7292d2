"""The host allocator a launch script runs under: glibc malloc backed by transparent huge pages.

XLA:CPU allocates each executable's temporaries with ``malloc`` per execution; they are
above glibc's mmap threshold, so every step maps fresh memory and unmaps it again. On the
170M step (L = 128, batch 2) that was 525 k minor page faults and 1.4-1.8 s of system time
per step (docs/PERFORMANCE.md, "Where XLA:CPU spends the TokenDrift step"). glibc's tunable
``glibc.malloc.hugetlb=1`` (glibc >= 2.35) makes malloc ``madvise`` its mappings for
transparent huge pages: 2 MiB faults instead of 4 KiB ones, the same values (an allocator
setting changes no arithmetic). Measured on an idle 2-core AMD EPYC host, one process each:
continuation 1583 -> 1220 ms, TokenDrift 2328 -> 1798 ms.

glibc reads its tunables once, at process start, so setting them from Python is too late:
:func:`use_huge_pages` re-executes the running command with the tunable added to the
environment, before anything heavy is imported. It is a no-op where it cannot help or the
user decided: not Linux with glibc >= 2.35, ``glibc.malloc.hugetlb`` already in
``GLIBC_TUNABLES`` (the user's value is kept), or ``TOKENDRIFT_MALLOC=system``.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "TOKENDRIFT_MALLOC"


def _glibc_version() -> tuple[int, int] | None:
  if not sys.platform.startswith("linux"):
    return None
  lib, version = platform.libc_ver()
  if lib != "glibc" or not version:
    return None
  try:
    major, minor = (int(p) for p in version.split(".")[:2])
  except ValueError:
    return None
  return major, minor


def huge_page_env(environ: dict[str, str], glibc: tuple[int, int] | None
                  ) -> dict[str, str] | None:
  """The environment to re-execute under, or None when the process should run as it is.

  ``GLIBC_TUNABLES`` is a colon-separated list; the tunable is appended to what the user
  set. None for glibc < 2.35 (unknown tunables are ignored there, so a re-exec would only
  cost a start-up), an explicit ``TOKENDRIFT_MALLOC=system``, or a ``GLIBC_TUNABLES``
  that already names the tunable (whatever its value).
  """
  choice = environ.get(OPT_OUT, "")
  if choice not in ("", "hugetlb", "system"):
    raise ValueError(f"{OPT_OUT}={choice!r}: expected 'hugetlb' (the default) or 'system'")
  if choice == "system" or glibc is None or glibc < (2, 35):
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  if any(item.split("=", 1)[0] == TUNABLE for item in current.split(":") if item):
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"
  return env


def use_huge_pages() -> None:
  """Re-executes this process with glibc's huge-page tunable set, when it helps.

  Call first thing in a launch script. ``sys.orig_argv`` is the command exactly as typed
  (``python -m ...``, ``-X`` options included), so the new process is the same command.
  """
  env = huge_page_env(dict(os.environ), _glibc_version())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), env)
