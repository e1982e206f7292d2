"""``launch/sample.py``: samples printed one block per sample, written to samples.jsonl,
deterministic for a seed, and two checkpoints side by side aligned by seed.

Tiny backbones (random non-zero weights) and the tiny tokenizer: 300 ids, so an MDLM
backbone has 301 (the mask last) and a DUO one 301 (the [PAD] its process adds).
"""

from __future__ import annotations

import io
import json
import os
import re
import runpy
import shutil
import sys

import jax
import numpy as np
import pytest

from tokendrift_jax import checkpoints, models
from tokendrift_jax.eval import samples_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENS = 300


def _np_params(cfg, seed):
  """Random non-zero params without a jitted init: 0.2·N(0, 1), norm weights 1 + 0.2·N."""
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    base = 1.0 if getattr(path[-1], "key", None) == "weight" else 0.0
    return (base + 0.2 * rng.standard_normal(s.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(leaf, models.abstract_params(cfg))


@pytest.fixture(scope="module")
def assets(tmp_path_factory, build_tiny_tokenizer, eval_dit_config):
  from tokendrift_jax.models.dit import DiTConfig  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("sample")
  tok = build_tiny_tokenizer(root / "tok", vocab_size=TOKENS)
  cfg = eval_dit_config(TOKENS + 1)
  duo_cfg = DiTConfig(**dict(cfg.to_dict(), time_conditioning=True))
  mdlm = checkpoints.save_backbone(root / "mdlm", cfg, _np_params(cfg, 1),
                                   meta={"process": "mdlm"})
  duo = checkpoints.save_backbone(root / "duo", duo_cfg, _np_params(duo_cfg, 2),
                                  meta={"process": "duo"})
  return {"root": root, "tok": tok, "mdlm": mdlm, "duo": duo}


def _run(assets, out, *extra):
  buf = io.StringIO()
  rc = samples_cli.run([*map(str, extra), "--tokenizer", assets["tok"], "--out", str(out),
                        "--no-progress", "--width", "90", "--devices", "1"],
                       stdout=buf)
  return rc, buf.getvalue()


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


HEADER = re.compile(r"^=== sample (\d+)/(\d+) \| seed=(\d+) \| NFE=(\d+)( \| .*)? ===$", re.M)


@pytest.fixture(scope="module")
def mdlm_run(assets):
  """One run of the tiny MDLM: NFE 4, seeds 0 and 1, 3 samples each (printed, rows)."""
  out = assets["root"] / "mdlm.jsonl"
  rc, text = _run(assets, out, assets["mdlm"], "--nfe", 4, "--seeds", 0, 1, "--num-samples", 3)
  assert rc == 0
  return text, _rows(out)


def test_samples_blocks_and_jsonl(assets, mdlm_run):
  from tokendrift_jax.data.tokenizer import load_tokenizer  # pylint: disable=C0415
  text, rows = mdlm_run
  assert len(rows) == 6 and [(r["seed"], r["index"]) for r in rows] == [
      (s, i) for s in (0, 1) for i in range(3)]
  heads = HEADER.findall(text)
  assert [(int(i), int(n), int(s), int(f)) for i, n, s, f, _ in heads] == [
      (i + 1, 3, s, 4) for s in (0, 1) for i in range(3)]
  tok = load_tokenizer(assets["tok"])
  for r in rows:
    assert r["nfe"] == 4 and r["process"] == "mdlm" and len(r["token_ids"]) == 16
    assert r["text"] == tok.decode(r["token_ids"])
    assert max(r["token_ids"]) < TOKENS          # greedy noise removal: no mask left
  assert len({tuple(r["token_ids"]) for r in rows}) == 6
  # One block per sample: its header, then its text wrapped (control characters shown
  # as the replacement character).
  blocks = text.strip().split("\n\n")
  assert len(blocks) == 6
  for block, r in zip(blocks, rows):
    assert "".join(block.split("\n")[1:]).replace(" ", "") == samples_cli.printable(
        r["text"]).replace(" ", "")


def test_launch_script_is_deterministic_for_a_seed(assets, mdlm_run, tmp_path, capsys,
                                                   monkeypatch):
  """launch/sample.py as a user runs it (in-process), with its progress bar: seed 1 alone
  gives the samples seed 1 gave beside seed 0."""
  out = tmp_path / "s.jsonl"
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "argv", ["launch/sample.py", str(assets["mdlm"]), "--tokenizer",
                                    str(assets["tok"]), "--nfe", "4", "--seeds", "1",
                                    "--num-samples", "3", "--out", str(out),
                                    "--devices", "1"])
  with pytest.raises(SystemExit) as stop:
    runpy.run_path(os.path.join(ROOT, "launch", "sample.py"), run_name="__main__")
  captured = capsys.readouterr()
  assert stop.value.code == 0, captured.err
  assert len(HEADER.findall(captured.out)) == 3
  assert "sampling mdlm NFE=4" in captured.err and "wrote 3 samples" in captured.err
  assert [r["token_ids"] for r in _rows(out)] == [r["token_ids"] for r in mdlm_run[1][3:]]


def test_compare_side_by_side_aligned_by_seed(assets, mdlm_run, tmp_path):
  rc, text = _run(assets, tmp_path / "ab.jsonl", assets["mdlm"], "--compare", assets["duo"],
                  "--nfe", 4, "--seeds", 1, "--num-samples", 2, "--batch", 3)
  assert rc == 0
  rows = _rows(tmp_path / "ab.jsonl")
  a = [r for r in rows if r["label"] == "mdlm"]
  b = [r for r in rows if r["label"] == "duo"]
  assert [(r["seed"], r["index"]) for r in a] == [(r["seed"], r["index"]) for r in b] == [
      (1, 0), (1, 1)]
  assert {r["process"] for r in b} == {"duo"} and {r["batch"] for r in rows} == {3}
  # Same keys as alone: A's samples are the ones seed 1 gave in the single run (batch 3).
  assert [r["token_ids"] for r in a] == [r["token_ids"] for r in mdlm_run[1][3:5]]
  blocks = text.strip().split("\n\n")
  assert len(blocks) == 2
  for block, ra, rb in zip(blocks, a, b):
    lines = block.split("\n")
    assert HEADER.match(lines[0]) and "seed=1" in lines[0] and "NFE=4" in lines[0]
    assert lines[1].startswith("A: mdlm") and "| B: duo" in lines[1]
    left = "".join(ln.split(" | ")[0] for ln in lines[2:]).replace(" ", "")
    assert left == samples_cli.printable(ra["text"]).replace(" ", "")
    assert all(len(ln.split(" | ")[0]) <= 43 for ln in lines[2:])   # (90 - 3) // 2 columns


@pytest.mark.parametrize("case", ["prefix", "existing_out", "no_tokenizer", "vocab",
                                  "not_a_backbone"])
def test_bad_inputs_one_line_error_nothing_written(assets, tmp_path, capsys, case,
                                                   build_tiny_tokenizer):
  out = tmp_path / "samples.jsonl"
  ckpt, tok, extra = assets["mdlm"], assets["tok"], []
  if case == "prefix":
    extra, needle = ["--prefix", "Once upon"], "unconditional; its sampler takes no prompt"
  elif case == "existing_out":
    out.write_text("old\n")
    needle = "already exists; pass --force"
  elif case == "no_tokenizer":
    tok, needle = str(tmp_path / "nope"), "no such directory"
  elif case == "vocab":
    tok, needle = build_tiny_tokenizer(tmp_path / "tok290", vocab_size=290), "vocabulary mismatch"
  else:
    ckpt, needle = tmp_path, "is not a tokendrift_jax backbone checkpoint"
  before = sorted(os.listdir(tmp_path))
  rc = samples_cli.run([str(ckpt), "--tokenizer", str(tok), "--out", str(out), "--no-progress",
                        *extra])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
  assert needle in err, err
  assert sorted(os.listdir(tmp_path)) == before
  if case == "existing_out":
    assert out.read_text() == "old\n"


def test_issue25_out_is_checked_before_sampling_and_batch_capped(assets, mdlm_run, tmp_path,
                                                                 capsys, monkeypatch):
  """Item 6: `--out DIR --force` with a directory failed only after all sampling, and a
  --batch far above --num-samples ran out of memory instead of capping at the sample
  count. Item 2: --force replaces only earlier samples (or an empty file)."""
  drawn = []
  real_draw = samples_cli.draw
  monkeypatch.setattr(samples_cli, "draw", lambda *a, **k: drawn.append(k["batch"])
                      or real_draw(*a, **k))
  folder = tmp_path / "adir"
  folder.mkdir()
  notes = tmp_path / "notes.jsonl"
  notes.write_text('{"mine": 1}\n')
  for out, needle in ((folder, "exists and is a directory"),
                      (notes, "--force replaces only an earlier output of tokendrift_jax")):
    rc, _ = _run(assets, out, assets["mdlm"], "--force")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
  assert not drawn and os.listdir(folder) == [] and notes.read_text() == '{"mine": 1}\n'
  # Over a copy of earlier samples, with a batch far above the 3 samples: capped at 3, the
  # samples are mdlm_run's (drawn with the default batch 3).
  out = tmp_path / "again.jsonl"
  shutil.copyfile(assets["root"] / "mdlm.jsonl", out)
  rc, text = _run(assets, out, assets["mdlm"], "--nfe", 4, "--seeds", 0, 1, "--num-samples", 3,
                  "--batch", 1 << 20, "--force")
  assert rc == 0 and drawn == [3]
  assert (text, _rows(out)) == mdlm_run
