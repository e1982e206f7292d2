"""SIGTERM handling: finish the current step, checkpoint, stop (exit code 143)."""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect of a preempted job


class Preemption:
  """Context manager that records a SIGTERM instead of dying on it.

  With several processes the stop must happen at the same step everywhere (the step and
  the save are collectives): the flag is agreed on with an all-gather at log steps, where
  the host already waits for the device, so a signal that reaches any process stops all of
  them at the next log step. A single process stops after the current step.
  """

  def __init__(self):
    self.requested = False
    self._old = None

  def should_stop(self, at_log_step: bool) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if not at_log_step:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    return bool(np.any(flags))

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._old = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
