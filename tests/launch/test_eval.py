"""launch/eval.py as users run it: the results table and samples it writes, checked against
independent references (the float64 PyTorch Gen-PPL protocol on the written texts, HF
decoding of the written ids, a NumPy entropy, the stdlib's mean / stdev); two processes
(jax.distributed on 127.0.0.1) write what one wrote.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import subprocess

import pytest
import transformers

from tests.references.np_entropy import entropy_reference
from tests.references.torch_genppl import torch_protocol
from tokendrift_jax.eval import files
from tokendrift_jax.eval import cli
from tokendrift_jax.eval import report
from tokendrift_jax.eval import sampling_eval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTEXT = 32          # the tiny judge's n_positions (tiny_gpt2_judge)
LENGTH = 16           # backbone length = sample length = retokenization max_length
NFES = (2, 4)         # eval_config / eval_cli_run
SEEDS = (0, 1)
NUM_SAMPLES = 8
GROUP = 4             # texts per retokenization call
# float32 Flax judge vs float64 PyTorch on the same texts: per-token NLLs agree to ~1e-6
# relative (tests/eval/test_genppl.py); 1e-4 leaves margin while one misweighted token in ~120
# (a wrong text, pairing or group) moves the pooled value by ~1e-2.
REL_TOL = 1e-4


def test_cli_writes_results_table_and_samples(eval_assets, eval_cli_run):
  out, proc = eval_cli_run
  assert sorted(p for p in os.listdir(out) if not p.startswith(".")) == [
      "results.json", "results.md", "samples.jsonl"]
  assert "sampling NFE=" in proc.stderr and "Gen-PPL" in proc.stderr  # progress bars
  payload = json.loads((out / "results.json").read_text())
  samples = files.read_jsonl(str(out / "samples.jsonl"))
  tokenizer = transformers.AutoTokenizer.from_pretrained(eval_assets["pt"])

  assert payload["process"] == "mdlm" and payload["label"] == "MDLM"
  assert [(r["nfe"], r["seed"]) for r in payload["rows"]] == [
      (n, s) for n in NFES for s in SEEDS]
  assert len(samples) == len(NFES) * len(SEEDS) * NUM_SAMPLES
  for row in payload["rows"]:
    mine = [s for s in samples if (s["nfe"], s["seed"]) == (row["nfe"], row["seed"])]
    assert [s["index"] for s in mine] == list(range(NUM_SAMPLES))
    ids = [s["token_ids"] for s in mine]
    assert all(len(x) == LENGTH for x in ids)
    # Greedy noise removal leaves no mask (id 320 = len(tokenizer)).
    assert max(max(x) for x in ids) < len(tokenizer)
    texts = [s["text"] for s in mine]
    assert texts == tokenizer.batch_decode(ids)
    ppl, _, w = torch_protocol(eval_assets["pt"], texts, LENGTH, CONTEXT, group_size=GROUP)
    assert abs(row["gen_ppl"] - ppl) <= REL_TOL * ppl
    assert row["num_tokens"] == w.sum() and row["num_samples"] == NUM_SAMPLES
    # Entropy: float32 on device vs float64 here, values ~2 nats: 1e-5 absolute.
    assert abs(row["entropy"] - entropy_reference(ids)) < 1e-5
    # MDLM makes at most steps + 1 forwards (cache reuse can only lower it).
    assert 2 <= row["nfe_model"] <= row["nfe"] + 1
  assert len({tuple(s["token_ids"]) for s in samples}) > len(samples) // 2, "samples differ"

  for s in payload["summary"]:
    for m in ("gen_ppl", "entropy"):
      vals = [r[m] for r in payload["rows"] if r["nfe"] == s["nfe"]]
      assert s[f"{m}_values"] == vals
      assert math.isclose(s[f"{m}_mean"], statistics.mean(vals), rel_tol=1e-12)
      assert math.isclose(s[f"{m}_sd"], statistics.stdev(vals), rel_tol=1e-12)

  md = (out / "results.md").read_text()
  assert "| Method | NFE = 2 Gen.-PPL ↓ | NFE = 2 Entropy ↑ | NFE = 4 Gen.-PPL ↓" in md
  s2 = payload["summary"][0]
  assert f"| MDLM | {s2['gen_ppl_mean']:.2f} ± {s2['gen_ppl_sd']:.2f} | " in md


def test_cli_two_processes_equal_one_process(eval_assets, eval_cli_run, tmp_path, monkeypatch,
                                             capsys, eval_config, eval_cli_args):
  """jax.distributed on 127.0.0.1: 2 processes x 4 CPU devices write what 1 x 8 wrote.

  Covers the multi-host paths of the evaluator: parameters placed without cross-host
  transfers, sampled batches gathered from both processes, the judge's sums gathered,
  only process 0 writing, and resuming: a run interrupted after (NFE 4, seed 0) left its
  progress, and both processes skip that pair (process 0's files decide) and sample the
  other.
  """
  want_out, _ = eval_cli_run
  out = tmp_path / "two"
  real_sample = sampling_eval.SampleEvaluator.sample

  def sample(self, params, nfe, seed, num_samples, bar=None, prompts=None):
    if seed == 1:
      raise KeyboardInterrupt
    return real_sample(self, params, nfe, seed, num_samples, bar, prompts)

  monkeypatch.setattr(sampling_eval.SampleEvaluator, "sample", sample)
  # Ctrl-C stops the evaluation with one line and exit 130, the finished pair saved.
  assert cli.run(eval_config(eval_assets, nfe=(4,), seeds=(0, 1), progress=False,
                             label="MDLM"), str(out)) == 130
  monkeypatch.undo()
  capsys.readouterr()
  assert os.listdir(out / cli.PROGRESS_DIR) == ["nfe4-seed0.json"]

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4 "
             + os.environ.get("TOKENDRIFT_TEST_XLA_FLAGS", ""),
             JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  procs = []
  for pid in range(2):
    # Rows and samples depend only on their own (NFE, seed, batch) keys.
    cmd = eval_cli_args(eval_assets, out, nfes=(4,), seeds=(0, 1)) + [
        "--config.progress=False",
        f"--config.distributed.coordinator_address=127.0.0.1:{port}",
        "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  got = json.loads((out / "results.json").read_text())
  want = json.loads((want_out / "results.json").read_text())
  assert got["resumed_pairs"] == [[4, 0]] and not (out / cli.PROGRESS_DIR).exists()
  refs = [r for r in want["rows"] if r["nfe"] == 4]
  assert [(r["nfe"], r["seed"]) for r in got["rows"]] == [(4, 0), (4, 1)]
  want_ids = [s["token_ids"] for s in files.read_jsonl(str(want_out / "samples.jsonl"))
              if s["nfe"] == 4]
  got_ids = [s["token_ids"] for s in files.read_jsonl(str(out / "samples.jsonl"))]
  assert got_ids == want_ids
  for row, ref in zip(got["rows"], refs):
    # Same samples, same judge batches on an 8-device mesh: float32 sums can differ only
    # through reduction order.
    assert math.isclose(row["gen_ppl"], ref["gen_ppl"], rel_tol=1e-6)
    assert row["entropy"] == ref["entropy"] and row["num_tokens"] == ref["num_tokens"]
