"""eval/hook: the Fig. 2 training hook (judged by the synthetic language, checked against a
pure-Python likelihood), its errors before training, and resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.references.np_entropy import entropy_reference
from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.data import synthetic
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.diffusion import sampling as sampling_lib
from tokendrift_jax.eval.eval_config import EvalError
from tokendrift_jax.eval import files
from tokendrift_jax.eval import hook as hook_lib
from tokendrift_jax.eval import report
from tokendrift_jax.eval import sampling_eval
from tokendrift_jax.train import metrics_writer
from tokendrift_jax.train import trainer

LENGTH = 16           # backbone length = sample length
NFES = (2, 4)


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


def test_training_hook_writes_eval_jsonl_and_curve(tmp_path, eval_backbone, eval_dit_config,
                                                   tiny_run_config, tiny_lang):
  lang = synthetic.make_language(tiny_lang["seed"],
                                 **{k: v for k, v in tiny_lang.items() if k != "seed"})
  init = eval_backbone(str(tmp_path / "init"), lang.vocab_size + 1, seed=2)  # + the mask
  np.save(tmp_path / "train.npy", synthetic.sample_corpus(lang, 1, 64, LENGTH))
  # One device and no gradient accumulation keep the train-step compile short; the
  # sampling under an 8-device mesh is exercised by the launch/eval.py run.
  c = tiny_run_config(str(tmp_path / "unused"), objective="continuation", steps=4,
                     mesh_shape=(1, 1), num_devices=1, global_batch=8, micro_batch=8)
  c.init_checkpoint = init
  c.model.update(eval_dit_config(lang.vocab_size + 1).to_dict())
  c.data.train_tokens = str(tmp_path / "train.npy")
  c.data.valid_tokens = ""
  c.train.export_backbone = False
  se = c.sample_eval
  se.enabled, se.every, se.nfe, se.num_samples, se.batch = True, 2, NFES, 8, 8
  se.judge_kind = "synthetic"
  se.synthetic.update(tiny_lang)
  workdir = tmp_path / "run"
  summary = trainer.train(c, str(workdir), hooks=[hook_lib.make_sample_eval_hook(c, str(workdir))])
  assert summary["step"] == 4

  rows = files.read_jsonl(str(workdir / "eval.jsonl"))
  assert [(r["step"], r["nfe"]) for r in rows] == [(s, n) for s in (0, 2, 4) for n in NFES]
  assert all(r["seed"] == 0 and r["num_samples"] == 8 for r in rows)
  assert all(math.isfinite(r["gen_ppl"]) and r["gen_ppl"] > 1 for r in rows)
  # Step 0 is the initial checkpoint: resample it with the documented keys and judge the
  # samples with the pure-Python likelihood.
  cfg, params, _ = checkpoints.load_backbone_params(init)
  gdef = models.graphdef(cfg)
  sampler = sampling_lib.make_sampler(
      make_process("mdlm", cfg.vocab_size), lambda p, x, s: models.merge(gdef, p)(x, s),
      batch=8, length=LENGTH)
  tokens = np.asarray(sampler(params, sampling_eval.sample_key(0, 2, 0), 2).tokens)
  row0 = rows[0]
  # float64 sums over 128 tokens on both sides; only summation order differs.
  assert math.isclose(row0["gen_ppl"], _synthetic_reference_gen_ppl(lang, tokens),
                      rel_tol=1e-9)
  assert abs(row0["entropy"] - entropy_reference(tokens)) < 1e-5

  metrics = metrics_writer.read_jsonl(str(workdir / "metrics.jsonl"))
  logged = {r["step"]: r for r in metrics if "sample/gen_ppl/nfe=2" in r}
  assert sorted(logged) == [2, 4]
  assert logged[4]["sample/gen_ppl/nfe=4"] == rows[-1]["gen_ppl"]
  png = workdir / "genppl_curve.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
  print(f"Fig. 2 curve: {png}")


def test_hook_errors_before_training(tmp_path, build_tiny_tokenizer, tiny_run_config):
  c = tiny_run_config(str(tmp_path / "t"), objective="continuation")
  c.sample_eval.enabled = True
  c.sample_eval.judge = str(tmp_path / "no-judge")
  c.sample_eval.tokenizer = str(tmp_path / "tok")
  build_tiny_tokenizer(tmp_path / "tok", vocab_size=300)
  with pytest.raises(EvalError, match="vocab_size 33 .* 300 tokens"):
    hook_lib.make_sample_eval_hook(c, str(tmp_path / "run"))
  c.sample_eval.batch = 12
  with pytest.raises(EvalError, match="sample_eval.batch 12 is not divisible"):
    hook_lib.make_sample_eval_hook(c, str(tmp_path / "run"))
  c.sample_eval.enabled = False
  assert hook_lib.make_sample_eval_hook(c, str(tmp_path / "run"))(1000, None) == {}


def test_hook_resume_drops_rows_past_the_restored_step(tmp_path, tiny_run_config, tiny_lang):
  """A resumed run re-evaluates the steps after its checkpoint: later rows are dropped."""
  c = tiny_run_config(str(tmp_path / "t"), objective="continuation")
  c.sample_eval.update(dict(enabled=True, every=2, judge_kind="synthetic"))
  c.sample_eval.synthetic.update(tiny_lang)   # V = 32 text ids + mask = the tiny model's 33
  c.train.steps = 100
  workdir = tmp_path / "run"
  workdir.mkdir()
  hook = hook_lib.make_sample_eval_hook(c, str(workdir))
  files.write_jsonl(str(workdir / "eval.jsonl"),
                     [dict(step=s, nfe=4, seed=0, gen_ppl=10.0 + s, entropy=1.0,
                           num_samples=8, nfe_model=5.0) for s in (0, 2, 4, 6)])
  # Resumed from step 4: the first call is step 5, not due; step 0 exists, so no re-run.
  assert hook(5, None) == {}
  assert [r["step"] for r in files.read_jsonl(str(workdir / "eval.jsonl"))] == [0, 2, 4]
