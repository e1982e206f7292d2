"""perf/benchmark pieces without compiling: markdown of failed cases, the drift share."""

from __future__ import annotations

import math

from tokendrift_jax.perf import benchmark as bench


def test_markdown_reports_failed_cases_and_drift_share():
  env = {"backend": "cpu", "device_kind": "cpu", "device_count": 1, "jax": "x", "flax": "y"}
  failed = {"objective": "drift", "size": "170m", "length": 1024, "per_device_batch": 32,
            "n_micro": 1, "dtype": "bfloat16", "attention_impl": "cudnn",
            "remat_policy": "none", "error": "XlaRuntimeError: RESOURCE_EXHAUSTED"}
  md = bench.markdown({"environment": env, "rows": [failed]})
  line = [l for l in md.splitlines() if "RESOURCE_EXHAUSTED" in l][0]
  header = [l for l in md.splitlines() if l.startswith("| objective")][0]
  assert line.count("|") == header.count("|")

  def fake_measure(q_sizes, dim, batch, iters):
    return [{"Q": q, "m": dim, "N": batch, "queue_MiB": 1.0, "drift+push_ms": q / 100,
             "push_ms": 0.01} for q in q_sizes]

  row = {"objective": "drift", "size": "170m", "length": 128, "micro_batch": 4, "n_micro": 2,
         "step_s": 0.5, "feature_dim": 1536}
  out = bench.drift_share([row, failed], fake_measure, (1024, 65536))
  assert [(s["Q"], s["m"]) for s in out] == [(1024, 1536), (65536, 1536)]
  # Two micro-steps per step: the drift runs twice.
  assert math.isclose(out[0]["share"], 2 * 10.24 / 500.0)


def test_benchmark_times_the_step_that_training_runs(tmp_path, tiny_run_config):
  """The trainer's jitted step and the benchmark's lower to the same program."""
  from tokendrift_jax.train import trainer  # pylint: disable=import-outside-toplevel
  for objective in ("drift", "continuation"):
    c = tiny_run_config(str(tmp_path / "t"), objective=objective, mesh_shape=(4, 2),
                        param_sharding="fsdp", global_batch=16, micro_batch=8)
    run = trainer.build(c, str(tmp_path / objective))
    try:
      from_trainer = run.parts.step_fn.lower(*run.parts.abstract_args()).as_text()
    finally:
      run.checkpointer.close()
      run.writer.close()
    setup = bench.build_step(c)
    from_benchmark = setup.fn.lower(*setup.abstract_args).as_text()
    assert "while" in from_trainer   # the micro-step scan is in the program
    assert from_benchmark == from_trainer
