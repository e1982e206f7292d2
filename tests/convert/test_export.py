"""``python -m convert.export``: project backbones -> the public MDLM / DUO formats.

Each export is read back by code that follows the public repositories, never by the
project's importer: the HF directory as the HF modeling code reads it (config.json fields
-> the DIT, ``backbone.`` weights from model.safetensors or its shard index, strict), the
Lightning .ckpt as the MDLM / DUO ``main.py`` restores it (``load_from_checkpoint``:
strict ``state_dict``, ``on_load_checkpoint`` reading ``ema`` and the ``loops`` counters,
then the EMA copied into ``backbone.parameters()`` in order for evaluation), the bare file
with ``DIT.load_state_dict``. The reference is tests/references/torch_dit.py (random
non-zero weights), run in float64; tolerance: relative max logit error <= 1e-4, as the
importer's parity tests. Importing an export gives the same parameters bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references.torch_dit import DIT, reference_logits
from tokendrift_jax import checkpoints, models
from tokendrift_jax.models import dit as dit_model
from tokendrift_jax.models.dit import DiTConfig

REL_TOL = 1e-4
# Both processes through the two release formats; sharding and the bare file once each.
CASES = [("mdlm", "hf"), ("duo", "hf"), ("mdlm", "lightning"), ("duo", "lightning"),
         ("duo", "hf_sharded"), ("mdlm", "safetensors")]


def _np_params(cfg, seed):
  """Random non-zero float32 params of ``cfg`` (no jit: the shapes come from eval_shape)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
                      models.abstract_params(cfg))


def _export(*args):
  from convert.export import main  # pylint: disable=import-outside-toplevel
  return main([str(a) for a in args])


@pytest.fixture(scope="module")
def released(tmp_path_factory, torch_dits, save_hf_dir, convert_dit, dit_inputs):
  """Per process: the tiny torch DIT, its converted project checkpoint, and the project's
  logits on fixed inputs (computed once)."""
  root = tmp_path_factory.mktemp("export_src")
  out = {}
  for arch, model in torch_dits.items():
    ckpt = convert_dit(save_hf_dir(model, str(root / f"hf_{arch}"), arch), root / arch)
    ids, sigma = dit_inputs(model.cfg["vocab_size"], seed=7)
    f = checkpoints.load_backbone(ckpt)
    logits = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
    out[arch] = types.SimpleNamespace(model=model, ckpt=ckpt, ids=ids, sigma=sigma,
                                      logits=logits, config=f.config, params=f.params)
  return out


# ------------------------------------------------------------ readers of the public code


def _read_hf_like_the_hub_code(path):
  """MDLM/DUO HF: the config class's fields build the DIT; from_pretrained loads the
  ``backbone.`` state from model.safetensors or the shards of its index, strictly."""
  from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
  with open(os.path.join(path, "config.json")) as f:
    cfg = json.load(f)
  duo = cfg["model_type"] == "duo"
  assert not cfg.get("causal", False)
  dit = DIT(dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_dim"],
                 cond_dim=cfg["cond_dim"], n_blocks=cfg["n_blocks"], n_heads=cfg["n_heads"],
                 length=cfg["model_length"], dropout=cfg["dropout"],
                 # DUOConfig has no switch: the DUO backbone is always time-conditioned.
                 time_conditioning=True if duo else cfg["time_conditioning"]))
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  else:
    files = ["model.safetensors"]
  state = {}
  for name in files:
    state.update(load_file(os.path.join(path, name)))
  assert all(k.startswith("backbone.") for k in state)
  dit.load_state_dict({k[len("backbone."):]: v for k, v in state.items()}, strict=True)
  return dit.eval(), state


def _read_lightning_like_main_py(path, vocab_size):
  """``Diffusion.load_from_checkpoint``: the DIT from hyper_parameters['config'] (vocab from
  the tokenizer), strict state_dict, on_load_checkpoint (ema, loops), then ``ema.copy_to``
  over backbone.parameters() as the repositories do before evaluating."""
  import torch  # pylint: disable=import-outside-toplevel
  ckpt = torch.load(path, map_location="cpu", weights_only=False)
  hc = ckpt["hyper_parameters"]["config"]
  if "algo" in hc:   # DUO: algo.backbone, algo.causal_attention, algo.time_conditioning
    assert hc.algo.backbone == "dit" and hc.algo.causal_attention is False
    assert hc.algo.parameterization == "mean" and hc.algo.time_conditioning
    tc = hc.algo.time_conditioning
  else:              # MDLM: config.backbone, config.time_conditioning
    assert hc.backbone == "dit" and hc.parameterization == "subs" and hc.T == 0
    tc = hc.time_conditioning
  dit = DIT(dict(vocab_size=vocab_size, hidden_size=hc.model.hidden_size,
                 cond_dim=hc.model.cond_dim, n_blocks=hc.model.n_blocks,
                 n_heads=hc.model.n_heads, length=hc.model.length, dropout=hc.model.dropout,
                 time_conditioning=bool(tc)))
  sd = ckpt["state_dict"]
  assert all(k.startswith("backbone.") for k in sd)
  dit.load_state_dict({k[len("backbone."):]: v for k, v in sd.items()}, strict=True)
  ema = ckpt["ema"]
  _ = ema["decay"], ema["num_updates"]
  loops = ckpt["loops"]["fit_loop"]
  _ = (loops["epoch_progress"]["current"]["completed"],
       loops["epoch_loop.batch_progress"]["current"]["completed"])
  params = list(dit.parameters())
  assert len(ema["shadow_params"]) == len(params)
  with torch.no_grad():
    for s, p in zip(ema["shadow_params"], params):
      assert s.shape == p.shape
      p.copy_(s)
  return dit.eval(), {"backbone." + k: v for k, v in dit.state_dict().items()}


def _read_bare(path, cfg):
  from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
  dit = DIT(cfg)
  state = load_file(path)
  dit.load_state_dict(state, strict=True)
  return dit.eval(), {"backbone." + k: v for k, v in state.items()}


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("arch,fmt", CASES)
def test_export_loads_in_the_public_code_and_imports_back_exactly(
    released, tmp_path, arch, fmt, rel_err, torch_dit_config):
  import torch  # pylint: disable=import-outside-toplevel
  r = released[arch]
  base = fmt.split("_")[0]
  dst = tmp_path / {"hf": "hf", "lightning": "last.ckpt", "safetensors": "dit.safetensors"}[base]
  extra = ["--max-shard-size", "20KB"] if fmt == "hf_sharded" else []
  assert _export(r.ckpt, dst, "--format", base, *extra) == 0

  if base == "hf":
    ref, state = _read_hf_like_the_hub_code(dst)
    index = dst / "model.safetensors.index.json"
    assert index.exists() == (fmt == "hf_sharded")
    if fmt == "hf_sharded":
      assert len(set(json.loads(index.read_text())["weight_map"].values())) > 1
  elif base == "lightning":
    ref, state = _read_lightning_like_main_py(dst, r.model.cfg["vocab_size"])
  else:
    ref, state = _read_bare(dst, torch_dit_config(arch))
  # Named, shaped and valued exactly as the released state dict (float32); safetensors
  # files store names sorted, so the order is not compared.
  orig = r.model.state_dict()
  assert sorted(state) == sorted("backbone." + k for k in orig)
  for k, v in orig.items():
    got = state["backbone." + k]
    assert got.dtype == torch.float32 and torch.equal(got, v), k
  err = rel_err(r.logits, reference_logits(ref, r.ids, r.sigma))
  print(f"{arch}/{fmt}: relative max logit error {err:.2e}")
  assert err <= REL_TOL, f"{arch}/{fmt}: relative max logit error {err:.2e}"

  # import(export(x)) == x, bit for bit (the importer of `python -m convert`, in memory).
  from convert.dit import load_source  # pylint: disable=import-outside-toplevel
  over = dict(process=arch, config_override=r.config.to_dict()) if base == "safetensors" else {}
  params1, cfg1, meta1 = load_source(str(dst), **over)
  assert cfg1 == r.config and meta1["process"] == arch
  # Same tree structure, shapes and dtypes (strict), float32, and equal bit for bit.
  chex.assert_type(jax.tree.leaves(params1), np.float32)
  chex.assert_trees_all_equal(params1, jax.tree.map(np.asarray, r.params), strict=True)
  if base == "lightning":   # the EMA slot holds the same weights
    chex.assert_trees_all_equal(load_source(str(dst), ema=True)[0], params1, strict=True)


def _train_state_checkpoint(workdir, cfg, params, ema_params, step, process="mdlm"):
  import optax  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.train import checkpointing, step as step_lib  # pylint: disable=C0415
  state = step_lib.init_state(params, optax.adamw(1e-3), seed=0, ema=ema_params is not None)
  if ema_params is not None:
    state = state.replace(ema_params=jax.tree.map(jnp.asarray, ema_params))
  ckpt = checkpointing.Checkpointer(str(workdir))
  ckpt.save(step, state, {}, {"model": cfg.to_dict(), "family": "dit", "process": process,
                              "objective": "drift"})
  ckpt.close()
  return workdir


def test_training_checkpoint_raw_or_ema_weights(tmp_path, tiny_model_config):
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  from convert.dit import to_torch_state  # pylint: disable=import-outside-toplevel
  cfg = tiny_model_config("mdlm")
  raw, ema = _np_params(cfg, 1), _np_params(cfg, 2)
  run = _train_state_checkpoint(tmp_path / "run", cfg, raw, ema, step=7)
  for weights, want, src in (("raw", raw, run), ("ema", ema, run / "checkpoints"),
                             ("ema", ema, run / "checkpoints" / "7")):
    dst = tmp_path / f"{weights}_{src.name}.safetensors"
    assert _export(src, dst, "--format", "safetensors", "--weights", weights) == 0
    got, expected = load_file(str(dst)), to_torch_state(want, cfg)
    assert sorted(got) == sorted(expected)
    chex.assert_trees_all_equal(got, expected)
  # The Lightning export of a training checkpoint records its step.
  import torch  # pylint: disable=import-outside-toplevel
  assert _export(run, tmp_path / "run.ckpt", "--format", "lightning", "--weights", "ema") == 0
  ckpt = torch.load(tmp_path / "run.ckpt", weights_only=False)
  assert ckpt["global_step"] == 7 and ckpt["ema"]["num_updates"] == 7


def _one_line_error(capsys, rc, needle):
  err = capsys.readouterr().err.strip()
  assert rc == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("error: "), err
  assert needle in err, err
  return err


@dataclasses.dataclass(frozen=True)
class _ToyConfig(DiTConfig):
  """A DiT under another family name, registered without an exporter."""


@pytest.fixture
def toy_family():
  fam = models.base.Family(name="toy_noexport", config_cls=_ToyConfig,
                           module_cls=dit_model.FAMILY.module_cls, flops=dit_model.FAMILY.flops)
  models.register(fam)
  yield fam
  models._REGISTRY.pop(fam.name, None)  # pylint: disable=protected-access


def _listing(path):
  return sorted(os.listdir(path))


@pytest.mark.parametrize("case", ["unknown_format", "existing_dst", "not_a_backbone",
                                  "no_exporter", "mlp_ratio", "duo_unconditioned",
                                  "suffix", "ema_missing"])
def test_bad_inputs_are_one_line_errors_and_write_nothing(
    case, released, tmp_path, capsys, tiny_model_config, toy_family):
  out = tmp_path / "out"
  out.mkdir()
  src, dst, args = released["mdlm"].ckpt, out / "x", ["--format", "hf"]
  if case == "unknown_format":
    args, needle = ["--format", "onnx"], "unknown format 'onnx'"
  elif case == "existing_dst":
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    needle = "already exists; pass --force"
  elif case == "not_a_backbone":
    src = tmp_path / "empty"
    src.mkdir()
    needle = "not a backbone checkpoint"
  elif case == "no_exporter":
    cfg = _ToyConfig(**tiny_model_config("mdlm").to_dict())
    src = checkpoints.save_backbone(tmp_path / "toy", cfg, _np_params(cfg, 0),
                                    meta={"process": "mdlm"})
    needle = "no exporter for model family 'toy_noexport'"
  elif case in ("mlp_ratio", "duo_unconditioned"):
    over = {"mlp_ratio": 2} if case == "mlp_ratio" else {"time_conditioning": False}
    cfg = tiny_model_config("duo", **over)
    src = checkpoints.save_backbone(tmp_path / case, cfg, _np_params(cfg, 0),
                                    meta={"process": "duo"})
    needle = "fixed MLP ratio of 4" if case == "mlp_ratio" else "always time-conditioned"
  elif case == "suffix":
    args, needle = ["--format", "lightning"], "must end with .ckpt"
  else:
    cfg = tiny_model_config("mdlm")
    src = _train_state_checkpoint(tmp_path / "noema", cfg, _np_params(cfg, 0), None, step=3)
    args, needle = ["--format", "safetensors", "--weights", "ema"], "cannot read the ema weights"
    dst = out / "x.safetensors"
  before = _listing(out)
  _one_line_error(capsys, _export(src, dst, *args), needle)
  assert _listing(out) == before
  if case == "existing_dst":
    assert (dst / "keep.txt").read_text() == "old"


def test_force_keeps_the_old_dst_until_the_new_one_is_complete(released, tmp_path, capsys,
                                                               monkeypatch):
  import convert.dit  # pylint: disable=import-outside-toplevel
  dst = tmp_path / "hf"
  # An earlier export (issue 25: --force replaces only this project's outputs).
  assert _export(released["mdlm"].ckpt, dst, "--format", "hf", "--dtype", "float16") == 0
  old = {f: (dst / f).read_bytes() for f in _listing(dst)}
  real = convert.dit.export

  def half_then_fail(params, config, meta, path, **kw):
    real(params, config, meta, path, **kw)     # a complete write ...
    raise OSError("disk full")                 # ... that fails before it is handed over
  monkeypatch.setattr(convert.dit, "export", half_then_fail)
  _one_line_error(capsys, _export(released["mdlm"].ckpt, dst, "--format", "hf", "--force"),
                  "disk full")
  assert _listing(tmp_path) == ["hf"] and {f: (dst / f).read_bytes() for f in _listing(dst)} == old
  monkeypatch.setattr(convert.dit, "export", real)
  assert _export(released["mdlm"].ckpt, dst, "--format", "hf", "--force") == 0
  assert _listing(tmp_path) == ["hf"] and _listing(dst) == ["config.json", "model.safetensors"]
  assert (dst / "model.safetensors").read_bytes() != old["model.safetensors"]   # float32 now


def test_dtype_option_casts_weights_not_the_rotary_buffer(released, tmp_path, convert_dit):
  from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  dst = tmp_path / "hf"
  assert _export(released["duo"].ckpt, dst, "--format", "hf", "--dtype", "bfloat16") == 0
  state = load_file(str(dst / "model.safetensors"))
  assert state["backbone.rotary_emb.inv_freq"].dtype == torch.float32
  assert all(v.dtype == torch.bfloat16 for k, v in state.items() if "rotary" not in k)
  assert json.loads((dst / "config.json").read_text())["torch_dtype"] == "bfloat16"
  _, params, _ = checkpoints.load_backbone_params(convert_dit(dst, tmp_path / "back"))
  emb = state["backbone.vocab_embed.embedding"].float().numpy()
  chex.assert_trees_all_equal(params["vocab_embed"]["embedding"], emb)


def test_exporter_registry(monkeypatch):
  import convert  # pylint: disable=import-outside-toplevel
  assert "hf" in convert.get_exporter("dit").EXPORT_FORMATS
  with pytest.raises(convert.ConversionError, match="no exporter for model family 'toy'"):
    convert.get_exporter("toy")
  # A family whose converter imports but does not export.
  toy = types.ModuleType("toy_converter")
  toy.SOURCES, toy.load_source = "toy", lambda *a, **k: None
  monkeypatch.setitem(convert._REGISTERED, "toy", toy)  # pylint: disable=protected-access
  with pytest.raises(convert.ConversionError, match="no exporter for model family 'toy'"):
    convert.get_exporter("toy")
  assert convert.exporter_families() == ["dit", "dream", "llada"]
