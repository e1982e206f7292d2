"""SIGTERM / SIGINT handling: finish the current step, checkpoint, stop.

The exit code says which signal stopped the run: 143 (128 + SIGTERM, what schedulers
expect of a preempted job) or 130 (128 + SIGINT, Ctrl-C). A second Ctrl-C aborts at once
(KeyboardInterrupt where the program stands, nothing saved).
"""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

EXIT_PREEMPTED = 143  # 128 + SIGTERM
EXIT_INTERRUPTED = 130  # 128 + SIGINT
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
  return 128 + int(signum)


class Preemption:
  """Context manager that records a SIGTERM or a first SIGINT instead of dying on it.

  With several processes the stop must happen at the same step everywhere (the step and
  the save are collectives): the flag is agreed on with an all-gather at log steps, where
  the host already waits for the device, so a signal that reaches any process stops all of
  them at the next log step. A single process stops after the current step.

  The handler only records the signal: nothing (no I/O, no lock) runs in the signal path.
  """

  def __init__(self):
    self.signum = 0
    self._old: dict = {}

  @property
  def requested(self) -> bool:
    return self.signum != 0

  def should_stop(self, at_log_step: bool) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if not at_log_step:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.signum, np.int32))
    if not self.signum and np.any(flags):
      self.signum = int(np.max(flags))
    return bool(np.any(flags))

  def __enter__(self):
    for sig in SIGNALS:
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if signum == signal.SIGINT and self.signum == signal.SIGINT:
      raise KeyboardInterrupt("second Ctrl-C")
    if not self.signum or signum == signal.SIGINT:
      self.signum = int(signum)

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}
