"""Independent float64 NumPy reference of the sample entropy the evaluator reports."""

from __future__ import annotations

import numpy as np


def entropy_reference(ids) -> float:
  """Per sample −Σ p log p of its token-id frequencies (nats), float64, then the mean."""
  out = []
  for row in ids:
    _, counts = np.unique(np.asarray(row), return_counts=True)
    p = counts / counts.sum()
    out.append(-np.sum(p * np.log(p)))
  return float(np.mean(out))
