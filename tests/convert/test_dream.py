"""``python -m convert SRC DST`` on Dream releases (family read from config.json): every
tensor accounted for, one-line errors with nothing written, and the export read back by
the reference strictly.

The sources are tiny Dream releases written by tests/references/torch_dream.py. Logit
parity of the converted backbone is in tests/models/test_dream.py; here the tensors
themselves are compared with the release's (exactly: conversion only transposes and
upcasts).
"""

from __future__ import annotations

import json
import os

import chex
import numpy as np
import pytest
import torch

from convert.__main__ import main as convert_main
from tokendrift_jax import checkpoints


@pytest.fixture(scope="module")
def release(tmp_path_factory, dream_hf_config, build_torch_dream, save_dream_dir):
  """A tiny Dream saved as bfloat16 shards (3 + index), its state dict, and the config."""
  cfg = dream_hf_config()
  model = build_torch_dream(cfg, seed=3)
  root = tmp_path_factory.mktemp("dream_release")
  src = save_dream_dir(model, str(root / "hf"), n_shards=3, dtype=torch.bfloat16)
  return src, {k: v.detach() for k, v in model.state_dict().items()}, cfg


def _run(capsys, *args):
  rc = convert_main([str(a) for a in args])
  return rc, capsys.readouterr().err.strip()


def _fails(capsys, src, dst, *extra):
  """Runs the CLI expecting a user error: exit 2, one line, nothing at DST."""
  rc, err = _run(capsys, src, dst, *extra)
  assert rc == 2, err
  assert len(err.splitlines()) == 1, f"expected a one-line error, got:\n{err}"
  assert not os.path.lexists(dst)
  return err


def test_bfloat16_shards_convert_exactly_with_the_family_detected(release, tmp_path, capsys):
  """No --family: config.json's model_type "Dream" picks the dream converter; every
  release tensor lands, upcast exactly, at its Flax path ([in, out] kernels)."""
  src, state, cfg = release
  rc, err = _run(capsys, src, tmp_path / "out")
  assert rc == 0, err
  config, params, meta = checkpoints.load_backbone_params(tmp_path / "out")
  assert meta["family"] == "dream" and meta["process"] == "dream"
  assert meta["source_dtypes"] == ["bfloat16"]
  assert (meta["pad_token_id"], meta["bos_token_id"], meta["eos_token_id"]) == (160, 160, 161)
  assert (config.vocab_size, config.hidden_size, config.num_hidden_layers,
          config.num_attention_heads, config.num_key_value_heads, config.intermediate_size,
          config.length, config.mask_token_id, config.tie_word_embeddings) == (
              176, 64, 3, 4, 2, 80, 32, 170, False)
  assert config.rope_theta == cfg["rope_theta"] and config.rms_norm_eps == cfg["rms_norm_eps"]
  f32 = lambda name: state[name].to(torch.bfloat16).float().numpy()
  want = {"embed_tokens": {"embedding": f32("model.embed_tokens.weight")},
          "norm": {"weight": f32("model.norm.weight")},
          "lm_head": {"kernel": f32("lm_head.weight").T}, "layers": {}}
  for i in range(3):
    pre = f"model.layers.{i}."
    blk = want["layers"][i] = {}
    for leaf in ("input_layernorm", "post_attention_layernorm"):
      blk[leaf] = {"weight": f32(pre + leaf + ".weight")}
    for leaf in ("q_proj", "k_proj", "v_proj"):
      blk[leaf] = {"kernel": f32(f"{pre}self_attn.{leaf}.weight").T,
                   "bias": f32(f"{pre}self_attn.{leaf}.bias")}
    blk["o_proj"] = {"kernel": f32(pre + "self_attn.o_proj.weight").T}
    for leaf in ("gate_proj", "up_proj", "down_proj"):
      blk[leaf] = {"kernel": f32(f"{pre}mlp.{leaf}.weight").T}
  chex.assert_trees_all_equal(params, want)


def test_unknown_missing_and_misshapen_tensors(release, tmp_path, capsys):
  """A release whose index lists a tensor the architecture lacks, lacks one it needs, or
  holds one of the wrong shape is refused before anything is read or written."""
  from safetensors.torch import load_file, save_file  # pylint: disable=import-outside-toplevel
  src, _, _ = release
  index = os.path.join(src, "model.safetensors.index.json")
  with open(index) as f:
    wmap = json.load(f)["weight_map"]
  tensors = {}
  for fname in sorted(set(wmap.values())):
    tensors.update(load_file(os.path.join(src, fname)))
  cases = {
      "extra": (dict(tensors, **{"model.layers.0.self_attn.o_proj.bias":
                                 torch.zeros(64, dtype=torch.bfloat16)}),
                "unknown key 'model.layers.0.self_attn.o_proj.bias'"),
      "missing": ({k: v for k, v in tensors.items() if k != "model.layers.2.self_attn.k_proj.bias"},
                  "missing key 'model.layers.2.self_attn.k_proj.bias'"),
      "shape": (dict(tensors, **{"model.layers.1.self_attn.k_proj.weight":
                                 tensors["model.layers.1.self_attn.k_proj.weight"].T.contiguous()}),
                "shape mismatch for 'model.layers.1.self_attn.k_proj.weight': checkpoint "
                "(64, 32) vs expected (32, 64)"),
  }
  with open(os.path.join(src, "config.json")) as f:
    cfg = json.load(f)
  for name, (state, says) in cases.items():
    hf = tmp_path / name
    os.makedirs(hf)
    with open(hf / "config.json", "w") as f:
      json.dump(cfg, f)
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    err = _fails(capsys, hf, tmp_path / f"out_{name}")
    assert says in err, err


@pytest.mark.parametrize("field,value,says", [
    ("hidden_act", "gelu", "field 'hidden_act' is \"gelu\"; DreamMLP gates"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "field 'rope_scaling'"),
    ("use_sliding_window", True, "sliding-window attention is not implemented"),
    ("attention_dropout", 0.1, "attention dropout is not implemented"),
    ("mask_token_id", 176, "field 'mask_token_id' must be an id in [0, 176)"),
])
def test_unsupported_config_values(release, tmp_path, capsys, field, value, says):
  src, _, cfg = release
  hf = tmp_path / "hf"
  os.makedirs(hf)
  for name in os.listdir(src):
    if name != "config.json":
      os.symlink(os.path.join(src, name), hf / name)
  with open(hf / "config.json", "w") as f:
    json.dump(dict(cfg, **{field: value}), f)
  err = _fails(capsys, hf, tmp_path / "out")
  assert f"{hf / 'config.json'}: " in err and says in err, err


def test_export_round_trip_loads_strictly(tmp_path, capsys, dream_hf_config, build_torch_dream,
                                          save_dream_dir):
  """convert -> export hf (sharded) -> the reference loads it strictly (no missing or
  unexpected tensor; tied: no lm_head.weight, as save_pretrained) and computes the same
  logits; the (untied) export converts back bit for bit."""
  # pylint: disable=import-outside-toplevel
  from convert.export import main as export_main
  from tests.references.torch_dream import load_hf_dir, reference_outputs
  for tied in (False, True):
    cfg = dream_hf_config(tie_word_embeddings=tied)
    model = build_torch_dream(cfg, seed=7)
    root = tmp_path / str(tied)
    src = save_dream_dir(model, str(root / "hf"), n_shards=3)
    rc, err = _run(capsys, src, root / "ckpt")
    assert rc == 0, err
    rc = export_main([str(root / "ckpt"), str(root / "export"), "--format", "hf",
                      "--max-shard-size", "100KB"])
    assert rc == 0, capsys.readouterr().err
    assert "model.safetensors.index.json" in os.listdir(root / "export")
    exported, exported_cfg = load_hf_dir(str(root / "export"))
    skip = {"torch_dtype", "transformers_version"}
    assert {k: v for k, v in exported_cfg.items() if k not in skip} == {
        k: v for k, v in cfg.items() if k not in skip}
    assert ("lm_head.weight" in exported.state_dict()) is not tied
    ids = np.random.default_rng(8).integers(0, 176, size=(2, 12))
    # float32 weights written and read unchanged: the same float64 computation, exactly.
    chex.assert_trees_all_equal(reference_outputs(exported, ids), reference_outputs(model, ids))
    if tied:   # the import side of a tied release is covered above; one re-import suffices
      continue
    rc, err = _run(capsys, root / "export", root / "back")
    assert rc == 0, err
    chex.assert_trees_all_equal(checkpoints.load_backbone_params(root / "back")[1],
                                checkpoints.load_backbone_params(root / "ckpt")[1])


def test_process_and_ema_are_refused(release, tmp_path, capsys):
  src, _, _ = release
  err = _fails(capsys, src, tmp_path / "a", "--process", "llada")
  assert "--process llada: Dream weights belong to the 'dream'" in err
  err = _fails(capsys, src, tmp_path / "b", "--ema")
  assert "--ema applies to Lightning .ckpt files only" in err


def test_the_7b_config_json_is_sizes_7b():
  """Dream-v0-Base-7B's config.json (full_hf_config's defaults, docs/MODEL.md) reads as
  sizes["7b"], with its special ids in the notes; 3 + 12 per block tensor names."""
  # pylint: disable=import-outside-toplevel
  from convert.dream import hf_config_to_dream, hf_names
  from tests.references.torch_dream import full_hf_config
  from tokendrift_jax import models
  from tokendrift_jax.models.dream import DreamConfig
  config, notes = hf_config_to_dream(full_hf_config(), "config.json")
  assert config == DreamConfig(**models.get_family("dream").sizes["7b"]) == DreamConfig()
  assert notes == {"pad_token_id": 151643, "bos_token_id": 151643, "eos_token_id": 151643}
  assert len(hf_names(config)) == 3 + 12 * 28
