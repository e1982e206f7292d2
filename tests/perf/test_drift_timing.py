"""perf/drift_timing: the drift + queue timing harness runs and reports what it timed.

The figures themselves are benchmark output (``launch/bench_drift.py``,
``launch/benchmark.py --drift_share``; docs/PERFORMANCE.md), never asserted here.
"""

from __future__ import annotations

import math

from tokendrift_jax.perf import drift_timing


def test_measure_rows_and_table():
  rows = drift_timing.measure(q_sizes=(4, 16), dim=8, batch=2, iters=1)
  assert [r["Q"] for r in rows] == [4, 16]
  for r in rows:
    assert (r["m"], r["N"]) == (8, 2)
    assert r["queue_MiB"] == 2 * r["Q"] * 8 * 4 / 2 ** 20   # two float32 queues
    for key in ("drift+push_ms", "push_ms", "drift+push_first_s", "push_first_s"):
      assert math.isfinite(r[key]) and r[key] > 0
  lines = drift_timing.table(rows).splitlines()
  assert len(lines) == 3 and lines[0].split()[:3] == ["Q", "m", "N"]
  assert lines[2].split()[:3] == ["16", "8", "2"]
