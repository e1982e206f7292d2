"""The refinement-curve figure's statistics (mean ± SD over seeds per step) and its file."""

from __future__ import annotations

import os

import pytest

from tokendrift_jax.eval import plots


def _rows(values, nfe=4):
  return [dict(step=s, nfe=nfe, gen_ppl=v, entropy=v / 100) for s, v in values]


def test_refinement_curve_stats_mean_sd_over_seeds_on_common_steps():
  per_seed = {"1": _rows([(0, 100.0), (25, 80.0), (50, 70.0)]) + _rows([(0, 9.0)], nfe=8),
              "2": _rows([(0, 100.0), (25, 90.0), (50, 50.0)]),
              "3": _rows([(0, 100.0), (25, 70.0)])}        # seed 3 stops at step 25
  got = plots.refinement_curve_stats(per_seed, 4, "gen_ppl")
  # Step 50 is left out (seed 3 lacks it); SD with ddof = 1: step 25 has 80 ± 10.
  assert [g[0] for g in got] == [0, 25]
  assert got[0] == (0, 100.0, 0.0, 3)
  assert got[1][1] == pytest.approx(80.0) and got[1][2] == pytest.approx(10.0)
  one = plots.refinement_curve_stats({"1": per_seed["1"]}, 8, "entropy")
  assert one == [(0, 0.09, None, 1)]
  assert plots.refinement_curve_stats(per_seed, 16, "gen_ppl") == []


def test_plot_refinement_curves_writes_a_png(tmp_path):
  path = str(tmp_path / "curves_nfe4.png")
  methods = [("TokenDrift", {"1": _rows([(0, 100.0), (2, 60.0)]),
                             "2": _rows([(0, 100.0), (2, 70.0)])}),
             ("Cont. learning", {"1": _rows([(0, 100.0), (2, 95.0)])})]
  assert plots.plot_refinement_curves(methods, 4, path, judge="synthetic language") == path
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(path) > 1000
  with pytest.raises(ValueError, match="no rows at NFE 8"):
    plots.plot_refinement_curves(methods, 8, str(tmp_path / "x.png"))
