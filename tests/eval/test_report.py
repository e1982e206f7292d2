"""Refinement-curve statistics (mean ± SD over seeds per step) and their table."""

from __future__ import annotations

import numpy as np
import pytest

from tokendrift_jax.eval import report


def _rows(values, nfe=4):
  return [dict(step=s, nfe=nfe, gen_ppl=v, entropy=v / 100) for s, v in values]


def test_refinement_curve_stats_mean_sd_over_seeds_on_common_steps():
  per_seed = {"1": _rows([(0, 100.0), (25, 80.0), (50, 70.0)]) + _rows([(0, 9.0)], nfe=8),
              "2": _rows([(0, 100.0), (25, 90.0), (50, 50.0)]),
              "3": _rows([(0, 100.0), (25, 70.0)])}        # seed 3 stops at step 25
  got = report.refinement_curve_stats(per_seed, 4, "gen_ppl")
  # Step 50 is left out (seed 3 lacks it); SD with ddof = 1: step 25 has 80 ± 10.
  assert [g[0] for g in got] == [0, 25]
  assert got[0] == (0, 100.0, 0.0, 3)
  assert got[1][1] == pytest.approx(80.0) and got[1][2] == pytest.approx(10.0)
  one = report.refinement_curve_stats({"1": per_seed["1"]}, 8, "entropy")
  assert one == [(0, 0.09, None, 1)]
  assert report.refinement_curve_stats(per_seed, 16, "gen_ppl") == []


def test_curves_markdown_holds_mean_sd_per_step_and_method():
  rng = np.random.default_rng(0)
  drift = {str(s): _rows([(0, 500.0), (25, float(v1)), (50, float(v2))])
           for s, (v1, v2) in zip((1, 2, 3), rng.uniform(100, 400, size=(3, 2)))}
  sdtt = {"1": _rows([(0, 500.0), (25, 480.0), (50, 470.0), (60, 460.0)])}
  table = report.curves_markdown([("TokenDrift", drift), ("SDTT", sdtt)], 4)
  lines = table.strip().split("\n")
  assert lines[0] == ("| step | TokenDrift (3 seeds) Gen.-PPL ↓ | TokenDrift (3 seeds) Entropy ↑ "
                      "| SDTT (1 seed) Gen.-PPL ↓ | SDTT (1 seed) Entropy ↑ |")
  assert [l.split(" | ")[0] for l in lines[2:]] == ["| 0", "| 25", "| 50", "| 60"]
  # The numbers, against float64 NumPy (ddof = 1).
  at25 = np.array([float(drift[s][1]["gen_ppl"]) for s in ("1", "2", "3")])
  cells = lines[3].strip("| ").split(" | ")
  assert cells[1] == f"{at25.mean():.2f} ± {at25.std(ddof=1):.2f}"
  assert cells[2] == f"{(at25 / 100).mean():.2f} ± {(at25 / 100).std(ddof=1):.2f}"
  assert cells[3:] == ["480.00", "4.80"]                  # one seed: no SD
  assert lines[5].strip("| ").split(" | ")[1:] == ["—", "—", "460.00", "4.60"]
  with pytest.raises(report.ReportError, match="NFE 8"):
    report.curves_markdown([("SDTT", sdtt)], 8)
