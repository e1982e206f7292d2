"""eval/frontier: Gen-PPL at matched entropy from temperature sweeps, against a float64
NumPy reference (np.interp of log Gen-PPL), and the frontier plot."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from tokendrift_jax.eval import frontier
from tokendrift_jax.eval import plots


def _np_at(points, target):
  """Reference: sort by entropy, np.interp of log Gen-PPL, None outside the range."""
  h = np.array([p[0] for p in points], np.float64)
  g = np.log(np.array([p[1] for p in points], np.float64))
  order = np.argsort(h)
  h, g = h[order], g[order]
  if target < h[0] or target > h[-1]:
    return None
  return float(np.exp(np.interp(target, h, g)))


def test_at_entropy_matches_numpy_interpolation():
  rng = np.random.default_rng(0)
  for _ in range(50):
    n = int(rng.integers(2, 7))
    h = np.sort(rng.uniform(2.0, 4.0, n)) + np.arange(n) * 1e-3  # distinct entropies
    g = np.exp(rng.uniform(2.0, 8.0, n))
    pts = [(hh, gg) for hh, gg in zip(h.tolist(), g.tolist())]
    rng.shuffle(pts)
    for target in rng.uniform(1.9, 4.1, 5):
      want = _np_at(pts, float(target))
      got = frontier.at_entropy(pts, float(target))
      if want is None:
        assert got is None
      else:
        # Both are float64 exp(linear interpolation in log): ≲ 1e-13 relative.
        assert got == pytest.approx(want, rel=1e-12)
  # The ends are inside; equal entropies are averaged in log Gen-PPL; one point only at it.
  assert frontier.at_entropy([(3.0, 100.0), (4.0, 400.0)], 3.0) == pytest.approx(100.0)
  assert frontier.at_entropy([(3.0, 100.0), (3.0, 400.0)], 3.0) == pytest.approx(200.0)
  assert frontier.at_entropy([(3.0, 100.0)], 3.5) is None
  with pytest.raises(ValueError, match="Gen-PPL > 0"):
    frontier.at_entropy([(3.0, 0.0), (4.0, 1.0)], 3.5)


def _rows(seed_shift):
  """A method's sweep: 3 seeds x 3 temperatures x 2 NFEs (entropy rises with τ)."""
  rows = []
  for nfe in (4, 8):
    for seed in (1, 2, 3):
      for tau in (0.8, 0.9, 1.0):
        h = 2.5 + tau + 0.01 * seed + seed_shift
        rows.append(dict(nfe=nfe, seed=seed, temperature=tau, entropy=h,
                         gen_ppl=math.exp(1.0 + 2.0 * h + 0.05 * seed) * nfe ** -0.5))
  return rows


def test_matched_reads_each_seed_at_the_reference_entropy():
  method = _rows(0.0)
  ref = frontier.reference_entropy(_rows(0.0))
  assert ref == pytest.approx({4: 3.52, 8: 3.52})
  out = frontier.matched(method, {4: 3.4, 8: 3.6})
  for m in out:
    want = []
    for seed in (1, 2, 3):
      pts = [(r["entropy"], r["gen_ppl"]) for r in method
             if r["nfe"] == m["nfe"] and r["seed"] == seed]
      want.append(_np_at(pts, m["entropy"]))
    assert m["seeds"] == [1, 2, 3]
    if m["nfe"] == 4:
      assert m["values"] == pytest.approx(want, rel=1e-12) and m["covered"] == 3
      assert m["mean"] == pytest.approx(np.mean(want), rel=1e-12)
      assert m["sd"] == pytest.approx(np.std(want, ddof=1), rel=1e-12)
    else:  # 3.6 is above every seed's τ = 1 entropy (3.51-3.53): never extrapolated
      assert m["values"] == [None, None, None] and m["mean"] is None
  table = frontier.markdown([("A", method)], {4: 3.4, 8: 3.6})
  assert "NFE = 4 Gen.-PPL @ H = 3.40" in table and "out of range" in table


def test_frontier_plot_is_written(tmp_path):
  path = str(tmp_path / "frontier.png")
  plots.plot_frontier([("A", _rows(0.0)), ("B", _rows(-0.1))], {4: 3.4, 8: 3.45}, path,
                      title="toy")
  assert os.path.getsize(path) > 1000
