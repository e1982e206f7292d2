"""eval/cli: the sample-evaluation driver in-process: a DUO backbone sampled, decoded and
judged; resuming an interrupted evaluation; progress fingerprints; one-line user errors.

A tiny backbone (random, every leaf perturbed) is sampled and judged by the tiny random
GPT-2 (eval_assets, tests/conftest.py); Gen-PPL is checked against the float64 PyTorch
protocol (tests/references/torch_genppl.py), entropy against a NumPy reference.
"""

from __future__ import annotations

import errno
import json
import math
import os

import numpy as np
import pytest
import transformers

from tests.references.np_entropy import entropy_reference
from tests.references.torch_genppl import torch_protocol
from tokendrift_jax import sharding
from tokendrift_jax.data import synthetic
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.eval.eval_config import EvalError
from tokendrift_jax.eval import files
from tokendrift_jax.eval import judges
from tokendrift_jax.eval import cli
from tokendrift_jax.eval import report
from tokendrift_jax.eval import sampling_eval

CONTEXT = 32          # the tiny judge's n_positions (tiny_gpt2_judge)
LENGTH = 16           # backbone length = sample length = retokenization max_length
NUM_SAMPLES = 8       # eval_config
GROUP = 4             # texts per retokenization call
VOCAB = 320           # the tiny judge's tokenizer (EOS = 319)
# float32 Flax judge vs float64 PyTorch on the same texts: per-token NLLs agree to ~1e-6
# relative (tests/eval/test_genppl.py); 1e-4 leaves margin while one misweighted token in ~120
# (a wrong text, pairing or group) moves the pooled value by ~1e-2.
REL_TOL = 1e-4


def test_duo_checkpoint_is_sampled_decoded_and_judged(eval_assets, tmp_path, capsys, eval_config,
                                                      eval_backbone):
  """A DUO backbone (len(tokenizer) + DUO's [PAD] ids, ancestral float64 sampler) through
  the same driver: decoded as DUO decodes, Gen-PPL equal to the PyTorch protocol."""
  duo = eval_backbone(str(tmp_path / "duo"), VOCAB + 1, seed=5, arch="duo")
  out = tmp_path / "out"
  c = eval_config(eval_assets, checkpoint=duo, nfe=(2,), seeds=(0,), progress=False, label="DUO")
  assert cli.run(c, str(out)) == 0
  capsys.readouterr()
  payload = json.loads((out / "results.json").read_text())
  assert payload["process"] == "duo" and payload["sampling"]["sampler_precision"] == "float64"
  assert payload["sampling"]["noise_removal"] == "ancestral"
  [row] = payload["rows"]
  samples = files.read_jsonl(str(out / "samples.jsonl"))
  ids = [smp["token_ids"] for smp in samples]
  assert len(ids) == NUM_SAMPLES and max(max(x) for x in ids) <= VOCAB
  tokenizer = transformers.AutoTokenizer.from_pretrained(eval_assets["pt"])
  tokenizer.add_special_tokens({"pad_token": "[PAD]"})  # as DUO's get_tokenizer does
  texts = [smp["text"] for smp in samples]
  assert texts == tokenizer.batch_decode(ids)
  ppl, _, w = torch_protocol(eval_assets["pt"], texts, LENGTH, CONTEXT, group_size=GROUP)
  assert abs(row["gen_ppl"] - ppl) <= REL_TOL * ppl and row["num_tokens"] == w.sum()
  assert abs(row["entropy"] - entropy_reference(ids)) < 1e-5
  # DUO's uniform prior can leave its [PAD] id (320) in a sample: it decodes to "[PAD]".
  judge = judges.build_judge(c, process=make_process("duo", VOCAB + 1), max_length=LENGTH,
                             mesh=sharding.make_mesh(), progress=False)
  pad_row = np.asarray([ids[0][:3] + [VOCAB] + ids[0][4:]])
  assert judge.decode(pad_row) == tokenizer.batch_decode(pad_row.tolist())
  assert "[PAD]" in judge.decode(pad_row)[0]


def test_interrupted_evaluation_resumes(eval_assets, eval_cli_run, tmp_path, monkeypatch, capsys,
                                        eval_config):
  """Killed during the 3rd (NFE, seed): the rerun samples only the 2 missing pairs; when
  the disk fills up at its final write, the next rerun resumes every pair and writes what
  the uninterrupted run (eval_cli_run) wrote."""
  want_out, _ = eval_cli_run
  out = tmp_path / "resumed"
  real_sample = sampling_eval.SampleEvaluator.sample
  calls = []

  def sample(self, params, nfe, seed, num_samples, bar=None, prompts=None):
    calls.append((nfe, seed))
    if len(calls) == 3 and interrupt:
      raise KeyboardInterrupt
    return real_sample(self, params, nfe, seed, num_samples, bar, prompts)

  monkeypatch.setattr(sampling_eval.SampleEvaluator, "sample", sample)
  interrupt = True
  # Issue 25.6: Ctrl-C stops cleanly, as training does: one line, exit 130 (was 54 lines).
  assert cli.run(eval_config(eval_assets, progress=False, label="MDLM"), str(out)) == 130
  line = _one_error_line(capsys.readouterr().err)
  assert line.startswith("error: interrupted (Ctrl-C); 2 finished (NFE, seed) pairs are saved "
                         f"in {out / cli.PROGRESS_DIR}: rerun the same command"), line
  saved = sorted(os.listdir(out / cli.PROGRESS_DIR))
  assert saved == ["nfe2-seed0.json", "nfe2-seed1.json"]
  assert not (out / cli.RESULTS_JSON).exists()
  assert sorted(os.listdir(out)) == [cli.PROGRESS_DIR], "the workdir lock is released"

  # Issue 25.6: a batch far above num_samples is capped at the sample count (8 here, the
  # batch of the interrupted run: the rerun resumes it) instead of running out of memory.
  # Issue 25.6: the disk fills up while the last output (results.md) is written: one line
  # naming the saved pairs and how to resume, exit 2, no temporary file left.
  interrupt, calls[:] = False, []
  real_write = files._atomic_write   # pylint: disable=protected-access

  def disk_full_at_results_md(path, write):
    if os.path.basename(path) != cli.RESULTS_MD:
      return real_write(path, write)

    def partial(f):
      f.write("# Sample evaluation: half")
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write(path, partial)

  monkeypatch.setattr(files, "_atomic_write", disk_full_at_results_md)
  config = eval_config(eval_assets, progress=False, label="MDLM", batch=1 << 20)
  assert cli.run(config, str(out)) == 2
  line = _one_error_line(capsys.readouterr().err)
  assert line.startswith(f"error: writing the evaluation to {out} failed ("), line
  assert os.strerror(errno.ENOSPC) in line, line
  assert line.endswith(f"the finished (NFE, seed) pairs are in {out / cli.PROGRESS_DIR}: free "
                       "space and rerun the same command to resume"), line
  assert calls == [(4, 0), (4, 1)]
  assert sorted(os.listdir(out / cli.PROGRESS_DIR)) == [
      f"nfe{n}-seed{s}.json" for n in (2, 4) for s in (0, 1)]
  assert not [f for f in os.listdir(out) if f.startswith(".") and f != cli.PROGRESS_DIR], \
      "a temporary file or the workdir lock is left"
  assert not (out / cli.RESULTS_MD).exists()

  monkeypatch.setattr(files, "_atomic_write", real_write)
  calls[:] = []
  assert cli.run(config, str(out)) == 0
  capsys.readouterr()
  assert calls == [], "every pair is resumed from .progress"
  assert not (out / cli.PROGRESS_DIR).exists()
  got = json.loads((out / "results.json").read_text())
  want = json.loads((want_out / "results.json").read_text())
  assert got["resumed_pairs"] == [[n, s] for n in (2, 4) for s in (0, 1)]
  assert [(r["nfe"], r["seed"]) for r in got["rows"]] == [(r["nfe"], r["seed"])
                                                           for r in want["rows"]]
  for g, w in zip(got["rows"], want["rows"]):
    # In-process vs the CLI subprocess, both on 8 devices: the same samples, so the same
    # judge sums up to float32 reduction order.
    assert math.isclose(g["gen_ppl"], w["gen_ppl"], rel_tol=1e-6)
    assert g["entropy"] == w["entropy"] and g["num_tokens"] == w["num_tokens"]
  assert (files.read_jsonl(str(out / "samples.jsonl"))
          == files.read_jsonl(str(want_out / "samples.jsonl")))
  assert ((out / "results.md").read_text().splitlines()[:4]
          == (want_out / "results.md").read_text().splitlines()[:4])


def test_progress_of_other_weights_is_not_reused(tmp_path):
  fp = {"weights": "a", "sampling": {"num_samples": 8}}
  path = cli._progress_path(str(tmp_path), 4, 0, 1.0, 1.0)
  assert os.path.basename(path) == "nfe4-seed0.json"   # the name of runs without a sweep
  files.write_json(path, {"fingerprint": fp, "row": {"nfe": 4}, "samples": None})
  keys = [(4, 0, 1.0), (8, 0, 1.0), (4, 0, 0.9)]
  assert list(cli._load_progress(str(tmp_path), fp, keys, 1.0)) == [(4, 0, 1.0)]
  assert cli._load_progress(str(tmp_path), dict(fp, weights="b"), keys, 1.0) == {}
  assert cli._load_progress(str(tmp_path), dict(fp, sampling={"num_samples": 16}),
                            keys, 1.0) == {}


def _one_error_line(err: str) -> str:
  lines = [ln for ln in err.strip().splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  return lines[0]


def _run_error(config, workdir, capsys):
  rc = cli.run(config, str(workdir))
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert len(err.splitlines()) == 1 and err.startswith("error: "), err
  assert not os.path.exists(workdir), "nothing may be written on error"
  return err


def test_missing_judge_says_how_to_convert(eval_assets, tmp_path, capsys, eval_config):
  err = _run_error(eval_config(eval_assets, judge=str(tmp_path / "gpt2-large-flax")),
                   tmp_path / "out", capsys)
  assert "python -m convert.gpt2" in err and "config.judge=" in err
  # A PyTorch-only directory: converted weights are missing.
  err = _run_error(eval_config(eval_assets, judge=eval_assets["pt"]), tmp_path / "out", capsys)
  assert "PyTorch weights" in err and "python -m convert.gpt2" in err


def test_vocab_mismatch_names_both_sizes(eval_assets, tmp_path, capsys, eval_config, eval_backbone,
                                         build_tiny_tokenizer):
  tok = build_tiny_tokenizer(tmp_path / "tok300", vocab_size=300)
  err = _run_error(eval_config(eval_assets, tokenizer=tok), tmp_path / "out", capsys)
  assert "vocab_size 321" in err and "has 300 tokens" in err and "= 301" in err
  # A DUO backbone has len(tokenizer) ids counting DUO's added [PAD]: 320 + 1, so a DUO
  # model of 320 ids does not fit.
  duo = eval_backbone(str(tmp_path / "duo"), VOCAB, seed=5, arch="duo")
  err = _run_error(eval_config(eval_assets, checkpoint=duo), tmp_path / "out", capsys)
  assert "duo backbone has vocab_size 320" in err and "has 321 tokens" in err
  err = _run_error(eval_config(eval_assets, judge_kind="synthetic"), tmp_path / "out", capsys)
  assert "vocab_size 321" in err and "has 250 tokens" in err


def test_empty_sample_set_and_other_user_errors(eval_assets, tmp_path, capsys, eval_config):
  err = _run_error(eval_config(eval_assets, num_samples=0), tmp_path / "out", capsys)
  assert "config.num_samples=0" in err and "empty" in err
  err = _run_error(eval_config(eval_assets, nfe=()), tmp_path / "out", capsys)
  assert "config.nfe=() is empty" in err
  err = _run_error(eval_config(eval_assets, checkpoint=""), tmp_path / "out", capsys)
  assert "config.checkpoint is empty" in err
  err = _run_error(eval_config(eval_assets, checkpoint=str(tmp_path / "nope")), tmp_path / "out",
                   capsys)
  assert "python -m convert" in err
  err = _run_error(eval_config(eval_assets, batch=6), tmp_path / "out", capsys)
  assert "config.batch 6 is not divisible by the 8 batch shards" in err
  # A temperature sweep must hold τ = 1 (the summary and the matched-entropy reference).
  err = _run_error(eval_config(eval_assets, temperatures=(0.8, 0.9)), tmp_path / "out", capsys)
  assert "config.temperatures=(0.8, 0.9) must include 1" in err
  err = _run_error(eval_config(eval_assets, temperatures=(1.0, -0.5)), tmp_path / "out",
                   capsys)
  assert "config.temperatures=(1.0, -0.5) entry -0.5 must be > 0" in err
  with pytest.raises(report.ReportError, match="empty"):
    report.summarize([])
  judge = judges.SyntheticJudge(synthetic.make_language(0, vocab_size=20, n_topics=2,
                                                        topic_vocab_size=8),
                                process=make_process("duo", 20), progress=False)
  with pytest.raises(EvalError, match="empty"):
    judge.score(np.zeros((0, LENGTH), np.int32), None)


def test_issue25_one_evaluation_per_workdir_and_foreign_outputs_kept(eval_assets, tmp_path,
                                                                     capsys, eval_config):
  """Item 3: before, two launch/eval.py on one workdir both computed everything (last
  writer won); the second is refused at once, naming the first. Item 2: an output file of
  the same name that this project did not write (results.json, samples.jsonl) is not
  replaced. Item 6: an unwritable workdir is one line. All before anything is loaded."""
  from tokendrift_jax import fs  # pylint: disable=import-outside-toplevel
  out = tmp_path / "out"
  with fs.WorkdirLock(str(out), "evaluation"):
    rc = cli.run(eval_config(eval_assets), str(out))
    line = _one_error_line(capsys.readouterr().err)
  assert rc == 2 and f"{out} is in use by evaluation (pid {os.getpid()} on" in line, line
  assert os.listdir(out) == []
  for name in (cli.RESULTS_JSON, cli.SAMPLES_JSONL):
    (out / name).write_text('{"my": "numbers"}\n')
    rc = cli.run(eval_config(eval_assets), str(out))
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and f"{out / name}: launch/eval.py replaces only an earlier output" in line
    assert (out / name).read_text() == '{"my": "numbers"}\n'
    (out / name).unlink()
  (tmp_path / "afile").write_text("x")
  rc = cli.run(eval_config(eval_assets), str(tmp_path / "afile" / "out"))
  line = _one_error_line(capsys.readouterr().err)
  assert rc == 2 and "is a file, not a directory" in line, line
