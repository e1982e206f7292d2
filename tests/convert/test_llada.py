"""``python -m convert SRC DST --family llada``: sources, every tensor accounted for, and
one-line errors with nothing written.

The sources are tiny LLaDA releases written by tests/references/torch_llada.py
(config.json with every field explicit, safetensors shards + index). Logit parity of the
converted backbone is in tests/models/test_llada.py; here the tensors themselves are
compared with the release's (exactly: conversion only transposes and upcasts).
"""

from __future__ import annotations

import json
import os
import shutil

import chex
import numpy as np
import pytest
import torch

from convert.__main__ import main as convert_main
from tokendrift_jax import checkpoints


@pytest.fixture(scope="module")
def release(tmp_path_factory, llada_hf_config, build_torch_llada, save_llada_dir):
  """A tiny LLaDA saved as bfloat16 shards (3 + index), its state dict, and the config."""
  cfg = llada_hf_config()
  model = build_torch_llada(cfg, seed=3)
  root = tmp_path_factory.mktemp("llada_release")
  src = save_llada_dir(model, str(root / "hf"), n_shards=3, dtype=torch.bfloat16)
  state = {k: v.detach() for k, v in model.state_dict().items()}
  return src, state, cfg


def _run(capsys, *args):
  rc = convert_main([str(a) for a in args])
  err = capsys.readouterr().err.strip()
  return rc, err


def _fails(capsys, src, dst, *extra):
  """Runs the CLI expecting a user error: exit 2, one line, nothing at (or beside) DST."""
  rc, err = _run(capsys, src, dst, "--family", "llada", *extra)
  assert rc == 2, err
  assert len(err.splitlines()) == 1, f"expected a one-line error, got:\n{err}"
  assert not os.path.lexists(dst)
  assert not [n for n in os.listdir(os.path.dirname(dst)) if os.path.basename(dst) in n]
  return err


def _copy(src: str, dst: str) -> str:
  os.makedirs(dst)
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
      g.write(f.read())
  return dst


def test_bfloat16_shards_convert_exactly(release, tmp_path, capsys):
  """Every release tensor lands, upcast exactly, at its Flax path ([in, out] kernels)."""
  src, state, cfg = release
  rc, err = _run(capsys, src, tmp_path / "out", "--family", "llada")
  assert rc == 0, err
  config, params, meta = checkpoints.load_backbone_params(tmp_path / "out")
  assert meta["process"] == "llada" and meta["source_dtypes"] == ["bfloat16"]
  assert (meta["eos_token_id"], meta["pad_token_id"]) == (140, 140)
  assert (config.vocab_size, config.d_model, config.n_layers, config.n_heads,
          config.n_kv_heads, config.mlp_hidden_size, config.length, config.mask_token_id) == (
              160, 64, 3, 4, 2, 96, 32, 150)
  assert config.rope_theta == cfg["rope_theta"] and config.rms_norm_eps == cfg["rms_norm_eps"]
  f32 = lambda name: state["model.transformer." + name].to(torch.bfloat16).float().numpy()
  want = {"wte": {"embedding": f32("wte.weight")}, "ln_f": {"weight": f32("ln_f.weight")},
          "ff_out": {"kernel": f32("ff_out.weight").T}, "blocks": {}}
  for i in range(3):
    blk = want["blocks"][i] = {}
    for leaf in ("attn_norm", "ff_norm"):
      blk[leaf] = {"weight": f32(f"blocks.{i}.{leaf}.weight")}
    for leaf in ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"):
      blk[leaf] = {"kernel": f32(f"blocks.{i}.{leaf}.weight").T}
  chex.assert_trees_all_equal(params, want)


def test_missing_shard(release, tmp_path, capsys):
  src = _copy(release[0], str(tmp_path / "hf"))
  os.remove(os.path.join(src, "model-00002-of-00003.safetensors"))
  err = _fails(capsys, src, str(tmp_path / "out"))
  assert "model-00002-of-00003.safetensors: shard not found" in err


def test_index_names_a_tensor_absent_from_its_shard(release, tmp_path, capsys):
  src = _copy(release[0], str(tmp_path / "hf"))
  path = os.path.join(src, "model.safetensors.index.json")
  with open(path) as f:
    index = json.load(f)
  name = "model.transformer.blocks.1.k_proj.weight"
  elsewhere = next(s for s in sorted(set(index["weight_map"].values()))
                   if s != index["weight_map"][name])
  index["weight_map"][name] = elsewhere
  with open(path, "w") as f:
    json.dump(index, f)
  err = _fails(capsys, src, str(tmp_path / "out"))
  assert f"{elsewhere}: does not hold '{name}'" in err


def test_shard_holds_a_tensor_its_index_does_not_list(release, tmp_path, capsys):
  from safetensors.torch import load_file, save_file  # pylint: disable=import-outside-toplevel
  src = _copy(release[0], str(tmp_path / "hf"))
  shard = os.path.join(src, "model-00001-of-00003.safetensors")
  save_file(dict(load_file(shard), extra=torch.zeros(3)), shard, metadata={"format": "pt"})
  err = _fails(capsys, src, str(tmp_path / "out"))
  assert f"{shard}: unknown key 'extra'" in err


def test_vocabulary_disagrees_with_the_embedding(release, tmp_path, capsys):
  src = _copy(release[0], str(tmp_path / "hf"))
  cfg = dict(release[2], vocab_size=170, embedding_size=170)
  with open(os.path.join(src, "config.json"), "w") as f:
    json.dump(cfg, f)
  err = _fails(capsys, src, str(tmp_path / "out"))
  assert "shape mismatch for 'model.transformer.wte.weight'" in err
  assert "(160, 64) vs expected (170, 64)" in err and "vocab_size=170" in err


def test_unknown_and_missing_tensors(tmp_path, capsys, llada_hf_config, build_torch_llada,
                                     save_llada_dir):
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  model = build_torch_llada(llada_hf_config(), seed=5)
  src = save_llada_dir(model, str(tmp_path / "hf"), n_shards=1)
  state = dict(model.state_dict())
  single = os.path.join(src, "model.safetensors")
  save_file(dict(state, **{"model.transformer.blocks.0.q_proj.bias": torch.zeros(64)}),
            single)
  err = _fails(capsys, src, str(tmp_path / "out"))
  assert "unknown key 'model.transformer.blocks.0.q_proj.bias'" in err
  del state["model.transformer.blocks.2.up_proj.weight"]
  save_file(state, single)
  err = _fails(capsys, src, str(tmp_path / "out"))
  assert "missing key 'model.transformer.blocks.2.up_proj.weight'" in err


@pytest.mark.parametrize("field,value,says", [
    ("block_type", "sequential", "field 'block_type' is \"sequential\""),
    ("activation_type", "swiglu", "field 'activation_type' is \"swiglu\""),
    ("layer_norm_type", "default", "field 'layer_norm_type'"),
    ("include_bias", True, "linear biases are not implemented"),
    ("include_qkv_bias", True, "field 'include_qkv_bias'"),
    ("alibi", True, "refuses ALiBi"),
    ("rope", False, "requires rotary"),
    ("attention_layer_norm", True, "QK norm"),
    ("scale_logits", True, "field 'scale_logits'"),
    ("attention_dropout", 0.1, "field 'attention_dropout'"),
    ("embedding_size", 256, "padded embedding tables are not supported"),
    ("n_kv_heads", 3, "'n_kv_heads'=3 does not divide 'n_heads'=4"),
    ("mask_token_id", 160, "field 'mask_token_id' must be an id in [0, 160)"),
    ("use_flex_attention", True, "unknown field 'use_flex_attention'"),
    ("rope_theta", None, "field 'rope_theta' must be a number"),
])
def test_unsupported_config_values(tmp_path, capsys, llada_hf_config, field, value, says):
  """Each refused before any weight is read (the directory holds only config.json)."""
  cfg = llada_hf_config()
  cfg[field] = value
  src = tmp_path / "hf"
  src.mkdir()
  with open(src / "config.json", "w") as f:
    json.dump(cfg, f)
  err = _fails(capsys, str(src), str(tmp_path / "out"))
  assert says in err and "config.json" in err


def test_absent_fields_take_the_public_defaults(tmp_path, capsys, llada_hf_config):
  """An absent field is the public ModelConfig default (GPT-2's), and says so."""
  cfg = llada_hf_config()
  del cfg["block_type"]
  src = tmp_path / "hf"
  src.mkdir()
  (src / "config.json").write_text(json.dumps(cfg))
  err = _fails(capsys, str(src), str(tmp_path / "out"))
  assert "'block_type' is \"sequential\" (the ModelConfig default)" in err
  cfg = llada_hf_config()
  del cfg["mask_token_id"]
  (src / "config.json").write_text(json.dumps(cfg))
  assert "lacks field 'mask_token_id'" in _fails(capsys, str(src), str(tmp_path / "out"))


def test_process_and_ema_are_refused(release, tmp_path, capsys):
  err = _fails(capsys, release[0], str(tmp_path / "out"), "--process", "mdlm")
  assert "'llada' masked diffusion process" in err
  assert "--ema" in _fails(capsys, release[0], str(tmp_path / "out"), "--ema")


def test_tied_release_with_a_stored_output_copy(tmp_path, capsys, llada_hf_config,
                                                build_torch_llada, save_llada_dir):
  """weight_tying: a stored ff_out equal to wte is accepted, a different one refused (and
  a release in one model.safetensors, without an index, converts)."""
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  model = build_torch_llada(llada_hf_config(weight_tying=True), seed=6)
  src = save_llada_dir(model, str(tmp_path / "hf"), n_shards=1)
  state = dict(model.state_dict())
  wte = state["model.transformer.wte.weight"]
  single = os.path.join(src, "model.safetensors")
  save_file(dict(state, **{"model.transformer.ff_out.weight": wte.clone()}), single)
  rc, err = _run(capsys, src, tmp_path / "ok", "--family", "llada")
  assert rc == 0, err
  params = checkpoints.load_backbone_params(tmp_path / "ok")[1]
  assert "ff_out" not in params
  chex.assert_trees_all_equal(params["wte"]["embedding"], wte.numpy())
  save_file(dict(state, **{"model.transformer.ff_out.weight": wte + 1.0}), single)
  err = _fails(capsys, src, str(tmp_path / "out"))
  assert "differs from 'model.transformer.wte.weight'" in err


def _read_as_the_release_code(path: str):
  """The exported directory read the way the release's code reads it: LLaDAModelLM of
  config.json (here the reference, which refuses what the release cannot be), weights
  from model.safetensors or the shards of its index, loaded strictly."""
  from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
  from tests.references.torch_llada import LLaDA  # pylint: disable=import-outside-toplevel
  with open(os.path.join(path, "config.json")) as f:
    cfg = json.load(f)
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  else:
    files = ["model.safetensors"]
  state = {}
  for name in files:
    state.update(load_file(os.path.join(path, name)))
  model = LLaDA(cfg).eval()
  model.load_state_dict(state, strict=True)
  return model, cfg


def test_export_round_trip(tmp_path, capsys, llada_hf_config, build_torch_llada,
                           save_llada_dir):
  """convert -> export hf (sharded) -> the release code computes the same logits; the
  export imports back bit for bit."""
  # pylint: disable=import-outside-toplevel
  from convert.export import main as export_main
  from tests.references.torch_llada import reference_outputs
  cfg = llada_hf_config()
  model = build_torch_llada(cfg, seed=7)
  src = save_llada_dir(model, str(tmp_path / "hf"), n_shards=3)
  rc, err = _run(capsys, src, tmp_path / "ckpt", "--family", "llada")
  assert rc == 0, err
  rc = export_main([str(tmp_path / "ckpt"), str(tmp_path / "export"), "--format", "hf",
                    "--max-shard-size", "100KB"])
  assert rc == 0, capsys.readouterr().err
  files = sorted(os.listdir(tmp_path / "export"))
  assert "model.safetensors.index.json" in files and len(files) > 4
  exported, exported_cfg = _read_as_the_release_code(str(tmp_path / "export"))
  # Every field that changes the function (and the token ids) as in the source config.json.
  functional = set(cfg) - {"init_device", "init_fn", "init_std", "init_cutoff_factor",
                           "precision", "transformers_version", "flash_attention"}
  assert {k: exported_cfg[k] for k in functional} == {k: cfg[k] for k in functional}
  ids = np.random.default_rng(8).integers(0, 160, size=(2, 16))
  # float32 weights written and read unchanged: the same float64 computation, exactly.
  chex.assert_trees_all_equal(reference_outputs(exported, ids), reference_outputs(model, ids))
  rc, err = _run(capsys, tmp_path / "export", tmp_path / "back", "--family", "llada")
  assert rc == 0, err
  chex.assert_trees_all_equal(checkpoints.load_backbone_params(tmp_path / "back")[1],
                              checkpoints.load_backbone_params(tmp_path / "ckpt")[1])


def test_the_8b_config_json_is_sizes_8b():
  """LLaDA-8B-Base's config.json (full_hf_config's defaults, transcribed from the release
  copy in QuentinFitteRey/LLada-Reasoning@4bfec79d llada_local/) reads as sizes["8b"]."""
  # pylint: disable=import-outside-toplevel
  from convert.llada import hf_config_to_llada, hf_names
  from tests.references.torch_llada import full_hf_config
  from tokendrift_jax import models
  from tokendrift_jax.models.llada import LLaDAConfig
  config, notes = hf_config_to_llada(full_hf_config(), "config.json")
  assert config == LLaDAConfig(**models.get_family("llada").sizes["8b"])
  assert notes == {"eos_token_id": 126081, "pad_token_id": 126081}
  # The release index lists 291 tensors: wte, ln_f, ff_out and 9 per block.
  assert len(hf_names(config)) == 3 + 9 * 32


def test_issue25_7_family_from_config_json_and_shards_inside_src(release, tmp_path, capsys):
  """Before: without --family an HF LLaDA directory got the DiT's field list although its
  config.json says model_type "llada"; an index could name shards outside SRC
  (``../x.safetensors``, absolute paths) and they were read; a non-UTF-8 config.json
  named no file."""
  src, _, _ = release
  rc, err = _run(capsys, src, tmp_path / "detected")   # no --family
  assert rc == 0, err
  config, meta = checkpoints.read_backbone_config(tmp_path / "detected")
  assert meta["family"] == "llada" and meta["process"] == "llada"
  outside = tmp_path / "x.safetensors"
  for bad in ("../x.safetensors", str(outside), "sub/x.safetensors"):
    hf = _copy(src, str(tmp_path / f"hf{len(os.listdir(tmp_path))}"))
    shutil.copyfile(os.path.join(hf, "model-00001-of-00003.safetensors"), outside)
    path = os.path.join(hf, "model.safetensors.index.json")
    with open(path) as f:
      index = json.load(f)
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = bad
    with open(path, "w") as f:
      json.dump(index, f)
    err = _fails(capsys, hf, str(tmp_path / "out"))
    assert f"{path}: shard {bad!r} is not a plain file name inside {hf}" in err, err
  hf = _copy(src, str(tmp_path / "latin1"))
  with open(os.path.join(hf, "config.json"), "ab") as f:
    f.write(b"\xff\xfe")
  err = _fails(capsys, hf, str(tmp_path / "out"))
  assert f"{os.path.join(hf, 'config.json')}: not UTF-8 text" in err, err
