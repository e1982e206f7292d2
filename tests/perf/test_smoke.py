"""perf/smoke: the device script's bf16 smoke stage on a tiny model."""

from __future__ import annotations

import json

from tokendrift_jax.perf import benchmark as bench


def test_bf16_smoke_runs_and_reports():
  """The device script's first stage on a tiny model: well-formed report, bf16 close."""
  from configs import mdlm_drift
  from tokendrift_jax.perf import smoke
  c = bench.apply_size(mdlm_drift.get_config(), "tiny", length=16)
  c.drift.queue_size = 16
  report = smoke.run(c, batch=4)
  text = smoke.markdown(report)
  assert "bf16/xla" in text
  assert json.loads(json.dumps(report))  # JSON-serialisable, as the script writes it
  row = report["rows"][0]
  print(f"bf16 vs fp32: features {row['h_rel_err']:.2e}, grad cosine {row['grad_cosine']:.5f}")
  assert report["pass"], report
