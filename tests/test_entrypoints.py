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


def test_issue25_3_held_workdir_stops_every_process_of_a_multi_process_run(tmp_path):
  """Only process 0 takes (and probes) the workdir lock; before, a held workdir stopped
  process 0 alone, and the others went on to wait at their first collective. The decision
  is process 0's and broadcast: every process raises the same one line; the others never
  touch their workdir (here a path that does not exist, as on a host whose disk is its
  own). Two processes simulated with the broadcast made explicit (the jax.distributed runs
  of tests/launch take seconds)."""
  from tokendrift_jax import fs  # pylint: disable=import-outside-toplevel
  held = str(tmp_path / "held")
  elsewhere = str(tmp_path / "host1" / "held")
  sent = []

  def process_0(buf):   # broadcast_one_to_all on the source: its own buffer
    sent.append(np.array(buf))
    return buf

  def process_1(buf):   # ... and on every other process: the source's
    assert not buf.any(), "only process 0 sends"
    return sent[-1]

  for entry in (runtime.check_workdir_free,
                lambda wd, **kw: runtime.workdir_lock(wd, "training", **kw)):
    with fs.WorkdirLock(held, "evaluation"):
      errors = []
      for index, wd, broadcast in ((0, held, process_0), (1, elsewhere, process_1)):
        with pytest.raises(fs.WorkdirBusy) as e:
          entry(wd, process_index=index, process_count=2, broadcast=broadcast)
        errors.append(str(e.value))
    assert errors[0] == errors[1], errors
    assert len(errors[0].splitlines()) == 1
    assert f"{held} is in use by evaluation (pid {os.getpid()} on " in errors[0]
    assert not os.path.exists(os.path.dirname(elsewhere))

  # A free workdir: process 0 holds the lock, the others get None, nothing to report.
  lock = runtime.workdir_lock(held, "training", process_index=0, process_count=2,
                              broadcast=process_0)
  try:
    assert isinstance(lock, fs.WorkdirLock) and not sent[-1].any()
    assert runtime.workdir_lock(elsewhere, "training", process_index=1, process_count=2,
                                broadcast=process_1) is None
  finally:
    lock.release()
  # A workdir process 0 cannot create: the same DestinationError (not "busy") everywhere.
  (tmp_path / "afile").write_text("x")
  bad = str(tmp_path / "afile" / "run")
  errors = []
  for index, broadcast in ((0, process_0), (1, process_1)):
    with pytest.raises(fs.DestinationError) as e:
      runtime.workdir_lock(bad, "training", process_index=index, process_count=2,
                           broadcast=broadcast)
    assert not isinstance(e.value, fs.WorkdirBusy)
    errors.append(str(e.value))
  assert errors[0] == errors[1] and "afile" in errors[0], errors
  # One process: no collective at all.
  assert runtime.agreed_message("x", is_main=True, process_count=1,
                                broadcast=lambda b: pytest.fail("no broadcast")) == "x"


def test_config_values_are_checked_before_the_evaluation_hook_loads_its_judge(
    tiny_dir, tmp_path, capsys, tiny_run_config, monkeypatch):
  from tokendrift_jax.eval import hook  # pylint: disable=import-outside-toplevel
  built = []
  monkeypatch.setattr(hook, "make_sample_eval_hook",
                      lambda *a, **k: built.append(1) or (lambda step, params: {}))
  c = tiny_run_config(tiny_dir)
  c.sample_eval.enabled = True
  c.optim.lr = -1.0
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "optim.lr" in err and not built, err   # refused before the hook (a judge) is built
