"""Run observability: ``metrics.jsonl``, TensorBoard events and the config dump.

Only process 0 writes. Every line of ``metrics.jsonl`` is one JSON object with ``step``
and flat scalar fields; per-temperature drift diagnostics become ``v_norm/tau=0.02`` etc.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from typing import Any, Mapping, Sequence

import jax
import numpy as np

# The longest close() waits for the TensorBoard writer thread to flush (seconds). A writer
# left inconsistent by an interrupt may never finish; the run must still end.
CLOSE_TIMEOUT_S = 10.0


def bounded_call(fn, timeout_s: float, what: str) -> bool:
  """Runs ``fn()`` in a daemon thread and waits at most ``timeout_s``; True if it ended.

  An exception in ``fn`` is logged (one line), not raised: this is for shutdown paths.
  """
  errors: list = []

  def target():
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  t = threading.Thread(target=target, name=f"close-{what}", daemon=True)
  t.start()
  t.join(timeout_s)
  if t.is_alive():
    logging.warning("%s did not finish within %.3g s; abandoned", what, timeout_s)
    return False
  if errors:
    logging.warning("%s failed: %s: %s", what, type(errors[0]).__name__,
                    str(errors[0]).splitlines()[0] if str(errors[0]) else "")
    return False
  return True


def flatten_metrics(metrics: Mapping[str, Any], temperatures: Sequence[float] = ()
                    ) -> dict[str, float]:
  """Device metrics -> {name: float}; [T] arrays are split per temperature."""
  out: dict[str, float] = {}
  for name, value in metrics.items():
    arr = np.asarray(jax.device_get(value), dtype=np.float64)
    if arr.ndim == 0:
      out[name] = float(arr)
    elif arr.ndim == 1 and len(temperatures) == arr.shape[0]:
      for tau, v in zip(temperatures, arr):
        out[f"{name}/tau={tau:g}"] = float(v)
    else:
      for i, v in enumerate(arr.reshape(-1)):
        out[f"{name}/{i}"] = float(v)
  return out


class MetricsWriter:
  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True,
               filename: str = "metrics.jsonl"):
    self.enabled = enabled
    self.path = os.path.join(workdir, filename)
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
      f.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        # TensorBoard tags may not hold "=" (tensorboardX would rename and log each time).
        self._tb.add_scalar(k.replace("=", "_"), float(v), int(step))
      self._tb.flush()

  def close(self, timeout_s: float | None = None) -> None:
    """Closes the TensorBoard writer, waiting at most ``timeout_s`` (CLOSE_TIMEOUT_S)."""
    tb, self._tb = self._tb, None
    if tb is None:
      return
    file_writers = list((getattr(tb, "all_writers", None) or {}).values())
    if not bounded_call(tb.close, CLOSE_TIMEOUT_S if timeout_s is None else timeout_s,
                        "closing the TensorBoard writer"):
      # Abandoned (e.g. its queue was left inconsistent by an interrupt): mark its event
      # writers closed so that tensorboardX's atexit cleanup does not wait on it again.
      for fw in file_writers:
        event_writer = getattr(fw, "event_writer", None)
        if event_writer is not None:
          event_writer._closed = True  # pylint: disable=protected-access


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def truncate_jsonl(path: str, max_step: int) -> None:
  """Drops rows logged after ``max_step`` (a resumed run re-logs them)."""
  if not os.path.exists(path):
    return
  rows = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  os.replace(tmp, path)
