"""Bad inputs to `python -m convert`: one-line error, non-zero exit, nothing written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from convert.__main__ import main as convert_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Lines C++ libraries write to the process's stderr themselves, in absl's format: with the
# dev requirements' CUDA compile plugin installed (for compiling for GPUs without one),
# loading JAX's plugins logs "Could not find cuda drivers on your machine" on a machine
# without a GPU, before any of the CLI's own output. They are not the CLI's messages.
_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                         r"[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\])")


def _own_lines(stderr: str) -> list[str]:
  return [l for l in stderr.strip().splitlines() if not _NATIVE_LOG.match(l)]


@pytest.fixture(scope="module")
def model(build_torch_dit, torch_dit_config):
  return build_torch_dit(torch_dit_config("mdlm"), seed=4)


def _run(capsys, *args):
  rc = convert_main([str(a) for a in args])
  err = capsys.readouterr().err.strip()
  return rc, err


def _assert_error(rc, err, dst, *needles):
  assert rc == 2
  assert len(err.splitlines()) == 1, f"expected a one-line error, got:\n{err}"
  assert err.startswith("error: ")
  for n in needles:
    assert n in err, f"{n!r} not in {err!r}"
  assert not os.path.exists(dst), "nothing may be written on error"


def _edit_hf(src_dir, fn):
  path = os.path.join(src_dir, "model.safetensors")
  state = load_file(path)
  fn(state)
  save_file(state, path)


def test_wrong_shape(model, tmp_path, capsys, save_hf_dir):
  src = save_hf_dir(model, str(tmp_path / "hf"), "mdlm")
  _edit_hf(src, lambda s: s.__setitem__("backbone.blocks.1.attn_out.weight",
                                        torch.randn(32, 31)))
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst)
  _assert_error(rc, err, dst, "blocks.1.attn_out.weight", "(32, 31)", "(32, 32)")


def test_missing_key(model, tmp_path, capsys, save_hf_dir):
  src = save_hf_dir(model, str(tmp_path / "hf"), "mdlm")
  _edit_hf(src, lambda s: s.pop("backbone.output_layer.linear.bias"))
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst)
  _assert_error(rc, err, dst, "missing key", "output_layer.linear.bias")


def test_extra_key(model, tmp_path, capsys, save_hf_dir):
  src = save_hf_dir(model, str(tmp_path / "hf"), "mdlm")
  _edit_hf(src, lambda s: s.__setitem__("backbone.blocks.0.attn_extra.weight", torch.ones(2)))
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst)
  _assert_error(rc, err, dst, "unknown key", "blocks.0.attn_extra.weight")


def test_wrong_rotary_buffer(model, tmp_path, capsys, save_hf_dir):
  src = save_hf_dir(model, str(tmp_path / "hf"), "mdlm")
  _edit_hf(src, lambda s: s.__setitem__("backbone.rotary_emb.inv_freq",
                                        s["backbone.rotary_emb.inv_freq"] * 2))
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst)
  _assert_error(rc, err, dst, "rotary_emb.inv_freq")


@pytest.mark.parametrize("name,content", [("junk.bin", b"this is not a checkpoint"),
                                          ("junk.safetensors", b"\x00\x01\x02garbage"),
                                          ("junk.ckpt", b"not a pickle"),
                                          ("notes.txt", b"hello")])
def test_not_a_checkpoint(tmp_path, capsys, name, content):
  src = tmp_path / name
  src.write_bytes(content)
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst, "--process", "mdlm", "--config", '{"vocab_size": 37}')
  _assert_error(rc, err, dst, name)


def test_directory_without_config(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  dst = tmp_path / "out"
  rc, err = _run(capsys, tmp_path / "empty", dst)
  _assert_error(rc, err, dst, "config.json")


def test_causal_hf_config_is_refused(model, tmp_path, capsys, save_hf_dir):
  src = save_hf_dir(model, str(tmp_path / "hf"), "mdlm")
  cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
  (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "causal": True}))
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst)
  _assert_error(rc, err, dst, "causal=true")


def test_bare_state_dict_needs_config(model, tmp_path, capsys, save_bare):
  src = save_bare(model, str(tmp_path / "sd.safetensors"))
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst)
  _assert_error(rc, err, dst, "--config")


def test_ema_without_shadow(model, tmp_path, capsys, save_lightning):
  src = save_lightning(model, str(tmp_path / "last.ckpt"), "mdlm")
  dst = tmp_path / "out"
  rc, err = _run(capsys, src, dst, "--ema")
  _assert_error(rc, err, dst, "shadow_params")


def test_existing_dst_needs_force(model, tmp_path, capsys, save_hf_dir):
  src = save_hf_dir(model, str(tmp_path / "hf"), "mdlm")
  dst = tmp_path / "out"
  dst.mkdir()
  (dst / "keep.txt").write_text("precious")
  rc, err = _run(capsys, src, dst)
  assert rc == 2 and "--force" in err and len(err.splitlines()) == 1
  assert (dst / "keep.txt").read_text() == "precious"
  # issue 25: --force replaces only an earlier conversion (or an empty directory)
  rc, err = _run(capsys, src, dst, "--force")
  assert rc == 2 and "replaces only an earlier output" in err and len(err.splitlines()) == 1
  assert os.listdir(dst) == ["keep.txt"] and (dst / "keep.txt").read_text() == "precious"
  (dst / "keep.txt").unlink()
  rc, _ = _run(capsys, src, dst, "--force")
  assert rc == 0 and (dst / "params").is_dir()
  rc, _ = _run(capsys, src, dst, "--force")   # over the earlier conversion
  assert rc == 0 and (dst / "params").is_dir()


def test_module_entry_point(model, tmp_path, save_hf_dir):
  """`python -m convert` as a user runs it: help text, success and a one-line failure."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "convert", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True).stdout
  assert "pickle" in out and "runs code" in out
  src = save_hf_dir(model, str(tmp_path / "hf"), "mdlm")
  ok = subprocess.run([sys.executable, "-m", "convert", src, str(tmp_path / "out")], cwd=ROOT,
                      env=env, capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr
  assert "process=mdlm" in ok.stdout
  with open(os.path.join(src, "config.json")) as f:
    cfg = json.load(f)
  cfg["hidden_dim"] = 48
  with open(os.path.join(src, "config.json"), "w") as f:
    json.dump(cfg, f)
  bad = subprocess.run([sys.executable, "-m", "convert", src, str(tmp_path / "out2")],
                       cwd=ROOT, env=env, capture_output=True, text=True)
  assert bad.returncode == 2
  assert len(_own_lines(bad.stderr)) == 1, bad.stderr
  assert not (tmp_path / "out2").exists()
