"""convert.gpt2: HF PyTorch GPT-2 dir -> Flax dir that loads without the PyTorch path."""

from __future__ import annotations

import json
import os

import chex
import jax
import numpy as np
import pytest
import torch
import transformers

from convert import gpt2 as convert_gpt2_module
from convert.gpt2 import convert_gpt2

# float32 Flax forward vs float64 PyTorch forward of a 2-layer, width-32 GPT-2 with
# O(1) logits: ~1e-6 absolute; 1e-4 relative to the logit scale leaves margin while
# any mis-mapped (e.g. untransposed) weight changes logits by O(1).
REL_TOL = 1e-4
# build_tiny_gpt2 (tests/conftest.py): vocabulary and EOS of its tiny GPT-2 tokenizer.
VOCAB = 320
EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def src_dirs(tmp_path_factory, build_tiny_gpt2):
  root = tmp_path_factory.mktemp("gpt2_src")
  build_tiny_gpt2(root / "safetensors", seed=0, safe_serialization=True)
  build_tiny_gpt2(root / "bin", seed=1, safe_serialization=False)
  return {"safetensors": root / "safetensors", "bin": root / "bin"}


def _flax_logits(dst, ids):
  model, params = transformers.FlaxGPT2LMHeadModel.from_pretrained(str(dst), _do_init=False)
  with jax.default_matmul_precision("highest"):
    out = model.module.apply({"params": params}, ids, np.ones_like(ids),
                             np.broadcast_to(np.arange(ids.shape[1]), ids.shape),
                             deterministic=True, return_dict=False)[0]
  return np.asarray(out, np.float64)


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_converted_weights_and_tokenizer(src_dirs, tmp_path, kind):
  src = src_dirs[kind]
  dst = convert_gpt2(src, tmp_path / "judge")
  names = set(os.listdir(dst))
  assert {"flax_model.msgpack", "config.json", "vocab.json", "merges.txt",
          "tokenizer.json", "tokenizer_config.json"} <= names
  # No PyTorch weights beside the msgpack: loading cannot go through from_pt.
  assert not names & {"model.safetensors", "pytorch_model.bin"}
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".judge")]

  ids = np.random.default_rng(3).integers(0, VOCAB, size=(2, 32)).astype(np.int32)
  pt = transformers.GPT2LMHeadModel.from_pretrained(str(src)).double().eval()
  with torch.no_grad():
    want = pt(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
  got = _flax_logits(dst, ids)
  assert np.abs(want).max() > 1.0  # random, non-trivial weights
  chex.assert_trees_all_close(got, want, rtol=0, atol=REL_TOL * np.abs(want).max())

  tok_src = transformers.AutoTokenizer.from_pretrained(str(src))
  tok_dst = transformers.AutoTokenizer.from_pretrained(str(dst))
  text = "the cat" + EOS + " sat on the mat ÿ€"
  assert tok_dst(text)["input_ids"] == tok_src(text)["input_ids"]
  assert tok_dst.eos_token == EOS


def test_refuses_existing_destination_without_force(src_dirs, tmp_path):
  dst = tmp_path / "judge"
  dst.mkdir()
  (dst / "keep.txt").write_text("old")
  with pytest.raises(FileExistsError, match="force"):
    convert_gpt2(src_dirs["safetensors"], dst)
  assert os.listdir(dst) == ["keep.txt"]
  convert_gpt2(src_dirs["safetensors"], dst, force=True)
  assert "flax_model.msgpack" in os.listdir(dst) and "keep.txt" not in os.listdir(dst)
  assert sorted(os.listdir(tmp_path)) == ["judge"]


def test_failure_leaves_nothing_half_written(src_dirs, tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise RuntimeError("simulated failure after the weights were written")

  # Fails after flax_model.msgpack is in the temporary directory.
  monkeypatch.setattr(convert_gpt2_module, "_verify", fail)
  with pytest.raises(RuntimeError, match="simulated"):
    convert_gpt2(src_dirs["safetensors"], tmp_path / "fresh")
  assert os.listdir(tmp_path) == []

  old = tmp_path / "existing"
  old.mkdir()
  (old / "keep.txt").write_text("old")
  with pytest.raises(RuntimeError, match="simulated"):
    convert_gpt2(src_dirs["safetensors"], old, force=True)
  assert sorted(os.listdir(tmp_path)) == ["existing"]
  assert os.listdir(old) == ["keep.txt"]


def test_verification_catches_wrong_weights(src_dirs, tmp_path):
  dst = convert_gpt2(src_dirs["safetensors"], tmp_path / "judge", verify=False)
  # The seed-1 model has the same shapes and different weights.
  with pytest.raises(ValueError, match="disagrees"):
    convert_gpt2_module._verify(src_dirs["bin"], dst, vocab_size=VOCAB, n_positions=32)


def test_bad_sources(tmp_path, src_dirs):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    convert_gpt2(tmp_path / "missing", tmp_path / "out")
  other = tmp_path / "other"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
  with pytest.raises(ValueError, match="model_type='llama'"):
    convert_gpt2(other, tmp_path / "out")
  no_weights = tmp_path / "no_weights"
  no_weights.mkdir()
  (no_weights / "config.json").write_text((src_dirs["bin"] / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="no PyTorch weights"):
    convert_gpt2(no_weights, tmp_path / "out")
  with pytest.raises(ValueError, match="same directory"):
    convert_gpt2(src_dirs["bin"], src_dirs["bin"], force=True)
  assert not (tmp_path / "out").exists()


def test_cli(src_dirs, tmp_path, capsys):
  dst = tmp_path / "judge"
  assert convert_gpt2_module.main([str(src_dirs["bin"]), str(dst), "--no-verify"]) == 0
  assert (dst / "flax_model.msgpack").is_file()
  assert convert_gpt2_module.main([str(src_dirs["bin"]), str(dst)]) == 2
  assert "--force" in capsys.readouterr().err
