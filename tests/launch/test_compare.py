"""launch/compare.py: assembles evaluated runs into one table and plot."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from tokendrift_jax.eval import cli
from tokendrift_jax.eval import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _matched_reference(rows, target):
  """Gen-PPL at entropy ``target`` per seed, from each seed's (entropy, Gen-PPL) points by
  NumPy's own linear interpolation in log Gen-PPL (None outside the points' range)."""
  out = []
  for seed in sorted({r["seed"] for r in rows}):
    pts = sorted((r["entropy"], r["gen_ppl"]) for r in rows if r["seed"] == seed)
    hs, logs = np.array([p[0] for p in pts]), np.log([p[1] for p in pts])
    inside = hs[0] <= target <= hs[-1]
    out.append(float(np.exp(np.interp(target, hs, logs))) if inside else None)
  return out


def test_compare_assembles_runs(eval_assets, eval_cli_run, tmp_path, capsys, eval_config):
  # The second run sweeps the sampling temperature (issue 23.5): its τ = 1 rows are the
  # plain program's, the summary and Tables 1-2 read them, the sweep feeds the frontier.
  other = tmp_path / "other"
  payload = cli.evaluate_checkpoint(eval_config(
      eval_assets, checkpoint=eval_assets["ckpt2"], label="TokenDrift", write_samples=False,
      temperatures=(1.0, 0.5)), str(other))
  assert [(r["temperature"], r["nfe"], r["seed"]) for r in payload["rows"]] == [
      (t, n, s) for t in (0.5, 1.0) for n in (2, 4) for s in (0, 1)]
  assert payload["sampling"]["temperatures"] == [0.5, 1.0]
  assert [s["gen_ppl_values"] for s in payload["summary"]] == [
      [r["gen_ppl"] for r in payload["rows"] if r["temperature"] == 1.0 and r["nfe"] == n]
      for n in (2, 4)]
  assert "Temperature sweep" in (other / "results.md").read_text()
  released, _ = eval_cli_run
  sys.path.insert(0, os.path.join(ROOT, "launch"))
  try:
    import compare  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  out = tmp_path / "cmp"
  assert compare.main([str(released), str(other), "--out", str(out),
                       "--labels", "MDLM", "TokenDrift"]) == 0
  payload = json.loads((out / "compare.json").read_text())
  assert [r["label"] for r in payload["runs"]] == ["MDLM", "TokenDrift"]
  md = (out / "compare.md").read_text()
  runs = [report.read_results(str(d)) for d in (released, other)]
  for s_a, s_b in zip(runs[0]["summary"], runs[1]["summary"]):
    best = 0 if s_a["gen_ppl_mean"] < s_b["gen_ppl_mean"] else 1
    cell = [s_a, s_b][best]
    assert f"**{cell['gen_ppl_mean']:.2f} ± {cell['gen_ppl_sd']:.2f}**" in md
  table, section = md.split("## At matched entropy")
  assert table.count("\n| MDLM |") == 1 and table.count("\n| TokenDrift |") == 1
  # The reference run without a sweep shows its own Gen-PPL (its entropy is the target).
  ref = runs[0]["summary"]
  assert ("| MDLM | " + " | ".join(f"{s['gen_ppl_mean']:.2f} ± {s['gen_ppl_sd']:.2f} "
                                   "(reference)" for s in ref) + " |") in section
  assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
  # Matched entropy: each run read at the released model's τ = 1 entropy per NFE.
  assert (out / "compare_frontier.png").read_bytes()[:4] == b"\x89PNG"
  matched = payload["matched_entropy"]
  assert matched["reference"] == "MDLM"
  for nfe_s, target in matched["entropy"].items():
    nfe = int(nfe_s)
    ref_rows = [r for r in runs[0]["rows"] if r["nfe"] == nfe]
    assert math.isclose(target, np.mean([r["entropy"] for r in ref_rows]), rel_tol=1e-12)
    for label, run in zip(("MDLM", "TokenDrift"), runs):   # values per seed, both runs
      got = next(m for m in matched["methods"][label] if m["nfe"] == nfe)
      want = _matched_reference([r for r in run["rows"] if r["nfe"] == nfe], target)
      assert [v is None for v in got["values"]] == [v is None for v in want]
      for g, w in zip(got["values"], want):
        if w is not None:
          # Both interpolate the same float64 points; only the formula's rounding differs.
          assert math.isclose(g, w, rel_tol=1e-9)
  capsys.readouterr()
  assert compare.main([str(tmp_path / "missing"), "--out", str(tmp_path / "c2")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "results.json does not exist" in err
  assert not os.path.exists(tmp_path / "c2")
  print(f"comparison plot: {out / 'compare.png'}")
