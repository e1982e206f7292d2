"""The host allocator a launch script runs under: glibc malloc on transparent huge pages,
keeping the memory it frees for the next step.

XLA:CPU allocates each executable's temporaries with ``malloc`` per execution; they are
above glibc's mmap threshold (at most 32 MiB), so by default every step maps fresh memory
and unmaps it again, and pays a page fault per page touched: on the 170M step (L = 128,
batch 2) 525 k minor faults and 1.4-1.8 s of system time per step, and more when another
process's memory fragments the host's (docs/PERFORMANCE.md, "On an idle host"). The
default, ``TOKENDRIFT_MALLOC=reuse``, sets four glibc tunables (glibc >= 2.35):

* ``glibc.malloc.hugetlb=1``: malloc ``madvise``s its memory for transparent huge pages
  (2 MiB faults instead of 4 KiB ones);
* ``glibc.malloc.mmap_max=0``, ``glibc.malloc.arena_max=1`` and a 1 TiB
  ``glibc.malloc.trim_threshold``: every allocation comes from the one main heap and freed
  memory stays in it, so the next step's temporaries reuse it (no faults after the first
  steps), as PyTorch's and XLA:GPU's caching allocators keep theirs. The process's
  resident memory then stays at its peak (+8 % peak RSS on the 170M benchmark).

Measured on an idle 2-core AMD EPYC host: continuation 1583 -> 1220 ms and TokenDrift
2328 -> 1798 ms with huge pages; with heap reuse on top the same alone (0 faults and 20-40
ms of system time per step instead of 2.2 k and 170 ms), and next to a PyTorch step in the
same process TokenDrift 2060 -> 1708 ms. ``TOKENDRIFT_MALLOC=hugetlb`` sets huge pages
only; ``system`` leaves glibc's defaults. An allocator setting changes no arithmetic.

glibc reads its tunables once, at process start, so setting them from Python is too late:
:func:`use_allocator_tunables` re-executes the running command with them added to the environment,
before anything heavy is imported. It is a no-op where it cannot help or the user decided:
not Linux with glibc >= 2.35, ``GLIBC_TUNABLES`` already naming one of the four (the
user's settings are kept as they are), or ``TOKENDRIFT_MALLOC=system``.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "TOKENDRIFT_MALLOC"
# What each TOKENDRIFT_MALLOC choice adds to GLIBC_TUNABLES.
CHOICES = {
    "reuse": (f"{TUNABLE}=1", "glibc.malloc.mmap_max=0", "glibc.malloc.arena_max=1",
              f"glibc.malloc.trim_threshold={1 << 40}"),
    "hugetlb": (f"{TUNABLE}=1",),
    "system": (),
}
DEFAULT = "reuse"
_NAMES = {t.split("=", 1)[0] for tunables in CHOICES.values() for t in tunables}


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


def allocator_env(environ: dict[str, str], glibc: tuple[int, int] | None
                  ) -> dict[str, str] | None:
  """The environment to re-execute under, or None when the process should run as it is.

  ``GLIBC_TUNABLES`` is a colon-separated list; the choice's tunables (:data:`CHOICES`)
  are appended to what the user set. None for glibc < 2.35 (unknown tunables are ignored
  there, so a re-exec would only cost a start-up), ``TOKENDRIFT_MALLOC=system``, or a
  ``GLIBC_TUNABLES`` that already names one of the tunables set here (whatever its value).
  """
  choice = environ.get(OPT_OUT, "") or DEFAULT
  if choice not in CHOICES:
    raise ValueError(f"{OPT_OUT}={environ.get(OPT_OUT)!r}: expected one of "
                     f"{sorted(CHOICES)} (default {DEFAULT!r})")
  if not CHOICES[choice] or glibc is None or glibc < (2, 35):
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  if any(item.split("=", 1)[0] in _NAMES for item in current.split(":") if item):
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = ":".join([current] * bool(current) + list(CHOICES[choice]))
  return env


def use_allocator_tunables() -> None:
  """Re-executes this process with the allocator's tunables set (:func:`allocator_env`),
  when it helps.

  Call first thing in a launch script. ``sys.orig_argv`` is the command exactly as typed
  (``python -m ...``, ``-X`` options included), so the new process is the same command.
  """
  env = allocator_env(dict(os.environ), _glibc_version())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), env)
