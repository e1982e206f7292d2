"""launch/eval.py on LLaDA checkpoints (issue 13, item 7): samples decoded with the LLaDA
tokenizer (special tokens skipped, as generate.py decodes), retokenized for the GPT-2 judge
and scored by the same Gen-PPL protocol, entropy of the ids; prompt-conditioned samples
judged as completions given their prompts.

The backbone is a random tiny LLaDA whose 600 ids are those of a tiny LLaDA-like tokenizer
(byte-level BPE + <|endoftext|>, <|mdm_mask|> = 598, <|eot_id|>; tests/eval/conftest.py);
the judge is the tiny random GPT-2 with the real GPT-2 BPE (``bpe_gpt2_judge``). Gen-PPL is
checked against the float64 PyTorch references of tests/references/torch_genppl.py on the
decoded texts, the texts against transformers' own decoding of the sampled ids, entropy
against a float64 NumPy reference.
"""

from __future__ import annotations

import json
import os

import chex
import numpy as np
import pytest
import transformers

from tests.references.np_entropy import entropy_reference
from tests.references.torch_genppl import torch_conditional, torch_protocol
from tokendrift_jax.diffusion import LLaDAProcess
from tokendrift_jax.eval import cli
from tokendrift_jax.eval import judges
from tokendrift_jax.eval.eval_config import EvalError

LENGTH = 16          # the tiny LLaDA's length
PROMPT = 4           # prompt tokens of the prompted evaluation; completions of 12
NUM_SAMPLES = 6      # one sampling batch of 8, its first 6 rows kept
REL_TOL = 1e-4       # float32 judge vs float64 reference (tests/eval/test_genppl_bpe.py)


def _config(assets, judge, **over):
  from configs import eval as eval_configs  # pylint: disable=import-outside-toplevel
  c = eval_configs.get_config()
  c.checkpoint, c.tokenizer, c.judge = assets.ckpt, assets.tokenizer, str(judge.flax)
  c.nfe, c.seeds, c.num_samples, c.batch = (2, 4), (0,), NUM_SAMPLES, 8
  c.judge_group_size, c.progress = 8, False
  for k, v in over.items():
    section, _, field = k.partition("__")
    if field:
      c[section][field] = v
    else:
      c[k] = v
  return c


def _samples(out):
  with open(os.path.join(out, "samples.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_unconditional_llada_checkpoint_is_decoded_retokenized_and_judged(
    llada_eval_assets, bpe_gpt2_judge, tmp_path, capsys):
  """On a (2, 2, 2) mesh with the backbone split by LLaDA's logical-axis rules over fsdp
  and tensor (how an 8B is evaluated), the samples over data x fsdp."""
  out = str(tmp_path / "out")
  config = _config(llada_eval_assets, bpe_gpt2_judge, label="LLaDA")
  config.mesh.shape, config.mesh.param_sharding = (2, 2, 2), "rules"
  assert cli.run(config, out) == 0
  assert "| LLaDA |" in capsys.readouterr().out
  with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
    payload = json.load(f)
  assert payload["process"] == "llada" and payload["family"] == "llada"
  assert payload["judge"]["special_tokens"] == "skip"        # generate.py's decoding
  assert payload["judge"]["tokenizer"] == llada_eval_assets.tokenizer
  assert payload["sampling"]["llada"] == dict(block_length=LENGTH, temperature=1.0,
                                              remasking="low_confidence", cfg_scale=0.0)
  assert payload["sampling"]["rows_per_forward"] == 8
  tok = transformers.AutoTokenizer.from_pretrained(llada_eval_assets.tokenizer)
  samples = _samples(out)
  for row in payload["rows"]:
    mine = [s for s in samples if s["nfe"] == row["nfe"]]
    ids = np.asarray([s["token_ids"] for s in mine])
    assert ids.shape == (NUM_SAMPLES, LENGTH) and row["nfe_model"] == row["nfe"]
    assert row["masks_left"] == int(np.sum(ids == llada_eval_assets.mask))
    texts = tok.batch_decode(ids.tolist(), skip_special_tokens=True,
                             clean_up_tokenization_spaces=True)
    assert [s["text"] for s in mine] == texts
    ppl, nll, w = torch_protocol(bpe_gpt2_judge.pt, texts, LENGTH, bpe_gpt2_judge.context,
                                 group_size=8)
    assert row["num_tokens"] == w.sum()
    chex.assert_trees_all_close(row["nll_sum"], nll.sum(), rtol=REL_TOL, atol=0)
    chex.assert_trees_all_close(row["gen_ppl"], ppl, rtol=REL_TOL, atol=0)
    chex.assert_trees_all_close(row["entropy"], entropy_reference(ids), rtol=1e-6, atol=0)


def test_prompted_llada_samples_are_judged_as_completions_given_the_prompt(
    llada_eval_assets, bpe_gpt2_judge, tmp_path):
  out = str(tmp_path / "out")
  config = _config(llada_eval_assets, bpe_gpt2_judge, prompt__tokens=llada_eval_assets.prompts,
                   prompt__length=PROMPT, llada__cfg_scale=1.0, llada__block_length=6)
  payload = cli.evaluate_checkpoint(config, out)
  gen = LENGTH - PROMPT
  assert payload["sampling"]["length"] == gen
  assert payload["sampling"]["prompt"]["length"] == PROMPT
  # Classifier-free guidance: every backbone call runs the prompted and un-prompted rows.
  assert payload["sampling"]["rows_per_forward"] == 16
  assert payload["sampling"]["llada"]["block_length"] == 6
  tok = transformers.AutoTokenizer.from_pretrained(llada_eval_assets.tokenizer)
  prompt_ids = np.load(llada_eval_assets.prompts)[:NUM_SAMPLES, :PROMPT]
  prompt_texts = tok.batch_decode(prompt_ids.tolist(), skip_special_tokens=True,
                                  clean_up_tokenization_spaces=True)
  samples = _samples(out)
  for row in payload["rows"]:
    mine = [s for s in samples if s["nfe"] == row["nfe"]]
    assert [s["prompt_ids"] for s in mine] == prompt_ids.tolist()
    assert [s["prompt"] for s in mine] == prompt_texts
    ids = np.asarray([s["token_ids"] for s in mine])
    assert ids.shape == (NUM_SAMPLES, gen) and row["nfe_model"] == row["nfe"]
    texts = tok.batch_decode(ids.tolist(), skip_special_tokens=True,
                             clean_up_tokenization_spaces=True)
    assert [s["text"] for s in mine] == texts
    ppl, nll, w = torch_conditional(bpe_gpt2_judge.pt, prompt_texts, texts, gen,
                                    bpe_gpt2_judge.context, group_size=8)
    assert row["num_tokens"] == w.sum()
    chex.assert_trees_all_close(row["nll_sum"], nll.sum(), rtol=REL_TOL, atol=0)
    chex.assert_trees_all_close(row["gen_ppl"], ppl, rtol=REL_TOL, atol=0)
    chex.assert_trees_all_close(row["entropy"], entropy_reference(ids), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------- bad inputs


def _one_error_line(err):
  lines = [ln for ln in err.strip().splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  return lines[0]


@pytest.mark.parametrize("over, message", [
    (dict(prompt__tokens="/nonexistent/prompts.npy", prompt__length=PROMPT),
     "config.prompt.tokens='/nonexistent/prompts.npy': no such file"),
    (dict(prompt__length=PROMPT), "config.prompt.tokens and config.prompt.length go together"),
    (dict(prompt__length=LENGTH), "config.prompt.tokens and config.prompt.length go together"),
    (dict(llada__cfg_scale=1.0), "config.llada.cfg_scale=1.0 guides by the prompt"),
    (dict(llada__block_length=4, nfe=(2, 4)),
     "config.nfe: steps=2 must be a multiple of the number of blocks 4"),
    (dict(llada__block_length=5), "config.llada.block_length=5 must divide the sample "
                                  "length 16"),
    (dict(tokenizer=""), "GSAI-ML/LLaDA-8B-Base"),
    (dict(mesh__param_sharding="tensor"), "config.mesh.param_sharding='tensor' must be one of"),
])
def test_bad_llada_evaluation_settings_are_one_line_errors(
    over, message, llada_eval_assets, bpe_gpt2_judge, tmp_path, capsys):
  """Each is reported before the judge is loaded (GPT-2 Large is 3 GB): the judge here is a
  directory that does not exist, whose error would come first otherwise."""
  out = tmp_path / "out"
  config = _config(llada_eval_assets, bpe_gpt2_judge, **over)
  config.judge = str(tmp_path / "no_judge_here")
  assert cli.run(config, str(out)) == 2
  assert message in _one_error_line(capsys.readouterr().err)
  assert not out.exists()


def test_prompt_file_too_small_and_prompts_on_a_dit_are_refused(
    llada_eval_assets, bpe_gpt2_judge, eval_assets, eval_config, tmp_path):
  small = tmp_path / "small.npy"
  np.save(small, np.zeros((NUM_SAMPLES - 1, PROMPT), np.int32))
  with pytest.raises(EvalError, match=r"has shape \[5, 4\]; config.num_samples=6"):
    cli.evaluate_checkpoint(_config(llada_eval_assets, bpe_gpt2_judge, prompt__tokens=str(small),
                                    prompt__length=PROMPT), str(tmp_path / "a"))
  past = tmp_path / "past.npy"
  np.save(past, np.full((NUM_SAMPLES, PROMPT), llada_eval_assets.size, np.int32))
  with pytest.raises(EvalError, match="are >= 600, outside the judge's text vocabulary"):
    cli.evaluate_checkpoint(_config(llada_eval_assets, bpe_gpt2_judge, prompt__tokens=str(past),
                                    prompt__length=PROMPT), str(tmp_path / "b"))
  dit = eval_config(eval_assets)
  dit.prompt.tokens, dit.prompt.length = llada_eval_assets.prompts, PROMPT
  with pytest.raises(EvalError, match="built for LLaDA checkpoints only; this checkpoint's "
                                      "process is 'mdlm'"):
    cli.evaluate_checkpoint(dit, str(tmp_path / "c"))
  dit = eval_config(eval_assets)
  dit.llada.temperature = 0.0
  with pytest.raises(EvalError, match="config.llada.temperature only applies to LLaDA"):
    cli.evaluate_checkpoint(dit, str(tmp_path / "d"))
  assert not any(os.path.exists(tmp_path / d) for d in "abcd")


def test_padded_embedding_takes_a_smaller_tokenizer_that_holds_the_mask(llada_eval_assets):
  """LLaDA-8B's embedding has 126464 rows for a smaller tokenizer whose reserved ids hold the
  mask (126336). A tokenizer of 600 ids fits a 640-row LLaDA with mask 598; one without the
  mask id or larger than the embedding does not; ids of the padded rows are refused."""
  process = LLaDAProcess(vocab_size=640, mask_id=llada_eval_assets.mask)
  judges.check_vocab(process, 600, "tok")
  for size in (llada_eval_assets.mask, 641):
    with pytest.raises(EvalError, match=f"has {size} tokens; it needs more than 598"):
      judges.check_vocab(process, size, "tok")
  ids = np.zeros((3, 4), np.int32)
  judges.check_text_ids(ids, process, 600)
  ids[1, 2] = 600
  with pytest.raises(EvalError, match="1 sampled ids in 1 of 3 samples are >= 600.*padded "
                                      "embedding rows 600..639"):
    judges.check_text_ids(ids, process, 600)
  # The MDLM rule is unchanged: the mask is appended, the tokenizer must be V - 1 ids.
  with pytest.raises(EvalError, match="needs len\\(tokenizer\\) \\+ 1"):
    judges.check_vocab(LLaDAProcess(vocab_size=640, mask_id=639), 600, "tok")


@pytest.mark.parametrize("case", ["mask", "past_vocab", "empty_file", "too_long"])
def test_issue25_5_prompt_files_are_checked_before_the_judge(
    case, llada_eval_assets, bpe_gpt2_judge, tmp_path, capsys):
  """Before: a prompt holding the mask id was accepted (its decoded prompt dropped it), ids
  past the vocabulary were caught after the judge had loaded, a 0-byte file ended in an
  EOFError traceback, and a prompt longer than the model said "config.length=0 must be in
  [1, -4]". The judge here does not exist: each error comes before it is loaded."""
  path = tmp_path / "prompts.npy"
  rows = np.load(llada_eval_assets.prompts)[:NUM_SAMPLES, :PROMPT].copy()
  length = PROMPT
  if case == "mask":
    rows[2, 1] = llada_eval_assets.mask
    needle = f"1 of {NUM_SAMPLES} prompts contain the mask id {llada_eval_assets.mask}"
  elif case == "past_vocab":
    rows[0, 0] = llada_eval_assets.size
    needle = f"are >= {llada_eval_assets.size}, outside the judge's text vocabulary"
  elif case == "too_long":
    rows = np.load(llada_eval_assets.prompts)[:NUM_SAMPLES]
    length = LENGTH
    needle = f"config.prompt.length={LENGTH} must be < the checkpoint's length {LENGTH}"
  if case == "empty_file":
    path.write_bytes(b"")
    needle = "is empty (0 bytes)"
  else:
    np.save(path, rows)
  out = tmp_path / "out"
  config = _config(llada_eval_assets, bpe_gpt2_judge, prompt__tokens=str(path),
                   prompt__length=length)
  config.judge = str(tmp_path / "no_judge_here")
  assert cli.run(config, str(out)) == 2
  line = _one_error_line(capsys.readouterr().err)
  assert needle in line, line
  assert case == "too_long" or f"config.prompt.tokens={str(path)!r}" in line, line
  assert not out.exists()


def test_sample_prefix_is_completed_on_a_llada_backbone(llada_eval_assets, tmp_path, capsys):
  """Issue 25, item 7: ``launch/sample.py --prefix`` refused a LLaDA backbone ("unconditional;
  its sampler takes no prompt") although launch/eval.py completes prompts with it. The
  prefix is tokenized as generate.py does and completed by the process's make_generate:
  the completions are generate's, called directly with the prompt on every row and the
  key of (seed 1, NFE 4, batch 0); decoded as LLaDA decodes. A prefix holding the mask
  token, or leaving no room, is one line before any weights are read."""
  # pylint: disable=import-outside-toplevel
  import io
  import jax.numpy as jnp
  from tokendrift_jax import checkpoints, models
  from tokendrift_jax.diffusion import make_process_for_model
  from tokendrift_jax.eval import samples_cli
  from tokendrift_jax.eval.sampling_eval import sample_key
  assets = llada_eval_assets
  tok = transformers.AutoTokenizer.from_pretrained(assets.tokenizer)
  prefix = "The history of the"
  ids = tok(prefix)["input_ids"]
  p = len(ids)
  assert 2 <= p <= LENGTH // 2, ids

  def run(*extra, out=tmp_path / "s.jsonl"):
    buf = io.StringIO()
    rc = samples_cli.run([assets.ckpt, "--tokenizer", assets.tokenizer, "--out", str(out),
                          "--no-progress", "--devices", "1", "--width", "500", *extra],
                         stdout=buf)
    return rc, buf.getvalue(), capsys.readouterr().err

  rc, text, err = run("--prefix", prefix, "--nfe", "4", "--seeds", "1", "--num-samples", "3")
  assert rc == 0, err
  with open(tmp_path / "s.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert [r["index"] for r in rows] == [0, 1, 2]
  model_cfg, params, _ = checkpoints.load_backbone_params(assets.ckpt)
  process = make_process_for_model("llada", model_cfg)
  gdef = models.graphdef(model_cfg)
  generate = process.make_generate(lambda w, x, s: models.merge(gdef, w)(x, s), batch=3,
                                   prompt_length=p, gen_length=LENGTH - p, temperature=1.0,
                                   block_length=LENGTH - p)
  res = generate(params, jnp.tile(jnp.asarray(ids, jnp.int32), (3, 1)), sample_key(1, 4, 0), 4)
  ref = np.asarray(res.tokens)
  np.testing.assert_array_equal(ref[:, :p], np.tile(ids, (3, 1)))   # the prompt is kept
  assert [r["token_ids"] for r in rows] == ref[:, p:].tolist()
  assert len({tuple(r["token_ids"]) for r in rows}) == 3
  for r, block in zip(rows, text.strip().split("\n\n")):
    assert r["prompt_ids"] == ids and r["prompt"] == prefix and r["process"] == "llada"
    assert r["text"] == tok.decode(r["token_ids"], skip_special_tokens=True,
                                   clean_up_tokenization_spaces=True)
    assert block.split("\n", 1)[1] == samples_cli.printable(prefix + r["text"])

  for extra, needle in (
      (["--prefix", "A <|mdm_mask|> day"], f"contains the mask token (id {assets.mask})"),
      (["--prefix", prefix, "--length", str(LENGTH - p + 1)],
       f"--length {LENGTH - p + 1} must be in [1, {LENGTH - p}]"),
      (["--prefix", ""], "--prefix is empty")):
    out = tmp_path / "bad.jsonl"
    rc, _, err = run(*extra, out=out)
    err = err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()
