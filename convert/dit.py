"""The ``dit`` family's converter: PyTorch MDLM/DUO ``DIT`` state dicts -> parameter trees.

Sources (see ``python -m convert --help``):
  * a Hugging Face model directory (``config.json`` with the MDLM / DUO HF fields, and
    ``model.safetensors`` / ``pytorch_model.bin``, possibly sharded with an index), weights
    under ``backbone.``;
  * a bare ``.safetensors`` / ``.bin`` / ``.pt`` state dict (architecture from ``--config``);
  * a Lightning ``.ckpt`` written by the MDLM or DUO repositories (architecture from
    ``hyper_parameters['config']``; with ``ema``, ``ckpt['ema']['shadow_params']``, a list
    in ``backbone.parameters()`` order).

Every tensor is accounted for: each expected name must be present exactly once with the
expected shape, and a name that maps to nothing is an error. The only tensor that is
checked rather than converted is the rotary buffer ``rotary_emb.inv_freq``.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import numpy as np

from tokendrift_jax.models.dit import ROPE_BASE, DiTConfig


from convert import ConversionError
from convert.common import (cast, config_float, config_int, params_to_state,
                            save_safetensors, set_path, show, write_hf_dir)

# Shown by `python -m convert --help` for --family dit.
SOURCES = """\
  (MDLM / DUO)
  * a Hugging Face model directory: config.json with the MDLM / DUO HF fields
    (vocab_size, model_length, hidden_dim, cond_dim, n_blocks, n_heads, dropout; MDLM's
    time_conditioning; DUO's model_type "duo", always time-conditioned) and
    model.safetensors or pytorch_model.bin (sharded with an index is fine), weights
    under 'backbone.' (e.g. a local copy of kuleshov-group/mdlm-owt or s-sahoo/duo);
  * a bare .safetensors / .bin / .pt state dict of the DIT (names with or without
    'backbone.'); its architecture comes from --config;
  * a Lightning .ckpt written by the MDLM or DUO training code; the architecture comes
    from hyper_parameters['config'] (the vocabulary size from the embedding shape).
    WARNING: a Lightning .ckpt is a pickle; loading it runs code stored in the file.
    Only convert checkpoints you trust."""


# ------------------------------------------------------------------- name mapping


def torch_parameter_names(config: DiTConfig) -> list[str]:
  """Parameter names of the PyTorch ``DIT`` in ``backbone.parameters()`` order.

  That order is module registration order in ``DIT.__init__`` (vocab_embed, sigma_map,
  rotary_emb (buffer only), blocks, output_layer); the EMA shadow list follows it.
  """
  names = ["vocab_embed.embedding",
           "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias",
           "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias"]
  for i in range(config.n_blocks):
    p = f"blocks.{i}."
    names += [p + "norm1.weight", p + "attn_qkv.weight", p + "attn_out.weight",
              p + "norm2.weight", p + "mlp.0.weight", p + "mlp.0.bias", p + "mlp.2.weight",
              p + "mlp.2.bias", p + "adaLN_modulation.weight", p + "adaLN_modulation.bias"]
  names += ["output_layer.norm_final.weight", "output_layer.linear.weight",
            "output_layer.linear.bias", "output_layer.adaLN_modulation.weight",
            "output_layer.adaLN_modulation.bias"]
  return names


ROTARY_BUFFER = "rotary_emb.inv_freq"


def _torch_shape(name: str, c: DiTConfig) -> tuple[int, ...]:
  d, h, v = c.hidden_size, c.mlp_ratio * c.hidden_size, c.vocab_size
  table = {
      "vocab_embed.embedding": (v, d),
      "sigma_map.mlp.0.weight": (c.cond_dim, 256), "sigma_map.mlp.0.bias": (c.cond_dim,),
      "sigma_map.mlp.2.weight": (c.cond_dim, c.cond_dim), "sigma_map.mlp.2.bias": (c.cond_dim,),
      "norm1.weight": (d,), "attn_qkv.weight": (3 * d, d), "attn_out.weight": (d, d),
      "norm2.weight": (d,), "mlp.0.weight": (h, d), "mlp.0.bias": (h,),
      "mlp.2.weight": (d, h), "mlp.2.bias": (d,),
      "adaLN_modulation.weight": (6 * d, c.cond_dim), "adaLN_modulation.bias": (6 * d,),
      "output_layer.norm_final.weight": (d,), "output_layer.linear.weight": (v, d),
      "output_layer.linear.bias": (v,),
      "output_layer.adaLN_modulation.weight": (2 * d, c.cond_dim),
      "output_layer.adaLN_modulation.bias": (2 * d,),
  }
  if name in table:
    return table[name]
  if name.startswith("blocks."):
    return table[name.split(".", 2)[2]]
  raise KeyError(name)


def _flax_path(name: str) -> tuple[tuple[Any, ...], bool]:
  """Torch name -> (path in the NNX pure-dict tree, transpose the [out, in] weight?)."""
  if name == "vocab_embed.embedding":
    return ("vocab_embed", "embedding"), False
  *mods, leaf = name.split(".")
  path: list[Any] = []
  it = iter(mods)
  for p in it:
    if p == "blocks":
      path += ["blocks", int(next(it))]
    elif p == "mlp":
      # nn.Sequential(Linear, activation, Linear): torch 0 and 2 -> list entries 0 and 1.
      path += ["mlp", {"0": 0, "2": 1}[next(it)]]
    else:
      path.append(p)
  if leaf == "weight" and not mods[-1].startswith("norm"):
    return tuple(path) + ("kernel",), True
  return tuple(path) + (leaf,), False


def to_flax_params(state: dict[str, np.ndarray], config: DiTConfig, where: str) -> dict:
  """Converts a backbone state dict (names without ``backbone.``) to a pure param dict.

  Raises:
    ConversionError: for a missing name, an unknown name, a shape mismatch, or a rotary
      buffer that disagrees with the architecture.
  """
  expected = torch_parameter_names(config)
  unknown = sorted(set(state) - set(expected) - {ROTARY_BUFFER})
  if unknown:
    raise ConversionError(f"{where}: unknown key '{unknown[0]}'"
                          + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                          + f"; not a parameter of the DIT backbone {config}")
  missing = [n for n in expected if n not in state]
  if missing:
    raise ConversionError(f"{where}: missing key '{missing[0]}'"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  params: dict = {}
  for name in expected:
    arr = np.asarray(state[name])
    want = _torch_shape(name, config)
    if tuple(arr.shape) != want:
      raise ConversionError(f"{where}: shape mismatch for '{name}': checkpoint "
                            f"{tuple(arr.shape)} vs expected {want} for {config}")
    path, transpose = _flax_path(name)
    arr = arr.astype(np.float32)
    set_path(params, path, np.ascontiguousarray(arr.T) if transpose else arr)
  if ROTARY_BUFFER in state:
    inv = np.asarray(state[ROTARY_BUFFER], np.float64)
    hd = config.head_dim
    want = 1.0 / (ROPE_BASE ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    if inv.shape != want.shape or not np.allclose(inv, want, rtol=1e-5, atol=0):
      raise ConversionError(f"{where}: '{ROTARY_BUFFER}' {inv.shape} does not match rotary "
                            f"base {ROPE_BASE:g} over head dim {hd}")
  return params


# ------------------------------------------------------------------- reading sources


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError("reading .bin/.pt/.ckpt files needs PyTorch: "
                          "pip install -r requirements-convert.txt") from e
  return torch


def _tensor_to_numpy(t) -> np.ndarray:
  torch = _torch()
  if not isinstance(t, torch.Tensor):
    raise ConversionError(f"expected a tensor, found {type(t).__name__}")
  t = t.detach().cpu()
  if t.dtype in (torch.bfloat16, torch.float16):
    t = t.float()
  return t.numpy()


def read_state_file(path: str) -> dict[str, np.ndarray]:
  """A .safetensors / .bin / .pt file -> {name: array} (float arrays as stored)."""
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  if path.endswith(".safetensors"):
    try:
      from safetensors import safe_open  # pylint: disable=import-outside-toplevel
      out = {}
      with safe_open(path, framework="np") as f:
        for k in f.keys():
          out[k] = f.get_tensor(k)
      return out
    except Exception as e:  # safetensors raises its own error types for bad headers
      if "bfloat16" in str(e).lower() or "bf16" in str(e).lower():
        torch = _torch()
        from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
        return {k: _tensor_to_numpy(v) for k, v in load_file(path).items()}
      raise ConversionError(f"{path}: not a readable safetensors file ({e})") from e
  torch = _torch()
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ConversionError(f"{path}: not a PyTorch checkpoint / state dict: "
                          f"{torch_load_reason(e)}") from e
  if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
    raise ConversionError(f"{path}: not a state dict (a mapping of names to tensors)")
  if "state_dict" in obj and isinstance(obj["state_dict"], dict):
    raise ConversionError(f"{path}: looks like a Lightning checkpoint; give it a .ckpt name")
  return {k: _tensor_to_numpy(v) for k, v in obj.items()}


def torch_load_reason(e: BaseException) -> str:
  """The reason of a failed ``torch.load(weights_only=True)`` in one line, without torch's
  advice to retry with ``weights_only=False`` (which would run the file's pickled code and
  cannot help a file that is not a checkpoint)."""
  text = str(e)
  if "weights_only" in text or "Weights only load failed" in text:
    cause = e.__cause__ or e.__context__
    reason = str(cause).strip() if cause is not None else ""
    if not reason:
      keep = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(
          w in ln for w in ("weights_only", "Weights only", "file an issue",
                            "documentation of torch.load", "trusted source"))]
      reason = keep[0] if keep else ""
    reason = reason.replace("WeightsUnpickler error:", "").strip()
    if "GLOBAL" in reason:
      return reason + " (a state dict holds only tensors; this file would run other code)"
    return f"unreadable pickle data ({reason})" if reason else "unreadable pickle data"
  first = text.strip().splitlines()[0] if text.strip() else ""
  return f"{type(e).__name__}: {first}" if first else type(e).__name__


def strip_backbone_prefix(state: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
  """Accepts names with the ``backbone.`` prefix (HF / Lightning) or without (bare DIT)."""
  keys = list(state)
  if not keys:
    raise ConversionError(f"{where}: the checkpoint holds no tensors")
  prefixed = [k.startswith("backbone.") for k in keys]
  if all(prefixed):
    return {k[len("backbone."):]: v for k, v in state.items()}
  if any(prefixed):
    other = next(k for k, p in zip(keys, prefixed) if not p)
    raise ConversionError(f"{where}: unknown key '{other}' (mixed 'backbone.' and other "
                          f"names)")
  return state


def hf_config_to_dit(cfg: dict, where: str) -> tuple[DiTConfig, str | None]:
  """MDLM / DUO HF config.json -> (DiTConfig, process guessed from model_type).

  Both releases share the field names; DUO's has no ``time_conditioning`` (it is always
  time-conditioned) and adds ``causal`` (refused when true) and ``var_min`` (unused).
  """
  need = ["vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads"]
  missing = [k for k in need if k not in cfg]
  if missing:
    raise ConversionError(f"{where}: config.json lacks field '{missing[0]}' (MDLM HF fields: "
                          f"{need + ['dropout', 'time_conditioning']})")
  if cfg.get("causal"):
    raise ConversionError(f"{where}: config.json has causal=true, an autoregressive DIT; only "
                          f"the non-causal MDLM / DUO diffusion backbones convert")
  arch = str(cfg.get("model_type", "")).lower()
  ints = {k: config_int(cfg[k], k, where) for k in need}
  dropout = config_float(cfg.get("dropout", 0.1), "dropout", where)
  tc = cfg.get("time_conditioning", arch == "duo")
  if not isinstance(tc, bool):
    raise ConversionError(f"{where}: field 'time_conditioning' must be true or false, got "
                          f"{json.dumps(tc)}")
  dit = _dit_config(where, vocab_size=ints["vocab_size"], hidden_size=ints["hidden_dim"],
                    cond_dim=ints["cond_dim"], n_blocks=ints["n_blocks"],
                    n_heads=ints["n_heads"], length=ints["model_length"], dropout=dropout,
                    time_conditioning=tc)
  return dit, (arch if arch in ("mdlm", "duo") else None)


def _dit_config(where: str, **fields) -> DiTConfig:
  """DiTConfig(**fields); its ValueError (divisibility, ranges) prefixed with ``where``."""
  try:
    return DiTConfig(**fields)
  except (TypeError, ValueError) as e:
    raise ConversionError(f"{where}: {e}") from e


def read_hf_dir(path: str) -> tuple[dict[str, np.ndarray], DiTConfig, str | None]:
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise ConversionError(f"{path}: a model directory needs config.json")
  import convert  # pylint: disable=import-outside-toplevel
  cfg = convert.read_json(cfg_path)
  config, arch = hf_config_to_dit(cfg, cfg_path)
  files = []
  for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
    index = os.path.join(path, index_name)
    if os.path.isfile(index):
      data = convert.read_json(index)
      wmap = data.get("weight_map") if isinstance(data, dict) else None
      if not isinstance(wmap, dict):
        raise ConversionError(f"{index}: no 'weight_map' object of tensor names to shard files")
      files = [convert.shard_path(path, x, index) for x in sorted(set(map(str, wmap.values())))]
      break
  if not files:
    for name in ("model.safetensors", "pytorch_model.bin"):
      if os.path.isfile(os.path.join(path, name)):
        files = [os.path.join(path, name)]
        break
  if not files:
    raise ConversionError(f"{path}: no model.safetensors or pytorch_model.bin found")
  state: dict[str, np.ndarray] = {}
  for fname in files:
    for k, v in read_state_file(fname).items():
      if k in state:
        raise ConversionError(f"{fname}: key '{k}' appears in more than one shard")
      state[k] = v
  return strip_backbone_prefix(state, path), config, arch


def _cfg_get(cfg, dotted: str):
  cur = cfg
  for part in dotted.split("."):
    try:
      cur = cur[part]
    except (KeyError, TypeError, AttributeError):
      return None
  return cur


def lightning_config_to_dit(hcfg, vocab_size: int, where: str) -> tuple[DiTConfig, str | None]:
  """hydra config of the MDLM/DUO repos -> (DiTConfig, process).

  The vocabulary size is not in the hydra config (it comes from the tokenizer), so it is
  read from the embedding's shape. time_conditioning is ``config.time_conditioning``
  (MDLM) or ``config.algo.time_conditioning`` (DUO).
  """
  fields = {}
  for key, dotted in (("hidden_size", "model.hidden_size"), ("cond_dim", "model.cond_dim"),
                      ("n_blocks", "model.n_blocks"), ("n_heads", "model.n_heads"),
                      ("length", "model.length")):
    val = _cfg_get(hcfg, dotted)
    if val is None:
      raise ConversionError(f"{where}: hyper_parameters['config'] lacks '{dotted}'")
    fields[key] = config_int(val, f"config.{dotted}", f"{where} hyper_parameters")
  dropout = _cfg_get(hcfg, "model.dropout")
  tc = _cfg_get(hcfg, "algo.time_conditioning")
  if tc is None:
    tc = _cfg_get(hcfg, "time_conditioning")
  algo = str(_cfg_get(hcfg, "algo.name") or "").lower()
  if algo.startswith("duo"):
    arch = "duo"
  elif algo == "mdlm" or _cfg_get(hcfg, "parameterization") == "subs":
    arch = "mdlm"
  else:
    arch = None
  if tc is None:
    if arch is None:
      raise ConversionError(f"{where}: cannot tell whether the model is time-conditioned; "
                            f"pass --process mdlm|duo")
    tc = arch == "duo"
  if not isinstance(tc, bool):
    raise ConversionError(f"{where} hyper_parameters: 'time_conditioning' must be true or "
                          f"false, got {show(tc)}")
  config = _dit_config(where, vocab_size=int(vocab_size),
                       dropout=config_float(0.1 if dropout is None else dropout,
                                            "config.model.dropout", f"{where} hyper_parameters"),
                       time_conditioning=tc, **fields)
  return config, arch


def read_lightning_ckpt(path: str, ema: bool) -> tuple[dict[str, np.ndarray], Any, list[str]]:
  """Returns (backbone state without prefix, hydra config, names of ignored entries)."""
  torch = _torch()
  if not os.path.isfile(path):
    raise ConversionError(f"{path}: no such file")
  try:
    # Lightning checkpoints pickle the hydra config (and tokenizer): unpickling runs code.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
  except Exception as e:
    raise ConversionError(f"{path}: not a loadable Lightning checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
  if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
    raise ConversionError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
  sd = ckpt["state_dict"]
  backbone = {k[len("backbone."):]: _tensor_to_numpy(v) for k, v in sd.items()
              if k.startswith("backbone.")}
  ignored = sorted(k for k in sd if not k.startswith("backbone."))
  if not backbone:
    raise ConversionError(f"{path}: the state_dict has no 'backbone.' entries")
  hcfg = (ckpt.get("hyper_parameters") or {}).get("config")
  if ema:
    shadow = (ckpt.get("ema") or {}).get("shadow_params")
    if shadow is None:
      raise ConversionError(f"{path}: --ema given but the checkpoint has no "
                            f"ckpt['ema']['shadow_params']")
    backbone["__ema_shadow__"] = [_tensor_to_numpy(t) for t in shadow]
  return backbone, hcfg, ignored


def apply_ema(state: dict, config: DiTConfig, where: str) -> dict:
  """Replaces parameters by the EMA shadow list (``backbone.parameters()`` order)."""
  shadow = state.pop("__ema_shadow__")
  names = torch_parameter_names(config)
  # MDLM/DUO build the EMA over chain(backbone.parameters(), noise.parameters()); the
  # log-linear noise schedules have no parameters, so the lists must be the same length.
  if len(shadow) != len(names):
    raise ConversionError(f"{where}: ckpt['ema']['shadow_params'] holds {len(shadow)} tensors, "
                          f"the backbone has {len(names)} parameters")
  out = dict(state)
  for name, value in zip(names, shadow):
    want = _torch_shape(name, config)
    if tuple(value.shape) != want:
      raise ConversionError(f"{where}: EMA shadow tensor for '{name}' has shape "
                            f"{tuple(value.shape)}, expected {want}")
    out[name] = value
  return out


def find_source_kind(src: str) -> str:
  if os.path.isdir(src):
    return "hf_dir"
  if not os.path.exists(src):
    matches = glob.glob(src)
    raise ConversionError(f"{src}: no such file or directory"
                          + (f" (the pattern matches {len(matches)} paths)" if matches else ""))
  if src.endswith(".ckpt"):
    return "lightning"
  if src.endswith((".safetensors", ".bin", ".pt", ".pth")):
    return "state_file"
  raise ConversionError(f"{src}: unknown checkpoint type (expected a model directory, "
                        f".safetensors, .bin, .pt or .ckpt)")


def load_source(src: str, *, ema: bool = False, process: str | None = None,
                config_override: dict | None = None) -> tuple[dict, DiTConfig, dict]:
  """Reads any supported SRC. Returns (flax params, DiTConfig, meta).

  ``process`` ("mdlm" | "duo") is the diffusion process of the weights, needed when SRC
  does not say; meta records it as ``meta["process"]``.
  """
  arch = process
  kind = find_source_kind(src)
  notes: dict[str, Any] = {}
  guessed = None
  if kind == "hf_dir":
    if ema:
      raise ConversionError(f"{src}: --ema applies to Lightning .ckpt files only (HF releases "
                            f"already hold the weights to use)")
    state, config, guessed = read_hf_dir(src)
  elif kind == "state_file":
    if ema:
      raise ConversionError(f"{src}: --ema applies to Lightning .ckpt files only")
    state = strip_backbone_prefix(read_state_file(src), src)
    if not config_override:
      raise ConversionError(f"{src}: a bare state dict carries no architecture; pass "
                            f"--config JSON (DiTConfig fields, e.g. "
                            f"'{{\"vocab_size\": 50258, \"time_conditioning\": false}}')")
    config = None
  else:
    state, hcfg, ignored = read_lightning_ckpt(src, ema)
    if hcfg is None and not config_override:
      raise ConversionError(f"{src}: no hyper_parameters['config'] in the checkpoint; pass "
                            f"--config JSON")
    emb = state.get("vocab_embed.embedding")
    if emb is None:
      raise ConversionError(f"{src}: missing key 'backbone.vocab_embed.embedding'")
    config, guessed = (lightning_config_to_dit(hcfg, emb.shape[0], src) if hcfg is not None
                       else (None, None))
    if ignored:
      notes["ignored_non_backbone_entries"] = ignored
  arch = arch or guessed
  if config_override:
    base = config.to_dict() if config is not None else DiTConfig(
        time_conditioning=(arch == "duo")).to_dict()
    unknown = sorted(set(config_override) - set(base))
    if unknown:
      raise ConversionError(f"--config: unknown field '{unknown[0]}'; fields: {sorted(base)}")
    base.update(config_override)
    try:
      config = DiTConfig.from_dict(base)
    except (TypeError, ValueError) as e:
      raise ConversionError(f"--config: {e}") from e
  if arch is None:
    raise ConversionError(f"{src}: cannot tell whether this is an MDLM or a DUO checkpoint; "
                          f"pass --process mdlm|duo")
  if "__ema_shadow__" in state:
    state = apply_ema(state, config, src)
  params = to_flax_params(state, config, src)
  meta = {"process": arch, "source": os.path.abspath(src), "source_kind": kind, "ema": bool(ema),
          **notes}
  return params, config, meta


# ------------------------------------------------------------------- export (the inverse)
# Shown by `python -m convert.export --help` for --family dit, with EXPORT_FORMATS.
EXPORTS = """\
  (MDLM / DUO)
  hf          a directory as the released HF checkpoints have it: config.json with the
              MDLM / DUO HF fields and model_type "mdlm" / "duo", weights under
              'backbone.' in model.safetensors (sharded with model.safetensors.index.json
              above --max-shard-size); the release's configuration_*.py / modeling_*.py
              are not written (copy them from the hub release to load with
              trust_remote_code);
  lightning   a .ckpt as the MDLM / DUO trainers write it: state_dict ('backbone.*') and
              ema.shadow_params (backbone.parameters() order), both holding the exported
              weights, loops counters, and hyper_parameters['config'] with the model
              fields those repositories build the DIT from (needs torch and omegaconf);
  safetensors a bare DIT state dict (DIT.state_dict() names, no prefix) in one file."""

EXPORT_FORMATS = ("hf", "lightning", "safetensors")
EXPORT_DTYPES = ("float32", "bfloat16", "float16")
# A release's auto_map points at its own code files (not written here).
_HF_AUTO_MAP = {"mdlm": {"AutoConfig": "configuration_mdlm.MDLMConfig",
                         "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
                "duo": {"AutoConfig": "configuration_duo.DUOConfig",
                        "AutoModelForMaskedLM": "modeling_duo.DUO"}}
_LIGHTNING_VERSION = "2.2.1"   # the lightning pinned by the MDLM requirements


def check_exportable(config: DiTConfig, meta: dict, fmt: str) -> None:
  """Refuses (ConversionError with the reason) what the public MDLM/DUO code cannot load.

  The public ``DIT`` fixes the MLP ratio at 4; DUO's HF config and trainer have no switch
  for an unconditioned backbone (DUO's ``mean`` parameterisation asserts
  time_conditioning); ``hf`` and ``lightning`` need to know the diffusion process.
  """
  if fmt not in EXPORT_FORMATS:
    raise ConversionError(f"--format {fmt!r}: the dit family exports {list(EXPORT_FORMATS)}")
  if config.mlp_ratio != 4:
    raise ConversionError(f"mlp_ratio={config.mlp_ratio}: the public MDLM/DUO DIT has a fixed "
                          f"MLP ratio of 4 and cannot represent this backbone")
  if fmt == "safetensors":
    return
  process = meta.get("process")
  if process not in ("mdlm", "duo"):
    raise ConversionError(f"meta['process'] is {process!r}: --format {fmt} writes an MDLM or "
                          f"DUO checkpoint; pass --process mdlm|duo")
  if process == "duo" and not config.time_conditioning:
    raise ConversionError("time_conditioning=False with process 'duo': the public DUO code is "
                          "always time-conditioned and cannot represent this backbone")


def to_torch_state(params: dict, config: DiTConfig) -> dict[str, np.ndarray]:
  """The inverse of :func:`to_flax_params`: pure param dict -> DIT state dict.

  Returns float32 arrays under the DIT's names (no ``backbone.``), in
  ``backbone.parameters()`` order, weights [out, in], then the rotary buffer
  ``rotary_emb.inv_freq`` float32[head_dim / 2] that the released state dicts carry.
  """
  state = params_to_state(params, torch_parameter_names(config), _flax_path,
                          lambda name: _torch_shape(name, config), config)
  hd = config.head_dim
  # As the DIT's Rotary computes it (float32 base ** (arange / dim)), correctly rounded.
  state[ROTARY_BUFFER] = (1.0 / (ROPE_BASE ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
                          ).astype(np.float32)
  return state


def hf_config(config: DiTConfig, process: str, dtype: str = "float32") -> dict:
  """config.json of the MDLM / DUO HF release for ``config`` (every field explicit: the HF
  config classes' defaults are not the released model's, e.g. MDLMConfig's cond_dim 129)."""
  out = {"architectures": [process.upper()], "auto_map": _HF_AUTO_MAP[process],
         "model_type": process, "vocab_size": config.vocab_size,
         "model_length": config.length, "hidden_dim": config.hidden_size,
         "cond_dim": config.cond_dim, "n_blocks": config.n_blocks, "n_heads": config.n_heads,
         "dropout": float(config.dropout)}
  if process == "mdlm":
    out["time_conditioning"] = bool(config.time_conditioning)
  else:   # DUOConfig: no time_conditioning (always on); the AR variant's switch is causal
    out.update(causal=False, var_min=True)
  out["torch_dtype"] = dtype
  return out


def lightning_hparams(config: DiTConfig, process: str) -> dict:
  """The hydra config fields the MDLM / DUO code builds and checks the DIT from.

  MDLM: ``config.backbone``, ``parameterization``, ``time_conditioning``, ``T`` and
  ``subs_masking`` at the top level; DUO: the same under ``algo`` (plus
  ``causal_attention``). Both: ``model.*`` (the DIT) and ``training.ema``.
  """
  model = {"name": "tokendrift_jax", "type": "ddit", "hidden_size": config.hidden_size,
           "cond_dim": config.cond_dim, "length": config.length, "n_blocks": config.n_blocks,
           "n_heads": config.n_heads, "scale_by_sigma": True, "dropout": float(config.dropout)}
  if process == "mdlm":
    return {"backbone": "dit", "parameterization": "subs",
            "time_conditioning": bool(config.time_conditioning), "T": 0, "subs_masking": False,
            "model": model, "training": {"ema": 0.9999}}
  return {"algo": {"name": "duo_base", "backbone": "dit", "parameterization": "mean",
                   "time_conditioning": True, "causal_attention": False, "T": 0},
          "model": model, "training": {"ema": 0.9999}}


def export(params: dict, config: DiTConfig, meta: dict, dst: str, *, fmt: str,
           dtype: str = "float32", max_shard_size: str = "5GB") -> list[str]:
  """Writes ``params`` (the project's pure dict) at ``dst`` in format ``fmt``.

  ``dst`` must not exist; ``hf`` creates it as a directory, ``lightning`` and
  ``safetensors`` as one file. The caller (``python -m convert.export``) writes to a
  temporary sibling and swaps it in. Returns the files written (relative to ``dst`` for hf).
  """
  check_exportable(config, meta, fmt)
  if dtype not in EXPORT_DTYPES:
    raise ConversionError(f"--dtype {dtype!r}: expected one of {list(EXPORT_DTYPES)}")
  state = to_torch_state(params, config)
  # The rotary buffer stays float32 (rounded, it would no longer match the base the
  # importers check).
  tensors, kind = cast(state, dtype, keep_float32=(ROTARY_BUFFER,))
  if fmt == "safetensors":
    save_safetensors(tensors, kind, dst)
    return [os.path.basename(dst)]
  process = meta["process"]
  if fmt == "hf":
    # Weights under backbone., in backbone.parameters() order, as save_pretrained.
    return write_hf_dir(dst, {"backbone." + k: v for k, v in tensors.items()}, kind,
                        hf_config(config, process, dtype), max_shard_size=max_shard_size)
  # lightning
  torch = _torch()
  try:
    from omegaconf import OmegaConf  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError("--format lightning needs omegaconf (the repositories pickle their "
                          "hydra config): pip install -r requirements-convert.txt") from e
  as_torch = {k: (v if kind == "torch" else torch.from_numpy(np.ascontiguousarray(v)))
              for k, v in tensors.items()}
  step = int(meta.get("step", 0) or 0)
  # Both the trained and the EMA slot hold the exported weights, so the repositories use
  # them whether or not eval.disable_ema is set.
  shadow = [as_torch[n].clone() for n in torch_parameter_names(config)]
  ckpt = {
      "epoch": 0, "global_step": step, "pytorch-lightning_version": _LIGHTNING_VERSION,
      "state_dict": {"backbone." + k: v for k, v in as_torch.items()},
      "ema": {"decay": 0.9999, "num_updates": step, "shadow_params": shadow},
      # on_load_checkpoint of both repositories reads these two counters.
      "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 0}},
                             "epoch_loop.batch_progress": {"current": {"completed": 0}}}},
      "hyper_parameters": {"config": OmegaConf.create(lightning_hparams(config, process))},
      "optimizer_states": [], "lr_schedulers": [], "callbacks": {},
      "tokendrift_jax": {"process": process, "source": str(meta.get("source", "")),
                         "dtype": dtype},
  }
  torch.save(ckpt, dst)
  return [os.path.basename(dst)]
