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


def test_against_reference_reads_the_pretrained_sweep_at_each_methods_entropy():
  rng = np.random.default_rng(3)
  taus = (0.5, 0.7, 0.85, 1.0, 1.3)
  ref, method = [], []
  for seed in (1, 2, 3):
    for nfe in (4, 16):
      ent = np.sort(rng.uniform(2.5, 4.0, size=len(taus)))
      ppl = np.sort(rng.uniform(100.0, 3000.0, size=len(taus)))
      ref += [dict(nfe=nfe, seed=seed, temperature=t, entropy=float(h), gen_ppl=float(g))
              for t, h, g in zip(taus, ent, ppl)]
      # τ = 1 of the method inside the reference's range, except seed 3 at NFE 16 (below).
      h_own = float(rng.uniform(ent[0], ent[-1])) if (seed, nfe) != (3, 16) else ent[0] - 0.1
      method += [dict(nfe=nfe, seed=seed, temperature=1.0, entropy=h_own,
                      gen_ppl=float(rng.uniform(100, 3000))),
                 dict(nfe=nfe, seed=seed, temperature=1.3, entropy=h_own + 0.1, gen_ppl=1.0)]
  got = frontier.against_reference(method, ref)
  assert [g["nfe"] for g in got] == [4, 16]
  for g in got:
    for i, seed in enumerate(g["seeds"]):
      own = next(r for r in method if (r["nfe"], r["seed"], r["temperature"]) == (g["nfe"], seed,
                                                                               1.0))
      pts = [(r["entropy"], r["gen_ppl"]) for r in ref if (r["nfe"], r["seed"]) == (g["nfe"],
                                                                                   seed)]
      want = _np_at(pts, own["entropy"])
      if want is None:
        assert g["at"][i] is None and g["ratio"][i] is None
      else:
        assert g["at"][i] == pytest.approx(want, rel=1e-12)
        assert g["ratio"][i] == pytest.approx(own["gen_ppl"] / want, rel=1e-12)
    covered = [x for x in g["ratio"] if x is not None]
    assert g["covered"] == len(covered)
    assert g["ratio_mean"] == pytest.approx(np.mean(covered), rel=1e-12)
    assert g["ratio_sd"] == pytest.approx(np.std(covered, ddof=1), rel=1e-12)
  assert got[1]["covered"] == 2   # seed 3 at NFE 16 lies below the reference's sweep
  table = frontier.against_reference_markdown([("TokenDrift", got)], "pretrained")
  assert "(2/3 seeds)" in table and table.count("\n") == 2
