"""save_backbone writes new-then-swaps (issue 15, item 2): what `python -m convert --force`
and the trainer's final export (``save_backbone(..., force=True)``) rely on.

An existing checkpoint survives every failure until the new one is complete; no
temporaries are left; destination problems are one-line CheckpointErrors raised before
anything is written. Faults are injected deterministically (root ignores chmod).
"""

from __future__ import annotations

import errno
import os

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tokendrift_jax import checkpoints, fs, models
from tokendrift_jax.models.dit import DiTConfig

TINY = DiTConfig(vocab_size=17, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2, length=8)


def _params(seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.standard_normal(np.shape(x)).astype(np.float32),
                      models.abstract_params(TINY))


@pytest.fixture(scope="module")
def old_ckpt(tmp_path_factory):
  """(root, the existing checkpoint ROOT/ckpt) written once; tests copy it."""
  root = tmp_path_factory.mktemp("old")
  return checkpoints.save_backbone(root / "ckpt", TINY, _params(0), meta={"process": "mdlm"})


@pytest.fixture
def existing(old_ckpt, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  dst = tmp_path / "ckpt"
  shutil.copytree(old_ckpt, dst)
  return dst


def _assert_old(dst):
  _, params, meta = checkpoints.load_backbone_params(dst)
  chex.assert_trees_all_equal(params, _params(0))
  assert meta["process"] == "mdlm"
  assert os.listdir(os.path.dirname(dst)) == [os.path.basename(dst)], "temporaries left"


def test_force_replaces_only_when_complete(existing):
  checkpoints.save_backbone(existing, TINY, _params(1), meta={"process": "duo"}, force=True)
  _, params, meta = checkpoints.load_backbone_params(existing)
  chex.assert_trees_all_equal(params, _params(1))
  assert meta["process"] == "duo"
  assert os.listdir(os.path.dirname(existing)) == ["ckpt"]


@pytest.mark.parametrize("stage", ["write", "swap"])
def test_failed_force_write_keeps_the_old_checkpoint(existing, monkeypatch, stage):
  """Before: orbax's save(force=True) removed the old checkpoint, then the write failed."""
  if stage == "write":
    real = ocp.Checkpointer.save

    def save_then_fail(self, path, *args, **kwargs):
      real(self, path, *args, **kwargs)
      raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(ocp.Checkpointer, "save", save_then_fail)
    needle = "Read-only file system"
  else:
    real_rename = os.rename

    def rename(a, b):
      if os.fspath(b) == str(existing) and ".saving-" in os.fspath(a):
        raise OSError(errno.EBUSY, "Device or resource busy")
      return real_rename(a, b)
    monkeypatch.setattr(os, "rename", rename)
    needle = "Device or resource busy"
  with pytest.raises(checkpoints.CheckpointError) as info:
    checkpoints.save_backbone(existing, TINY, _params(1), meta={"process": "duo"}, force=True)
  msg = str(info.value)
  assert len(msg.splitlines()) == 1 and needle in msg and "left as it was" in msg
  monkeypatch.undo()
  _assert_old(existing)


def test_interrupted_write_keeps_the_old_checkpoint(existing, monkeypatch):
  """A KeyboardInterrupt (or SIGTERM turned exception) mid-write: old checkpoint intact."""
  def interrupted(self, path, *args, **kwargs):
    os.makedirs(path)
    raise KeyboardInterrupt
  monkeypatch.setattr(ocp.Checkpointer, "save", interrupted)
  with pytest.raises(KeyboardInterrupt):
    checkpoints.save_backbone(existing, TINY, _params(1), meta={"process": "duo"}, force=True)
  monkeypatch.undo()
  _assert_old(existing)


@pytest.mark.parametrize("case", ["under_file", "dst_is_file", "no_space"])
def test_bad_destination_is_refused_before_writing(tmp_path, monkeypatch, case):
  (tmp_path / "afile").write_text("x")
  written = []
  monkeypatch.setattr(ocp.Checkpointer, "save", lambda *a, **k: written.append(a))
  if case == "under_file":
    dst, needle = tmp_path / "afile" / "ckpt", "is a file, not a directory"
  elif case == "dst_is_file":
    dst, needle = tmp_path / "afile", "exists and is not a directory"
  else:
    dst, needle = tmp_path / "ckpt", "not enough free space"
    monkeypatch.setattr(fs.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
  with pytest.raises(checkpoints.CheckpointError, match=needle) as info:
    checkpoints.save_backbone(dst, TINY, _params(1), meta={"process": "mdlm"}, force=True)
  assert len(str(info.value).splitlines()) == 1
  assert not written and os.listdir(tmp_path) == ["afile"]
  assert (tmp_path / "afile").read_text() == "x"


def test_missing_parents_are_created(tmp_path):
  path = checkpoints.save_backbone(tmp_path / "a" / "b" / "ckpt", TINY, _params(2),
                                   meta={"process": "mdlm"})
  assert os.listdir(tmp_path / "a" / "b") == ["ckpt"]
  chex.assert_trees_all_equal(checkpoints.load_backbone_params(path)[1], _params(2))


def test_write_then_swap_of_a_file(tmp_path):
  """The shared helper (also convert.export's) for one-file outputs."""
  dst = tmp_path / "x.bin"
  dst.write_text("old")

  def fail(tmp):
    with open(tmp, "w") as f:
      f.write("half")
    raise OSError(errno.ENOSPC, "No space left on device")
  with pytest.raises(OSError):
    fs.write_then_swap(str(dst), fail)
  assert dst.read_text() == "old" and os.listdir(tmp_path) == ["x.bin"]
  fs.write_then_swap(str(dst), lambda tmp: open(tmp, "w").write("new"))
  assert dst.read_text() == "new" and os.listdir(tmp_path) == ["x.bin"]
