"""launch/compare.py: assembles evaluated runs into one table and plot."""

from __future__ import annotations

import json
import os
import sys

from tokendrift_jax.eval import cli
from tokendrift_jax.eval import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_compare_assembles_runs(eval_assets, eval_cli_run, tmp_path, capsys, eval_config):
  other = tmp_path / "other"
  cli.evaluate_checkpoint(eval_config(eval_assets, checkpoint=eval_assets["ckpt2"],
                                      label="TokenDrift", write_samples=False), str(other))
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
  assert md.count("\n| MDLM |") == 1 and md.count("\n| TokenDrift |") == 1
  assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
  capsys.readouterr()
  assert compare.main([str(tmp_path / "missing"), "--out", str(tmp_path / "c2")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "results.json does not exist" in err
  assert not os.path.exists(tmp_path / "c2")
  print(f"comparison plot: {out / 'compare.png'}")
