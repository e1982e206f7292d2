"""launch/benchmark.py on the tiny model: well-formed JSON and markdown (no timing asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_benchmark_cli_tiny_output_is_well_formed(tmp_path):
  """launch/benchmark.py on the tiny model: JSON + markdown, XLA agreement (no timings).
  Slow (a subprocess, ~15 s); the suite keeps the in-process benchmark of the training
  step (tests/perf/test_benchmark.py)."""
  out = tmp_path / "bench"
  cmd = [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"),
         "--config=configs/mdlm_drift.py", "--size=tiny", "--length=64", "--batch=4",
         "--steps=2", "--warmup=1", "--xla_count", "--peak_tflops=1",
         "--config.mesh.num_devices=1", f"--out={out}", "--name=tiny"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  result = json.loads((out / "tiny.json").read_text())
  assert result["environment"]["backend"] == "cpu"
  rows = {r["objective"]: r for r in result["rows"]}
  assert set(rows) == {"continuation", "drift"}
  for name, r in rows.items():
    assert "error" not in r, r
    assert r["finite"] and r["length"] == 64 and r["micro_batch"] == 4
    assert len(r["step_s_all"]) == 2 and r["step_s"] > 0 and r["compile_s"] > 0
    assert math.isclose(r["tokens_per_s"], r["tokens_per_step"] / r["step_s"], rel_tol=1e-9)
    assert r["flops"]["model_flops"] == sum(r["flops"]["terms"].values())
    assert math.isclose(r["mfu"], r["achieved_tflops"] / 1.0, rel_tol=1e-9)
    assert r["memory"]["peak_bytes"] > 0 and r["program_bytes"]["total"] > 0
    x = r["xla"]
    # Every product of the program is one of the analytic terms (exact), and XLA's
    # cost analysis adds elementwise work (softmax, LayerNorm, RNG, Adam): within 10%.
    assert abs(x["analytic_over_hlo_dots"] - 1.0) < 1e-9, (name, x)
    assert abs(x["analytic_over_xla"] - 1.0) <= 0.10, (name, x)
  assert set(rows["drift"]["flops"]["terms"]) == {
      "generator_fwd", "generator_bwd", "encoder_clean_fwd", "encoder_soft_fwd",
      "encoder_soft_bwd", "lift_fwd", "lift_bwd", "drift"}
  md = (out / "tiny.md").read_text()
  assert md.count("| continuation | tiny | 64 |") == 2 and "| drift | tiny | 64 |" in md
  assert "analytic/XLA" in md
