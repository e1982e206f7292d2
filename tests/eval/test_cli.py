"""The sample-evaluation driver: launch/eval.py, the Fig. 2 training hook, launch/compare.py.

A tiny MDLM backbone (random, every leaf perturbed) is sampled and judged by a tiny random
GPT-2 (tests/fixtures_gpt2.py) through the real command line; the numbers it writes are
checked against independent references: the float64 PyTorch Gen-PPL protocol of
tests/test_genppl.py on the written texts, HF decoding of the written ids, a NumPy entropy,
the stdlib's mean / stdev, and the documented sampling keys. A short training run with the
hook uses the synthetic language as judge (checked against a pure-Python likelihood).
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
import transformers

from configs import eval as eval_configs
from convert.gpt2 import convert_gpt2
from tests import fixtures_gpt2
from tests import fixtures_tokenizer
from tests import fixtures_train as ft
from tests.references.torch_genppl import torch_protocol
from tokendrift_jax import checkpoints
from tokendrift_jax import sharding
from tokendrift_jax.data import synthetic
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.diffusion import sampling as sampling_lib
from tokendrift_jax.eval import cli
from tokendrift_jax.eval import hook as hook_lib
from tokendrift_jax.eval import report
from tokendrift_jax.eval import sampling_eval
from tokendrift_jax.models.dit import DiTConfig
from tokendrift_jax.train import metrics_writer
from tokendrift_jax.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXT = 32          # tiny judge n_positions
LENGTH = 16           # backbone length = sample length = retokenization max_length
NFES = (2, 4)
SEEDS = (0, 1)
NUM_SAMPLES = 8
GROUP = 4             # texts per retokenization call
# float32 Flax judge vs float64 PyTorch on the same texts: per-token NLLs agree to ~1e-6
# relative (tests/test_genppl.py); 1e-4 leaves margin while one misweighted token in ~120
# (a wrong text, pairing or group) moves the pooled value by ~1e-2.
REL_TOL = 1e-4


def _tiny_dit(vocab: int) -> DiTConfig:
  return DiTConfig(vocab_size=vocab, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4,
                   length=LENGTH, dropout=0.0)


def _backbone(path: str, vocab: int, seed: int, arch: str = "mdlm") -> str:
  cfg = _tiny_dit(vocab)
  if arch == "duo":
    cfg = DiTConfig(**dict(cfg.to_dict(), time_conditioning=True))
  # ft.random_params perturbs every leaf (adaLN / output layers start at zero).
  checkpoints.save_backbone(path, cfg, ft.random_params(cfg, seed), meta={"arch": arch})
  return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval_driver")
  fixtures_gpt2.build_tiny_gpt2(root / "gpt2_pt", n_positions=CONTEXT)
  convert_gpt2(root / "gpt2_pt", root / "gpt2_flax", verify=False)
  vocab = fixtures_gpt2.VOCAB + 1       # MDLM: the tokenizer's ids + the mask, last
  return {"root": root, "pt": str(root / "gpt2_pt"), "flax": str(root / "gpt2_flax"),
          "ckpt": _backbone(str(root / "mdlm_released"), vocab, seed=3),
          "ckpt2": _backbone(str(root / "mdlm_other"), vocab, seed=11)}


def _config(assets, **over):
  c = eval_configs.get_config()
  c.checkpoint = assets["ckpt"]
  c.judge = assets["flax"]
  c.tokenizer = assets["pt"]
  c.nfe, c.seeds, c.num_samples, c.batch = NFES, SEEDS, NUM_SAMPLES, 8
  c.judge_group_size = GROUP
  c.progress = False
  for k, v in over.items():
    c[k] = v
  return c


def _cli_args(assets, out, nfes=NFES, seeds=SEEDS):
  return [sys.executable, os.path.join(ROOT, "launch", "eval.py"),
          f"--config={os.path.join(ROOT, 'configs', 'eval.py')}",
          f"--config.checkpoint={assets['ckpt']}", f"--workdir={out}",
          f"--config.judge={assets['flax']}", f"--config.tokenizer={assets['pt']}",
          f"--config.nfe={tuple(nfes)}", f"--config.seeds={tuple(seeds)}",
          f"--config.num_samples={NUM_SAMPLES}", "--config.batch=8",
          f"--config.judge_group_size={GROUP}", "--config.label=MDLM"]


@pytest.fixture(scope="module")
def cli_run(assets):
  """launch/eval.py as a user runs it, in a subprocess with 8 CPU devices."""
  out = assets["root"] / "cli_out"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  proc = subprocess.run(_cli_args(assets, out), cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, proc


def _entropy_reference(ids) -> float:
  """Per sample −Σ p log p of its token-id frequencies (nats), float64, then the mean."""
  out = []
  for row in ids:
    _, counts = np.unique(np.asarray(row), return_counts=True)
    p = counts / counts.sum()
    out.append(-np.sum(p * np.log(p)))
  return float(np.mean(out))


# ----------------------------------------------------------------- launch/eval.py


def test_cli_writes_results_table_and_samples(assets, cli_run):
  out, proc = cli_run
  assert sorted(p for p in os.listdir(out) if not p.startswith(".")) == [
      "results.json", "results.md", "samples.jsonl"]
  assert "sampling NFE=" in proc.stderr and "Gen-PPL" in proc.stderr  # progress bars
  payload = json.loads((out / "results.json").read_text())
  samples = report.read_jsonl(str(out / "samples.jsonl"))
  tokenizer = transformers.AutoTokenizer.from_pretrained(assets["pt"])

  assert payload["arch"] == "mdlm" and payload["label"] == "MDLM"
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
    ppl, _, w = torch_protocol(assets["pt"], texts, LENGTH, CONTEXT, group_size=GROUP)
    assert abs(row["gen_ppl"] - ppl) <= REL_TOL * ppl
    assert row["num_tokens"] == w.sum() and row["num_samples"] == NUM_SAMPLES
    # Entropy: float32 on device vs float64 here, values ~2 nats: 1e-5 absolute.
    assert abs(row["entropy"] - _entropy_reference(ids)) < 1e-5
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


def test_duo_checkpoint_is_sampled_decoded_and_judged(assets, tmp_path, capsys):
  """A DUO backbone (len(tokenizer) + DUO's [PAD] ids, ancestral float64 sampler) through
  the same driver: decoded as DUO decodes, Gen-PPL equal to the PyTorch protocol."""
  duo = _backbone(str(tmp_path / "duo"), fixtures_gpt2.VOCAB + 1, seed=5, arch="duo")
  out = tmp_path / "out"
  c = _config(assets, checkpoint=duo, nfe=(2,), seeds=(0,), progress=False, label="DUO")
  assert cli.run(c, str(out)) == 0
  capsys.readouterr()
  payload = json.loads((out / "results.json").read_text())
  assert payload["arch"] == "duo" and payload["sampling"]["sampler_precision"] == "float64"
  assert payload["sampling"]["noise_removal"] == "ancestral"
  [row] = payload["rows"]
  samples = report.read_jsonl(str(out / "samples.jsonl"))
  ids = [smp["token_ids"] for smp in samples]
  assert len(ids) == NUM_SAMPLES and max(max(x) for x in ids) <= fixtures_gpt2.VOCAB
  tokenizer = transformers.AutoTokenizer.from_pretrained(assets["pt"])
  tokenizer.add_special_tokens({"pad_token": "[PAD]"})  # as DUO's get_tokenizer does
  texts = [smp["text"] for smp in samples]
  assert texts == tokenizer.batch_decode(ids)
  ppl, _, w = torch_protocol(assets["pt"], texts, LENGTH, CONTEXT, group_size=GROUP)
  assert abs(row["gen_ppl"] - ppl) <= REL_TOL * ppl and row["num_tokens"] == w.sum()
  assert abs(row["entropy"] - _entropy_reference(ids)) < 1e-5
  # DUO's uniform prior can leave its [PAD] id (320) in a sample: it decodes to "[PAD]".
  judge = sampling_eval.build_judge(c, arch="duo", vocab_size=fixtures_gpt2.VOCAB + 1,
                                    max_length=LENGTH, mesh=sharding.make_mesh(),
                                    progress=False)
  pad_row = np.asarray([ids[0][:3] + [fixtures_gpt2.VOCAB] + ids[0][4:]])
  assert judge.decode(pad_row) == tokenizer.batch_decode(pad_row.tolist())
  assert "[PAD]" in judge.decode(pad_row)[0]


def test_samples_follow_documented_keys_on_any_device_count(assets, cli_run):
  """Batch b of seed s at NFE n = sampler(fold_in(fold_in(PRNGKey(s), n), b)), on 1 device."""
  out, _ = cli_run
  samples = report.read_jsonl(str(out / "samples.jsonl"))
  cfg, params, _ = checkpoints.load_backbone_params(assets["ckpt"])
  gdef = checkpoints.graphdef(cfg)
  sampler = sampling_lib.make_sampler(
      make_process("mdlm", cfg.vocab_size), lambda p, x, s: checkpoints.merge(gdef, p)(x, s),
      batch=8, length=LENGTH)
  for nfe, seed in ((2, 1), (4, 0)):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), nfe), 0)
    tokens = np.asarray(sampler(params, key, nfe).tokens)
    want = [s["token_ids"] for s in samples if (s["nfe"], s["seed"]) == (nfe, seed)]
    np.testing.assert_array_equal(tokens, np.asarray(want))


def test_cli_two_processes_equal_one_process(assets, cli_run, tmp_path, monkeypatch, capsys):
  """jax.distributed on 127.0.0.1: 2 processes x 4 CPU devices write what 1 x 8 wrote.

  Covers the multi-host paths of the evaluator: parameters placed without cross-host
  transfers, sampled batches gathered from both processes, the judge's sums gathered,
  only process 0 writing, and resuming: a run interrupted after (NFE 4, seed 0) left its
  progress, and both processes skip that pair (process 0's files decide) and sample the
  other.
  """
  want_out, _ = cli_run
  out = tmp_path / "two"
  real_sample = sampling_eval.SampleEvaluator.sample

  def sample(self, params, nfe, seed, num_samples, bar=None):
    if seed == 1:
      raise KeyboardInterrupt
    return real_sample(self, params, nfe, seed, num_samples, bar)

  monkeypatch.setattr(sampling_eval.SampleEvaluator, "sample", sample)
  with pytest.raises(KeyboardInterrupt):
    cli.run(_config(assets, nfe=(4,), seeds=(0, 1), progress=False, label="MDLM"), str(out))
  monkeypatch.undo()
  capsys.readouterr()
  assert os.listdir(out / cli.PROGRESS_DIR) == ["nfe4-seed0.json"]

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  procs = []
  for pid in range(2):
    # Rows and samples depend only on their own (NFE, seed, batch) keys.
    cmd = _cli_args(assets, out, nfes=(4,), seeds=(0, 1)) + [
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
  want_ids = [s["token_ids"] for s in report.read_jsonl(str(want_out / "samples.jsonl"))
              if s["nfe"] == 4]
  got_ids = [s["token_ids"] for s in report.read_jsonl(str(out / "samples.jsonl"))]
  assert got_ids == want_ids
  for row, ref in zip(got["rows"], refs):
    # Same samples, same judge batches on an 8-device mesh: float32 sums can differ only
    # through reduction order.
    assert math.isclose(row["gen_ppl"], ref["gen_ppl"], rel_tol=1e-6)
    assert row["entropy"] == ref["entropy"] and row["num_tokens"] == ref["num_tokens"]


def test_interrupted_evaluation_resumes(assets, cli_run, tmp_path, monkeypatch, capsys):
  """Killed during the 3rd (NFE, seed): the rerun samples only the 2 missing pairs and
  writes what the uninterrupted run (cli_run) wrote."""
  want_out, _ = cli_run
  out = tmp_path / "resumed"
  real_sample = sampling_eval.SampleEvaluator.sample
  calls = []

  def sample(self, params, nfe, seed, num_samples, bar=None):
    calls.append((nfe, seed))
    if len(calls) == 3 and interrupt:
      raise KeyboardInterrupt
    return real_sample(self, params, nfe, seed, num_samples, bar)

  monkeypatch.setattr(sampling_eval.SampleEvaluator, "sample", sample)
  interrupt = True
  with pytest.raises(KeyboardInterrupt):
    cli.run(_config(assets, progress=False, label="MDLM"), str(out))
  saved = sorted(os.listdir(out / cli.PROGRESS_DIR))
  assert saved == ["nfe2-seed0.json", "nfe2-seed1.json"]
  assert not (out / cli.RESULTS_JSON).exists()

  interrupt, calls[:] = False, []
  assert cli.run(_config(assets, progress=False, label="MDLM"), str(out)) == 0
  capsys.readouterr()
  assert calls == [(4, 0), (4, 1)]
  assert not (out / cli.PROGRESS_DIR).exists()
  got = json.loads((out / "results.json").read_text())
  want = json.loads((want_out / "results.json").read_text())
  assert got["resumed_pairs"] == [[2, 0], [2, 1]]
  assert [(r["nfe"], r["seed"]) for r in got["rows"]] == [(r["nfe"], r["seed"])
                                                           for r in want["rows"]]
  for g, w in zip(got["rows"], want["rows"]):
    # In-process vs the CLI subprocess, both on 8 devices: the same samples, so the same
    # judge sums up to float32 reduction order.
    assert math.isclose(g["gen_ppl"], w["gen_ppl"], rel_tol=1e-6)
    assert g["entropy"] == w["entropy"] and g["num_tokens"] == w["num_tokens"]
  assert (report.read_jsonl(str(out / "samples.jsonl"))
          == report.read_jsonl(str(want_out / "samples.jsonl")))
  assert ((out / "results.md").read_text().splitlines()[:4]
          == (want_out / "results.md").read_text().splitlines()[:4])


def test_progress_of_other_weights_is_not_reused(tmp_path):
  fp = {"weights": "a", "sampling": {"num_samples": 8}}
  path = cli._progress_path(str(tmp_path), 4, 0)
  report.write_json(path, {"fingerprint": fp, "row": {"nfe": 4}, "samples": None})
  assert list(cli._load_progress(str(tmp_path), fp, (4, 8), (0,))) == [(4, 0)]
  assert cli._load_progress(str(tmp_path), dict(fp, weights="b"), (4,), (0,)) == {}
  assert cli._load_progress(str(tmp_path), dict(fp, sampling={"num_samples": 16}),
                            (4,), (0,)) == {}


# ----------------------------------------------------------------- errors


def _run_error(config, workdir, capsys):
  rc = cli.run(config, str(workdir))
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert len(err.splitlines()) == 1 and err.startswith("error: "), err
  assert not os.path.exists(workdir), "nothing may be written on error"
  return err


def test_missing_judge_says_how_to_convert(assets, tmp_path, capsys):
  err = _run_error(_config(assets, judge=str(tmp_path / "gpt2-large-flax")),
                   tmp_path / "out", capsys)
  assert "python -m convert.gpt2" in err and "config.judge=" in err
  # A PyTorch-only directory: converted weights are missing.
  err = _run_error(_config(assets, judge=assets["pt"]), tmp_path / "out", capsys)
  assert "PyTorch weights" in err and "python -m convert.gpt2" in err


def test_vocab_mismatch_names_both_sizes(assets, tmp_path, capsys):
  tok = fixtures_tokenizer.build_tiny_tokenizer(tmp_path / "tok300", vocab_size=300)
  err = _run_error(_config(assets, tokenizer=tok), tmp_path / "out", capsys)
  assert "vocab_size 321" in err and "has 300 tokens" in err and "= 301" in err
  # A DUO backbone has len(tokenizer) ids counting DUO's added [PAD]: 320 + 1, so a DUO
  # model of 320 ids does not fit.
  duo = _backbone(str(tmp_path / "duo"), fixtures_gpt2.VOCAB, seed=5, arch="duo")
  err = _run_error(_config(assets, checkpoint=duo), tmp_path / "out", capsys)
  assert "duo backbone has vocab_size 320" in err and "has 321 tokens" in err
  err = _run_error(_config(assets, judge_kind="synthetic"), tmp_path / "out", capsys)
  assert "vocab_size 321" in err and "has 250 tokens" in err


def test_empty_sample_set_and_other_user_errors(assets, tmp_path, capsys):
  err = _run_error(_config(assets, num_samples=0), tmp_path / "out", capsys)
  assert "config.num_samples=0" in err and "empty" in err
  err = _run_error(_config(assets, nfe=()), tmp_path / "out", capsys)
  assert "config.nfe is empty" in err
  err = _run_error(_config(assets, checkpoint=""), tmp_path / "out", capsys)
  assert "config.checkpoint is empty" in err
  err = _run_error(_config(assets, checkpoint=str(tmp_path / "nope")), tmp_path / "out",
                   capsys)
  assert "python -m convert" in err
  err = _run_error(_config(assets, batch=6), tmp_path / "out", capsys)
  assert "config.batch 6 is not divisible by the 8 batch shards" in err
  with pytest.raises(report.ReportError, match="empty"):
    report.summarize([])
  judge = sampling_eval.SyntheticJudge(synthetic.make_language(0, vocab_size=20, n_topics=2,
                                                               topic_vocab_size=8),
                                       arch="duo", vocab_size=20, progress=False)
  with pytest.raises(sampling_eval.EvalError, match="empty"):
    judge.score(np.zeros((0, LENGTH), np.int32), None)


# ----------------------------------------------------------------- training hook


def _synthetic_reference_gen_ppl(lang, tokens) -> float:
  """Pure-Python exact likelihood of the topic mixture (order 1), float64."""
  total, count = 0.0, 0
  for row in np.asarray(tokens):
    per_topic = []
    for k in range(lang.n_topics):
      logp, ctx = math.log(lang.topic_probs[k]), lang.vocab_size   # start symbol = V
      for x in row:
        q = sum(float(w) for s, w in zip(lang.successors[k, ctx], lang.successor_probs[k, ctx])
                if s == x)
        logp += math.log((1 - lang.floor) * q + lang.floor / lang.vocab_size)
        ctx = int(x)
      per_topic.append(logp)
    top = max(per_topic)
    total += top + math.log(sum(math.exp(v - top) for v in per_topic))
    count += len(row)
  return math.exp(-total / count)


LANG = dict(seed=3, vocab_size=32, n_topics=2, order=1, successors=4, topic_vocab_size=16,
            concentration=1.0, floor=0.01)


def test_training_hook_writes_eval_jsonl_and_curve(tmp_path):
  lang = synthetic.make_language(LANG["seed"], **{k: v for k, v in LANG.items() if k != "seed"})
  init = _backbone(str(tmp_path / "init"), lang.mdlm_vocab_size, seed=2)
  np.save(tmp_path / "train.npy", synthetic.sample_corpus(lang, 1, 64, LENGTH))
  # One device and no gradient accumulation keep the train-step compile short; the
  # sampling under an 8-device mesh is exercised by the launch/eval.py run.
  c = ft.tiny_config(str(tmp_path / "unused"), objective="continuation", steps=4,
                     mesh_shape=(1, 1), num_devices=1, global_batch=8, micro_batch=8)
  c.init_checkpoint = init
  c.model.update(_tiny_dit(lang.mdlm_vocab_size).to_dict())
  c.data.train_tokens = str(tmp_path / "train.npy")
  c.data.valid_tokens = ""
  c.train.export_backbone = False
  se = c.sample_eval
  se.enabled, se.every, se.nfe, se.num_samples, se.batch = True, 2, NFES, 8, 8
  se.judge_kind = "synthetic"
  se.synthetic.update(LANG)
  workdir = tmp_path / "run"
  summary = trainer.train(c, str(workdir), hooks=[hook_lib.make_sample_eval_hook(c)])
  assert summary["step"] == 4

  rows = report.read_jsonl(str(workdir / "eval.jsonl"))
  assert [(r["step"], r["nfe"]) for r in rows] == [(s, n) for s in (0, 2, 4) for n in NFES]
  assert all(r["seed"] == 0 and r["num_samples"] == 8 for r in rows)
  assert all(math.isfinite(r["gen_ppl"]) and r["gen_ppl"] > 1 for r in rows)
  # Step 0 is the initial checkpoint: resample it with the documented keys and judge the
  # samples with the pure-Python likelihood.
  cfg, params, _ = checkpoints.load_backbone_params(init)
  gdef = checkpoints.graphdef(cfg)
  sampler = sampling_lib.make_sampler(
      make_process("mdlm", cfg.vocab_size), lambda p, x, s: checkpoints.merge(gdef, p)(x, s),
      batch=8, length=LENGTH)
  tokens = np.asarray(sampler(params, sampling_eval.sample_key(0, 2, 0), 2).tokens)
  row0 = rows[0]
  # float64 sums over 128 tokens on both sides; only summation order differs.
  assert math.isclose(row0["gen_ppl"], _synthetic_reference_gen_ppl(lang, tokens),
                      rel_tol=1e-9)
  assert abs(row0["entropy"] - _entropy_reference(tokens)) < 1e-5

  metrics = metrics_writer.read_jsonl(str(workdir / "metrics.jsonl"))
  logged = {r["step"]: r for r in metrics if "sample/gen_ppl/nfe=2" in r}
  assert sorted(logged) == [2, 4]
  assert logged[4]["sample/gen_ppl/nfe=4"] == rows[-1]["gen_ppl"]
  png = workdir / "genppl_curve.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
  print(f"Fig. 2 curve: {png}")


def test_hook_errors_before_training(tmp_path):
  c = ft.tiny_config(str(tmp_path / "t"), objective="continuation")
  c.sample_eval.enabled = True
  c.sample_eval.judge = str(tmp_path / "no-judge")
  c.sample_eval.tokenizer = str(tmp_path / "tok")
  fixtures_tokenizer.build_tiny_tokenizer(tmp_path / "tok", vocab_size=300)
  with pytest.raises(sampling_eval.EvalError, match="vocab_size 33 .* 300 tokens"):
    hook_lib.make_sample_eval_hook(c)
  c.sample_eval.batch = 12
  with pytest.raises(sampling_eval.EvalError, match="sample_eval.batch 12 is not divisible"):
    hook_lib.make_sample_eval_hook(c)
  c.sample_eval.enabled = False
  assert hook_lib.make_sample_eval_hook(c)(None, 1000) == {}


def test_hook_resume_drops_rows_past_the_restored_step(tmp_path):
  """A resumed run re-evaluates the steps after its checkpoint: later rows are dropped."""
  c = ft.tiny_config(str(tmp_path / "t"), objective="continuation")
  c.sample_eval.update(dict(enabled=True, every=2, judge_kind="synthetic"))
  c.sample_eval.synthetic.update(LANG)   # V = 32 text ids + mask = the tiny model's 33
  hook = hook_lib.make_sample_eval_hook(c)
  workdir = tmp_path / "run"
  workdir.mkdir()
  report.write_jsonl(str(workdir / "eval.jsonl"),
                     [dict(step=s, nfe=4, seed=0, gen_ppl=10.0 + s, entropy=1.0,
                           num_samples=8, nfe_model=5.0) for s in (0, 2, 4, 6)])
  run = types.SimpleNamespace(workdir=str(workdir), init_checkpoint=c.init_checkpoint,
                              total_steps=100)
  # Resumed from step 4: the first call is step 5, not due; step 0 exists, so no re-run.
  assert hook(run, 5) == {}
  assert [r["step"] for r in report.read_jsonl(str(workdir / "eval.jsonl"))] == [0, 2, 4]


# ----------------------------------------------------------------- launch/compare.py


def test_compare_assembles_runs(assets, cli_run, tmp_path, capsys):
  other = tmp_path / "other"
  cli.evaluate_checkpoint(_config(assets, checkpoint=assets["ckpt2"], label="TokenDrift",
                                  write_samples=False), str(other))
  released, _ = cli_run
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
