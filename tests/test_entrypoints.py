"""entrypoints.train_main (launch/train.py): clear one-line errors before anything is written."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from tokendrift_jax import entrypoints
from tokendrift_jax import runtime
from tokendrift_jax.train import trainer


def _launch_error(cfg, workdir, capsys):
  rc = entrypoints.train_main(cfg, str(workdir))
  err = capsys.readouterr().err.strip()
  assert rc == 2, err
  assert err.startswith("error: ") and len(err.splitlines()) == 1, err
  assert not os.path.exists(workdir), "nothing may be written on error"
  return err


def test_missing_init_checkpoint(tiny_dir, tmp_path, capsys, tiny_run_config):
  c = tiny_run_config(tiny_dir)
  c.init_checkpoint = str(tmp_path / "nope")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "init_checkpoint" in err and "python -m convert" in err


def test_hub_init_checkpoint_name_says_how_to_convert(tiny_dir, tmp_path, capsys):
  from configs import mdlm_drift
  c = mdlm_drift.get_config()
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "kuleshov-group/mdlm-owt" in err and "python -m convert" in err


def test_unreachable_hub_dataset(tiny_dir, tmp_path, capsys, tiny_run_config):
  c = tiny_run_config(tiny_dir)
  c.data.kind = "text"
  c.data.source = "Skylion007/openwebtext"
  c.data.cache_dir = str(tmp_path / "cache")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "data.source" in err


def test_empty_dataset(tiny_dir, tmp_path, capsys, tiny_run_config):
  c = tiny_run_config(tiny_dir)
  np.save(tmp_path / "empty.npy", np.zeros((0, 16), np.int32))
  c.data.train_tokens = str(tmp_path / "empty.npy")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "empty.npy" in err and "is empty (shape (0, 16))" in err


def test_token_ids_outside_the_model_are_refused_before_training(tiny_dir, tmp_path, capsys,
                                                                 tiny_run_config,
                                                                 build_tiny_tokenizer):
  """Whole splits are checked up front, identically on every process (see trainer.make_data)."""
  c = tiny_run_config(tiny_dir)
  rows = np.load(c.data.train_tokens)
  rows[5, 3] = 32                      # the tiny MDLM's mask id (vocab 33)
  np.save(tmp_path / "masked.npy", rows)
  c.data.train_tokens = str(tmp_path / "masked.npy")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "masked.npy" in err and "mask id 32" in err
  # Text data tokenized with a tokenizer bigger than the backbone's vocabulary.
  tok = build_tiny_tokenizer(tmp_path / "tok", vocab_size=300)
  with open(tmp_path / "corpus.jsonl", "w", encoding="utf-8") as f:
    for i in range(40):
      f.write(json.dumps({"text": f"document {i} says the quick brown fox jumps " * 3}) + "\n")
  c = tiny_run_config(tiny_dir)
  c.data.kind, c.data.source, c.data.tokenizer = "text", str(tmp_path / "corpus.jsonl"), tok
  c.data.cache_dir, c.data.valid_docs, c.data.progress = str(tmp_path / "cache"), 0, False
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "'train'" in err and "[0, 31]" in err and "data.tokenizer=" in err


def test_repeated_sequence_override_is_refused(tiny_dir, tmp_path, capsys, monkeypatch,
                                               tiny_run_config):
  """ml_collections concatenates repeated tuple overrides; the launchers refuse them."""
  c = tiny_run_config(tiny_dir)
  c.sample_eval.nfe = (4, 8, 4, 8, 16)   # what --config.sample_eval.nfe=(4,8) ...=(4,8,16) gives
  argv = ["train.py", "--config=x.py", "--config.sample_eval.nfe=(4,8)",
          "--config.sample_eval.nfe=(4,8,16)", "--config.optim.lr=1", "--config.optim.lr=2"]
  monkeypatch.setattr(sys, "argv", argv)
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "--config.sample_eval.nfe is given 2 times" in err and "(4, 8, 4, 8, 16)" in err
  # A repeated scalar keeps the last value (absl), which is fine.
  assert runtime.repeated_sequence_overrides(argv[:2] + argv[4:], c) is None


@pytest.mark.parametrize("global_batch,micro_batch,num_devices,needle", [
    (12, 8, 1, "not divisible by config.batch.micro_batch"),
    (16, 4, 8, "micro_batch=4 is not divisible by the 8 devices"),
])
def test_batch_not_divisible(tiny_dir, tmp_path, capsys, global_batch, micro_batch,
                             num_devices, needle, tiny_run_config):
  c = tiny_run_config(tiny_dir, global_batch=global_batch, micro_batch=micro_batch,
                     num_devices=num_devices, mesh_shape=(-1, 1))
  assert needle in _launch_error(c, tmp_path / "wd", capsys)


def test_checkpoint_architecture_mismatch(tiny_dir, tmp_path, capsys, tiny_run_config):
  c = tiny_run_config(tiny_dir)
  c.model.hidden_size = 48
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "model.hidden_size: checkpoint 32 vs config 48" in err


def test_checkpoint_family_mismatch(tiny_dir, tmp_path, capsys, tiny_run_config):
  c = tiny_run_config(tiny_dir)
  c.diffusion.process = "duo"
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "mdlm backbone" in err


def test_resume_refuses_a_different_run(tiny_dir, tmp_path, capsys, tiny_run_config):
  wd = str(tmp_path / "wd")
  trainer.train(tiny_run_config(tiny_dir, objective="continuation", steps=0), wd)
  c = tiny_run_config(tiny_dir, objective="drift", steps=2)
  rc = entrypoints.train_main(c, wd)
  err = capsys.readouterr().err
  assert rc == 2 and "different run" in err and "objective" in err
