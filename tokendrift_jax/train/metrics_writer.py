"""Run observability: ``metrics.jsonl``, TensorBoard events and the config dump.

Only process 0 writes. Every line of ``metrics.jsonl`` is one JSON object with ``step``
and flat scalar fields; per-temperature drift diagnostics become ``v_norm/tau=0.02`` etc.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np


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

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


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
