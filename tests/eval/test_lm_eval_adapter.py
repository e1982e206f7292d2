"""The lm-evaluation-harness adapter (tokendrift_jax/eval/lm_eval_adapter.py,
diffusion_lm.py): LLaDA's Monte-Carlo likelihood against a float64 PyTorch reference for a
fixed mask draw, the draw's law, and local tasks end to end through
``lm_eval.simple_evaluate`` on a tiny LLaDA and a tiny Dream (no hub access).

The tiny backbones are the PyTorch references of tests/references (random non-zero weights,
norm weights perturbed) saved as HF directories and converted by ``python -m convert``;
their tokenizer is the tiny BPE of tests/conftest.py (ids 0..257, <|endoftext|> = 257) plus
the mask token added as id 258, so every text id is below the mask and the mask is one of
the tokenizer's ids, as in LLaDA-8B and Dream-7B.
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

# pylint: disable=wrong-import-position
from tokendrift_jax.eval import diffusion_lm
from tokendrift_jax.eval import lm_eval_adapter

VOCAB = 264          # embedding rows: the tokenizer's 259 ids, padded as LLaDA-8B pads
MASK = 258           # the added <|mdm_mask|>
EOS = 257            # the tiny tokenizer's <|endoftext|>


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, build_tiny_tokenizer):
  import transformers  # pylint: disable=import-outside-toplevel
  path = build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok", vocab_size=258)
  tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
  tok.add_special_tokens({"additional_special_tokens": ["<|mdm_mask|>"]})
  assert tok.convert_tokens_to_ids("<|mdm_mask|>") == MASK and len(tok) == MASK + 1
  tok.save_pretrained(path)
  return path


@pytest.fixture(scope="module")
def tiny_llada(tmp_path_factory, llada_hf_config, build_torch_llada, save_llada_dir):
  """(torch reference, converted checkpoint dir) of a tiny random LLaDA."""
  from convert.__main__ import main as convert_main  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("llada")
  cfg = llada_hf_config(vocab_size=VOCAB, embedding_size=VOCAB, mask_token_id=MASK,
                        eos_token_id=EOS, pad_token_id=EOS, max_sequence_length=64,
                        n_layers=2)
  model = build_torch_llada(cfg, seed=3)
  src = save_llada_dir(model, str(root / "hf"), n_shards=2)
  assert convert_main([src, str(root / "ckpt"), "--family", "llada"]) == 0
  return model, str(root / "ckpt")


@pytest.fixture(scope="module")
def tiny_dream(tmp_path_factory, dream_hf_config, build_torch_dream, save_dream_dir):
  """Converted checkpoint dir of a tiny random Dream (family read from config.json)."""
  from convert.__main__ import main as convert_main  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("dream")
  cfg = dream_hf_config(vocab_size=VOCAB, mask_token_id=MASK, pad_token_id=EOS,
                        bos_token_id=EOS, eos_token_id=EOS, max_position_embeddings=64,
                        num_hidden_layers=2)
  src = save_dream_dir(build_torch_dream(cfg, seed=4), str(root / "hf"), n_shards=2)
  assert convert_main([src, str(root / "ckpt")]) == 0
  return str(root / "ckpt")


def reference_loglikelihood(model, context, target, draws, mask_id, cfg=0.0) -> float:
  """eval_llada.py's get_loglikelihood in float64 for the given draws (written from the
  script's formulas, not from the adapter): per batch Σ CE / (n_i / T) / b, mean over
  batches, negated; guided logits uncond + (cfg + 1)(cond − uncond)."""
  model = model.double()
  seq = torch.tensor(list(context) + list(target), dtype=torch.long)
  p_len, t_len = len(context), len(target)
  losses = []
  with torch.no_grad():
    for d in draws:
      b = d.is_mask.shape[0]
      is_mask = torch.cat([torch.zeros(b, p_len, dtype=torch.bool),
                           torch.from_numpy(d.is_mask)], dim=1)
      noisy = torch.where(is_mask, mask_id, seq.repeat(b, 1))
      logits = model(noisy)[0]
      if cfg > 0:
        un = noisy.clone()
        un[:, :p_len] = mask_id
        un_logits = model(un)[0]
        logits = un_logits + (cfg + 1) * (logits - un_logits)
      p_mask = torch.from_numpy(d.num_masked).double()[:, None].repeat(1, p_len + t_len) / t_len
      ce = torch.nn.functional.cross_entropy(logits[is_mask], seq.repeat(b, 1)[is_mask],
                                             reduction="none")
      losses.append(float((ce / p_mask[is_mask]).sum() / b))
  model.float()
  return -sum(losses) / len(losses)


def test_draw_masks_is_the_scripts_stratified_draw():
  """Counts in 1..T spread evenly from a uniform k (consecutive rows T/b apart, mod T);
  each row masks exactly its count, at positions that vary between rows."""
  rng = np.random.default_rng(0)
  for t_len, b in ((5, 4), (7, 3), (1, 2), (6, 6)):
    for _ in range(20):
      d = diffusion_lm.draw_masks(rng, t_len, b)
      assert d.is_mask.shape == (b, t_len)
      assert np.all((d.num_masked >= 1) & (d.num_masked <= t_len))
      np.testing.assert_array_equal(d.is_mask.sum(1), d.num_masked)
      k = d.num_masked[0]
      want = ((np.round(k + np.arange(b) * t_len / b).astype(int) - 1) % t_len) + 1
      np.testing.assert_array_equal(d.num_masked, want)
  firsts = {int(diffusion_lm.draw_masks(rng, 6, 2).num_masked[0]) for _ in range(200)}
  assert firsts == set(range(1, 7))   # k uniform over 1..T


# The guided case compiles a second program (2b rows): under --runslow.
@pytest.mark.parametrize("cfg", [0.0, pytest.param(0.5, marks=pytest.mark.slow)])
def test_loglikelihood_matches_float64_reference(tiny_llada, tokenizer_dir, cfg):
  """The adapter's estimate for a fixed draw (the one its seed makes, injected into the
  reference) equals the float64 PyTorch computation of the script's formula. Tolerance
  1e-4 relative: the adapter runs the backbone in float32 (the converted LLaDA matches
  its float64 reference to ~1e-6 relative in the logits, tests/models/test_llada.py), and
  the estimate is a weighted sum of a few dozen log-probabilities of size O(1-10)."""
  model, ckpt = tiny_llada
  lm = lm_eval_adapter.TokenDriftLM(checkpoint=ckpt, tokenizer=tokenizer_dir, mc_num=6,
                                    batch_size=3, cfg=cfg, seed=7, num_devices=1)
  from lm_eval.api.instance import Instance  # pylint: disable=import-outside-toplevel
  pairs = [("ab cd ef gh", " ij kl mno")]
  reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
  got = lm.loglikelihood(reqs)
  for (context, cont), (logprob, greedy) in zip(pairs, got):
    ctx_ids, tgt_ids = lm_eval_adapter.encode_pair(lm.tokenizer, context, cont)
    assert len(tgt_ids) >= 2 and MASK not in ctx_ids + tgt_ids
    rng = diffusion_lm.request_rng(7, len(ctx_ids), len(tgt_ids))
    draws = [diffusion_lm.draw_masks(rng, len(tgt_ids), 3) for _ in range(2)]
    want = reference_loglikelihood(model, ctx_ids, tgt_ids, draws, MASK, cfg)
    assert greedy is False
    np.testing.assert_allclose(logprob, want, rtol=1e-4)
    # A different draw gives a different estimate (the draw is really used).
    other = [diffusion_lm.draw_masks(np.random.default_rng(99), len(tgt_ids), 3)]
    assert abs(lm.model.loglikelihood_tokens(ctx_ids, tgt_ids, other)
               - reference_loglikelihood(model, ctx_ids, tgt_ids, other, MASK, cfg)
               ) <= 1e-4 * abs(want)
  with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
    lm.loglikelihood_rolling(reqs)


@pytest.mark.slow   # its own DiT conversion and compile (~5 s); the fast set covers LLaDA
def test_mdlm_elbo_matches_float64_reference(tmp_path, torch_dit_config, build_torch_dit,
                                              save_hf_dir, convert_dit):
  """MDLM checkpoints are scored by the process's NELBO of the target given the context:
  for the draws of the documented keys (diffusion_lm.elbo_key; t and xt from the process's
  own sample_t / corrupt, the context put back clean), the adapter's estimate equals the
  float64 computation of MDLM's formula on the PyTorch DIT: −mean over draws of
  Σ_{masked target j} −log softmax(logits with the mask at −∞)_j[x_j] · σ'(t)/expm1(σ(t)),
  σ(t) = −log1p(−(1 − ε) t). Tolerance 1e-4 relative: float32 backbone (the converted DiT
  matches its float64 reference to ~1e-6 relative, tests/models/test_dit.py)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from tests.references.torch_dit import reference_logits  # pylint: disable=import-outside-toplevel
  model = build_torch_dit(torch_dit_config("mdlm"), seed=5)
  ckpt = convert_dit(save_hf_dir(model, str(tmp_path / "hf"), "mdlm"), tmp_path / "ckpt")
  lm = diffusion_lm.DiffusionLM(str(ckpt), mc_num=4, batch_size=2, seed=3, num_devices=1)
  assert lm.estimator == "elbo"
  process, vocab = lm.process, model.cfg["vocab_size"]
  rng = np.random.default_rng(0)
  context = rng.integers(0, vocab - 1, 5).tolist()
  target = rng.integers(0, vocab - 1, 6).tolist()
  got = lm.loglikelihood_tokens(context, target)
  x0 = np.asarray([context + target] * 2, np.int64)
  eps = process.eps
  total = 0.0
  for i in range(2):
    k_t, k_x = jax.random.split(diffusion_lm.elbo_key(3, 5, 6, i))
    t = process.sample_t(k_t, 2)
    xt = np.array(process.corrupt(k_x, jnp.asarray(x0, jnp.int32), t), np.int64)
    xt[:, :5] = x0[:, :5]
    t = np.asarray(t, np.float64)
    sigma = -np.log1p(-(1 - eps) * t)
    logits = reference_logits(model, xt, sigma)
    logits[..., process.mask_id] = -np.inf
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    nll = -np.take_along_axis(logp, x0[..., None], -1)[..., 0]
    weight = ((1 - eps) / (1 - (1 - eps) * t)) / np.expm1(sigma)
    masked = xt == process.mask_id
    assert masked[:, 5:].any() and not masked[:, :5].any()
    total += float(np.sum(np.where(masked, nll * weight[:, None], 0.0)))
  np.testing.assert_allclose(got, -total / 4, rtol=1e-4)


@pytest.mark.slow   # one more compiled sampler (~3 s)
def test_is_greedy_is_the_scripts_suffix_greedy_check(tiny_llada, tokenizer_dir):
  """is_check_greedy: True for the continuation that unmasking one most-confident position
  per step yields (generate.py with steps = gen_length = T, greedy, one block: the float64
  reference), False for any other; off, False (as the script returns)."""
  from tests.references import np_llada  # pylint: disable=import-outside-toplevel
  model, ckpt = tiny_llada
  lm = diffusion_lm.DiffusionLM(ckpt, mc_num=2, batch_size=2, is_check_greedy=True,
                                num_devices=1)
  context = [5, 17, 33, 101, 7]
  model = model.double()
  with torch.no_grad():
    out = np_llada.generate(lambda x: model(torch.from_numpy(x))[0].numpy(),
                            np.asarray([context]), steps=3, gen_length=3, block_length=3,
                            temperature=0.0, cfg_scale=0.0, remasking="low_confidence",
                            mask_id=MASK)
  model.float()
  assert out["margin"]["argmax"] > 1e-4 and out["margin"]["confidence"] > 1e-5
  greedy = [int(t) for t in out["tokens"][0, len(context):]]
  assert lm.is_greedy(context, greedy) is True
  assert lm.is_greedy(context, greedy[:2] + [(greedy[2] + 1) % MASK]) is False
  off = diffusion_lm.DiffusionLM(ckpt, mc_num=2, batch_size=2, num_devices=1)
  assert off.is_greedy(context, greedy) is False


def _same_length(tokenizer, context: str, words, n: int = 2) -> list[str]:
  """The first ``n`` of ``words`` whose continuation after ``context`` has one common token
  length (so every request of a task compiles one program)."""
  by_len: dict[int, list[str]] = {}
  for w in words:
    by_len.setdefault(len(lm_eval_adapter.encode_pair(tokenizer, context, w)[1]), []).append(w)
  return max(by_len.values(), key=len)[:n]


WORDS = [" ab", " cd", " ef", " gh", " ij", " kl", " mno", " pq", " rs", " tuv", " wx", " yz"]


def _write_tasks(root, tokenizer) -> tuple[str, list[str]]:
  """Two local tasks (JSON data + YAML) under ``root``: (the include path, the generation
  prompts).

  Multiple choice: one question twice, its two choices (of one token length) swapped and
  the label 0 in both; the estimate is a function of the (context, continuation) tokens
  and the seed only, so whichever choice the model prefers, exactly one of the two
  documents is right: acc = 0.5 exactly. Generation: two prompts of one token length,
  cut at ".".
  """
  os.makedirs(root, exist_ok=True)
  question = "ab cd ef"
  a, b = _same_length(tokenizer, question, WORDS)
  mc = [{"question": question, "choices": [a, b], "label": 0},
        {"question": question, "choices": [b, a], "label": 0}]
  prompts = _same_length(tokenizer, "", [w.strip() + " ab" for w in WORDS])
  gen = [{"question": p, "answer": "cd"} for p in prompts]
  for name, rows in (("mc", mc), ("gen", gen)):
    with open(os.path.join(root, f"{name}.json"), "w", encoding="utf-8") as f:
      json.dump(rows, f)
  with open(os.path.join(root, "td_mc.yaml"), "w", encoding="utf-8") as f:
    f.write(textwrap.dedent(f"""\
        task: td_mc
        dataset_path: json
        dataset_kwargs:
          data_files: {os.path.join(root, "mc.json")}
        test_split: train
        output_type: multiple_choice
        doc_to_text: "{{{{question}}}}"
        doc_to_choice: "{{{{choices}}}}"
        doc_to_target: label
        metric_list:
          - metric: acc
        """))
  with open(os.path.join(root, "td_gen.yaml"), "w", encoding="utf-8") as f:
    f.write(textwrap.dedent(f"""\
        task: td_gen
        dataset_path: json
        dataset_kwargs:
          data_files: {os.path.join(root, "gen.json")}
        test_split: train
        output_type: generate_until
        doc_to_text: "{{{{question}}}}"
        doc_to_target: "{{{{answer}}}}"
        generation_kwargs:
          until: ["."]
          max_gen_toks: {GEN}
        metric_list:
          - metric: exact_match
        """))
  return str(root), prompts


GEN = 4     # generated tokens per prompt
NFE = 2     # sampler steps (two tokens committed per step)


def _reference_generation(model, tokenizer, prompt: str) -> str:
  """LLaDA's generate.py (float64 NumPy reference, tests/references/np_llada.py) with the
  PyTorch model in float64 as the denoiser, greedy, then eval_llada.py's text rule: decode
  with special tokens, cut at ".", re-encode, decode without special tokens (ids past the
  tokenizer, rows of the padded embedding, dropped first as the adapter documents)."""
  from tests.references import np_llada  # pylint: disable=import-outside-toplevel
  ids = np.asarray([tokenizer(prompt)["input_ids"]])
  model = model.double()
  with torch.no_grad():
    out = np_llada.generate(lambda x: model(torch.from_numpy(x))[0].numpy(), ids,
                            steps=NFE, gen_length=GEN, block_length=GEN, temperature=0.0,
                            cfg_scale=0.0, remasking="low_confidence", mask_id=MASK)
  model.float()
  # float32 rounding in the adapter (~1e-6 relative in the logits) cannot flip a choice
  # of the float64 run: its closest argmax and confidence decisions are wider than that.
  assert out["margin"]["argmax"] > 1e-4 and out["margin"]["confidence"] > 1e-5
  gen = [int(t) for t in out["tokens"][0, ids.shape[1]:] if t < len(tokenizer)]
  text = tokenizer.decode(gen, skip_special_tokens=False).split(".")[0]
  return tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)


def _check_results(res, samples, prompts, check_text=None):
  assert res["td_mc"]["acc,none"] == 0.5
  assert 0.0 <= res["td_gen"]["exact_match,none"] <= 1.0
  assert len(samples["td_mc"]) == 2
  gen = sorted(samples["td_gen"], key=lambda s: s["doc_id"])
  assert [s["doc"]["question"] for s in gen] == prompts
  for s in gen:
    text = s["resps"][0][0]
    assert isinstance(text, str) and "." not in text
    if check_text is not None:
      assert text == check_text(s["doc"]["question"])


def test_simple_evaluate_runs_local_tasks_on_llada(tiny_llada, tokenizer_dir, tmp_path,
                                                   monkeypatch):
  """A multiple-choice and a generation task, from JSON files written here, through
  lm_eval.simple_evaluate on the registered model type (no hub: HF_DATASETS_OFFLINE):
  acc = 0.5 exactly (see _write_tasks), every generation cut at "." and equal to the
  float64 reference's text."""
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  import lm_eval  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from lm_eval.tasks import TaskManager  # pylint: disable=import-outside-toplevel
  tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
  model, ckpt = tiny_llada
  include, prompts = _write_tasks(tmp_path / "tasks", tokenizer)
  results = lm_eval.simple_evaluate(
      model="tokendrift",
      model_args=f"checkpoint={ckpt},tokenizer={tokenizer_dir},mc_num=2,batch_size=2,"
                 f"nfe={NFE},num_devices=1",
      tasks=["td_mc", "td_gen"], task_manager=TaskManager(include_path=include,
                                                          include_defaults=False),
      bootstrap_iters=0, log_samples=True)
  _check_results(results["results"], results["samples"], prompts,
                 lambda prompt: _reference_generation(model, tokenizer, prompt))


def test_launch_lm_eval_runs_local_tasks_on_dream(tiny_dream, tokenizer_dir, tmp_path,
                                                  monkeypatch, capsys):
  """The same tasks through launch/lm_eval.py's run() on a tiny Dream (its aligned logits,
  its diffusion_generate sampler): lm_eval_results.json and lm_eval_samples.jsonl written,
  acc = 0.5 exactly, generations cut at "."."""
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  import transformers  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.eval import lm_eval_cli  # pylint: disable=import-outside-toplevel
  tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
  include, prompts = _write_tasks(tmp_path / "tasks", tokenizer)
  out = tmp_path / "out"
  rc = lm_eval_cli.run(["--tasks=td_mc,td_gen", f"--include_path={include}",
                        f"--output_dir={out}", "--bootstrap_iters=0", "--log_samples",
                        "--no_default_tasks",
                        f"--model_args=checkpoint={tiny_dream},tokenizer={tokenizer_dir},"
                        f"mc_num=2,batch_size=2,nfe={NFE},num_devices=1,alg=entropy"])
  assert rc == 0, capsys.readouterr().err
  with open(out / lm_eval_cli.RESULTS_JSON, encoding="utf-8") as f:
    payload = json.load(f)
  samples: dict = {}
  with open(out / lm_eval_cli.SAMPLES_JSONL, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      samples.setdefault(row["task"], []).append(row)
  _check_results(payload["results"], samples, prompts)
  assert payload["tokendrift"]["checkpoint"] == tiny_dream
  assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args, says", [
    (["--tasks=", "--model_args=checkpoint={ckpt}"], "--tasks is empty"),
    (["--tasks=td_mc", "--model_args=tokenizer=x"], "needs checkpoint=DIR"),
    (["--tasks=td_mc", "--model_args=checkpoint={missing}"], "no backbone checkpoint"),
    (["--tasks=td_mc", "--model_args=checkpoint={run}"], "did you mean checkpoint="),
    (["--tasks=td_mc", "--model_args=checkpoint={ckpt}", "--limit=1.5"], "--limit=1.5"),
    (["--tasks=td_mc", "--model_args=checkpoint={ckpt}"], "leaves no tasks"),
    (["--tasks=td_mc", "--model_args=checkpoint={ckpt}", "--include_path={missing}"],
     "is not a directory"),
    (["--tasks=no_such_task_xyz", "--model_args=checkpoint={ckpt}",
      "--include_path={tasks}"], "unknown task(s) ['no_such_task_xyz']"),
    (["--tasks=td_mc", "--model_args=checkpoint={ckpt},tokenizer={tasks}/nothing",
      "--include_path={tasks}"], "does not exist"),
    (["--tasks=td_mc", "--model_args=checkpoint={ckpt}", "--include_path={tasks}"],
     "not in the local Hugging Face cache"),
    (["--tasks=td_mc", "--model_args=checkpoint={ckpt},tokenizer={tok},mc_num=3,batch_size=2",
      "--include_path={tasks}"], "mc_num=3 must be a multiple of batch_size=2"),
    (["--tasks=td_mc", "--model_args=checkpoint={ckpt},tokenizer={tok},nfe=x",
      "--include_path={tasks}"], "nfe must be an int"),
])
def test_launch_lm_eval_user_errors(args, says, tiny_llada, tokenizer_dir, tmp_path, capsys):
  """Bad input: one ``error:`` line, status 2, nothing written."""
  from tokendrift_jax.eval import lm_eval_cli  # pylint: disable=import-outside-toplevel
  run_dir = tmp_path / "run"
  (run_dir / "checkpoints").mkdir(parents=True)
  tasks = tmp_path / "tasks"
  tasks.mkdir()
  (tasks / "td_mc.yaml").write_text("task: td_mc\ndataset_path: json\n"
                                    "output_type: multiple_choice\n")
  fill = {"ckpt": tiny_llada[1], "missing": str(tmp_path / "missing"), "run": str(run_dir),
          "tasks": str(tasks), "tok": tokenizer_dir}
  out = tmp_path / "out"
  rc = lm_eval_cli.run([a.format(**fill) for a in args]
                       + [f"--output_dir={out}", "--no_default_tasks"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
  assert not out.exists()
