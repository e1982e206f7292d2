"""The refinement-curve figure (its statistics: tests/eval/test_report.py)."""

from __future__ import annotations

import os

import pytest

from tokendrift_jax.eval import plots


def _rows(values, nfe=4):
  return [dict(step=s, nfe=nfe, gen_ppl=v, entropy=v / 100) for s, v in values]


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
