"""Fault tolerance of `python -m convert` (issue 15, items 2, 3, 7 and the random .bin).

Every failure is exit status 2 with one ``error: ...`` line, and leaves the disk as it was:
no DST (or the old DST intact, with --force) and no temporaries beside it. Running as root
makes chmod-based "unwritable" directories writable, so the faults are made deterministic
another way: a DST under a regular file, a DST that is a file, and monkeypatched writes,
renames, probes and free-space answers.
"""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

import convert.dit
from convert.__main__ import main as convert_main
from tokendrift_jax import checkpoints, fs


@pytest.fixture(scope="module")
def model(build_torch_dit, torch_dit_config):
  return build_torch_dit(torch_dit_config("mdlm"), seed=5)


@pytest.fixture
def hf_src(model, tmp_path, save_hf_dir):
  return save_hf_dir(model, str(tmp_path / "src" / "hf"), "mdlm")


def _run(capsys, *args):
  rc = convert_main([str(a) for a in args])
  return rc, capsys.readouterr().err.strip()


def _one_line_error(rc, err, *needles):
  assert rc == 2, err
  assert len(err.splitlines()) == 1, f"expected a one-line error, got:\n{err}"
  assert err.startswith("error: "), err
  for n in needles:
    assert n in err, f"{n!r} not in {err!r}"


@pytest.fixture(scope="module")
def earlier_conversion(tmp_path_factory):
  """A backbone checkpoint as an earlier `python -m convert` wrote it (what --force may
  replace), written once; tests copy it."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  return tiny_run.make_backbone(str(tmp_path_factory.mktemp("earlier") / "ckpt"), seed=3)


def _tree(path):
  """{relative path: bytes} of every file under ``path``."""
  out = {}
  for root, _, names in os.walk(path):
    for n in names:
      with open(os.path.join(root, n), "rb") as f:
        out[os.path.relpath(os.path.join(root, n), path)] = f.read()
  return out


def _old_dst(root, earlier):
  """An existing DST with content that must survive: an earlier conversion."""
  import shutil  # pylint: disable=import-outside-toplevel
  dst = root / "out"
  root.mkdir(parents=True, exist_ok=True)
  shutil.copytree(earlier, dst)
  return dst


def _assert_old_dst_intact(dst, earlier):
  assert _tree(dst) == _tree(earlier)


# ------------------------------------------------------------------ item 2: a failing --force


@pytest.mark.parametrize("stage", ["write", "swap"])
def test_failing_force_write_keeps_the_old_dst(hf_src, tmp_path, capsys, monkeypatch, stage,
                                               earlier_conversion):
  """--force over an existing DST whose write fails: before, orbax's save(force=True)
  deleted DST first and left it emptied. ``write``: the checkpoint write itself fails after
  writing part of it (as on a read-only parent or a full disk); ``swap``: the final rename
  of the complete new checkpoint into DST fails."""
  out = tmp_path / "dsts"
  dst = _old_dst(out, earlier_conversion)
  if stage == "write":
    real_save = ocp.Checkpointer.save

    def save_then_fail(self, path, *args, **kwargs):
      real_save(self, path, *args, **kwargs)      # most of the work done ...
      raise OSError(errno.ENOSPC, "No space left on device")   # ... then the disk is full
    monkeypatch.setattr(ocp.Checkpointer, "save", save_then_fail)
    needles = ("No space left on device", "left as it was")
  else:
    real_rename = os.rename

    def rename(a, b):
      if os.fspath(b) == str(dst) and ".saving-" in os.fspath(a):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
      return real_rename(a, b)
    monkeypatch.setattr(os, "rename", rename)
    needles = ("Invalid cross-device link", "left as it was")
  rc, err = _run(capsys, hf_src, dst, "--force")
  _one_line_error(rc, err, str(dst), *needles)
  _assert_old_dst_intact(dst, earlier_conversion)
  assert os.listdir(out) == ["out"], "no temporaries may be left beside DST"
  if stage == "write":   # and once the fault is gone, --force replaces DST
    monkeypatch.undo()
    rc, err = _run(capsys, hf_src, dst, "--force")
    assert rc == 0, err
    assert os.listdir(out) == ["out"] and _tree(dst) != _tree(earlier_conversion)
    _, params, meta = checkpoints.load_backbone_params(dst)
    assert meta["process"] == "mdlm" and params["vocab_embed"]["embedding"].shape == (37, 32)


# --------------------------------------------------------- item 3: a DST that cannot be written


@pytest.mark.parametrize("case", ["under_file", "under_file_deep", "dst_is_file",
                                  "unwritable_parent", "no_space"])
def test_unwritable_dst_is_one_line_before_reading_the_source(hf_src, tmp_path, capsys,
                                                              monkeypatch, case):
  """Before, the whole source was read and converted and then the write failed with a
  50-line traceback (NotADirectoryError / PermissionError / FileNotFoundError)."""
  out = tmp_path / "dsts"
  out.mkdir()
  (out / "afile").write_text("a regular file")
  args = []
  if case == "under_file":
    dst, needles = out / "afile" / "ckpt", (f"{out / 'afile'} is a file, not a directory",)
  elif case == "under_file_deep":
    dst, needles = out / "afile" / "a" / "ckpt", (f"{out / 'afile'} is a file",)
  elif case == "dst_is_file":
    dst, args = out / "afile", ["--force"]
    needles = ("exists and is not a directory",)
  elif case == "unwritable_parent":   # what a read-only or foreign-owned parent answers
    dst, needles = out / "ckpt", ("cannot write in", "Permission denied")

    def mkdtemp(*a, **k):
      raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(fs.tempfile, "mkdtemp", mkdtemp)
  else:
    dst, needles = out / "ckpt", ("not enough free space", "1000 B free")
    monkeypatch.setattr(fs.shutil, "disk_usage",
                        lambda p: type("U", (), {"free": 1000, "total": 1 << 30})())
  read = []
  monkeypatch.setattr(convert.dit, "load_source", lambda *a, **k: read.append(a) or 1 / 0)
  rc, err = _run(capsys, hf_src, dst, *args)
  _one_line_error(rc, err, *needles)
  assert not read, "the destination must be checked before the source is read"
  assert sorted(os.listdir(out)) == ["afile"]
  assert (out / "afile").read_text() == "a regular file"


def test_dst_equal_to_src_is_refused(hf_src, capsys):
  before = sorted(os.listdir(hf_src))
  rc, err = _run(capsys, hf_src, hf_src, "--force")
  _one_line_error(rc, err, "DST must not be SRC")
  assert sorted(os.listdir(hf_src)) == before


# ------------------------------------------------------------ item 7: bad numbers in config.json


@pytest.mark.parametrize("field,value,shown", [
    ("hidden_dim", None, "got null"),
    ("hidden_dim", "abc", 'got "abc" (str)'),
    ("hidden_dim", 32.7, "got 32.7 (float)"),
    ("n_heads", 4.0, "got 4.0 (float)"),        # integral floats are refused as well
    ("n_blocks", True, "got true (bool)"),
    ("vocab_size", 0, "got 0"),
    ("model_length", [16], "got [16] (list)"),
    ("dropout", "abc", 'must be a number, got "abc"'),
    ("dropout", None, "must be a number, got null"),
    ("time_conditioning", "false", 'must be true or false, got "false"'),
    ("n_heads", 5, "not divisible by n_heads=5"),
])
def test_bad_hf_config_values_name_field_and_file(hf_src, tmp_path, capsys, field, value,
                                                  shown):
  """Before: null -> TypeError traceback; "abc" -> int()'s message naming neither field
  nor file; 32.7 -> silently converted as 32; non-divisible -> no file in the message."""
  cfg_path = os.path.join(hf_src, "config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg[field] = value
  with open(cfg_path, "w") as f:
    json.dump(cfg, f)
  dst = tmp_path / "out"
  rc, err = _run(capsys, hf_src, dst)
  _one_line_error(rc, err, cfg_path, shown)
  if "divisible" not in shown:
    assert f"'{field}'" in err
  else:
    assert "hidden_size=32" in err
  assert not os.path.exists(dst)


# ---------------------------------------------------------------- smaller: a random .bin file


def test_random_bin_is_not_a_checkpoint_without_weights_only_advice(model, tmp_path, capsys):
  src = tmp_path / "hf"
  src.mkdir()
  (src / "config.json").write_text(json.dumps({
      "vocab_size": 37, "model_length": 16, "hidden_dim": 32, "cond_dim": 16, "n_blocks": 3,
      "n_heads": 4, "model_type": "mdlm"}))
  (src / "pytorch_model.bin").write_bytes(np.random.default_rng(0).bytes(4096))
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst)
  _one_line_error(rc, err, str(src / "pytorch_model.bin"), "not a PyTorch checkpoint / state dict")
  assert "weights_only" not in err and "trusted source" not in err
  assert not os.path.exists(dst)


# ------------------------------------------- issue 25, items 1-2: --force never destroys data


def _export(capsys, *args):
  from convert.export import main as export_main  # pylint: disable=import-outside-toplevel
  rc = export_main([str(a) for a in args])
  return rc, capsys.readouterr().err.strip()


def test_issue25_1_dst_containing_or_inside_src_is_refused(hf_src, tmp_path, capsys,
                                                           earlier_conversion):
  """Before: `convert.export SRC DST --force` with DST a directory that holds SRC deleted
  SRC with it (only a DST inside SRC was refused)."""
  import shutil  # pylint: disable=import-outside-toplevel
  runs = tmp_path / "runs"
  src = runs / "ckpt"
  shutil.copytree(earlier_conversion, src)
  (runs / "notes.txt").write_text("precious")
  before = _tree(runs)
  for dst, needle in ((runs, "contains SRC"), (src / "x", "lies inside SRC"),
                      (src, "must not be SRC")):
    rc, err = _export(capsys, src, dst, "--format", "hf", "--force")
    _one_line_error(rc, err, str(dst), needle)
    assert _tree(runs) == before and sorted(os.listdir(runs)) == ["ckpt", "notes.txt"]
  # the importer alike (a DST that contains the HF source directory)
  parent = os.path.dirname(hf_src)
  listing = sorted(os.listdir(hf_src))
  rc, err = _run(capsys, hf_src, parent, "--force")
  _one_line_error(rc, err, "contains SRC")
  assert sorted(os.listdir(hf_src)) == listing


@pytest.mark.parametrize("tool", ["convert", "export"])
def test_issue25_2_force_replaces_only_an_earlier_output(hf_src, tmp_path, capsys, tool,
                                                         earlier_conversion):
  """Before: --force replaced any directory: `important/notes.txt` was wiped. Now a DST that
  is not recognisably this project's output (nor empty) is refused in one line and left
  as it was; an earlier output (or an empty directory) is still replaced."""
  import shutil  # pylint: disable=import-outside-toplevel
  dst = tmp_path / "dst"
  (dst / "important").mkdir(parents=True)
  (dst / "important" / "notes.txt").write_text("precious")
  if tool == "convert":
    def write(d):
      return _run(capsys, hf_src, d, "--force")
  else:
    def write(d):
      return _export(capsys, earlier_conversion, d, "--format", "hf", "--force")
  rc, err = write(dst)
  _one_line_error(rc, err, str(dst), "replaces only an earlier output of tokendrift_jax",
                  "holds important")
  assert _tree(dst) == {os.path.join("important", "notes.txt"): b"precious"}
  assert sorted(os.listdir(tmp_path)) == ["dst", "src"], "no temporaries"
  # an empty directory, then the earlier output itself, are replaced
  empty = tmp_path / "empty"
  empty.mkdir()
  rc, err = write(empty)
  assert rc == 0, err
  kind = fs.recognise(empty)
  assert kind == ("a tokendrift_jax backbone checkpoint" if tool == "convert"
                  else "a tokendrift_jax export"), kind
  rc, err = write(empty)   # the same output written again over the earlier one
  assert rc == 0, err
  assert fs.recognise(empty) == kind
  if tool == "export":   # the export's files get the user's umask, like config.json
    modes = {f: os.stat(empty / f).st_mode & 0o777 for f in os.listdir(empty)}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] == 0o666 & ~fs.umask()
  shutil.rmtree(empty)
