"""The ``llada`` family's converter: a Hugging Face LLaDA directory -> parameter tree.

The source is a LLaDA release directory as GSAI-ML/LLaDA-8B-Base has it: ``config.json``
(the fields of the public ``configuration_llada.ModelConfig``) and safetensors weights
under ``model.transformer.`` -- sharded (``model.safetensors.index.json`` + shards) or one
``model.safetensors``.

* The config is read first. Every field that changes the function is carried into
  :class:`LLaDAConfig` or, where the project implements only the release's value, checked
  (a one-line error names the field, its value and the file). A field absent from
  config.json takes the public ModelConfig default, as the public code does (those
  defaults are GPT-2's, so most are refused); ``mask_token_id`` must be given.
* Then every shard's header: each tensor the architecture needs must be listed in the
  index exactly once, present in the shard the index names, with the expected shape and a
  float dtype; a tensor that maps to nothing is an error. Nothing is read before all of
  this holds.
* Then the data, one shard at a time (``safe_open``, memory-mapped, one tensor at a
  time), upcast to float32 and transposed to the [in, out] kernels of ``nnx.Linear``:
  peak host memory is the float32 output plus one tensor.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import numpy as np

from convert import ConversionError
from convert.common import (cast, config_float, config_int, params_to_state, set_path,
                            write_hf_dir)
from tokendrift_jax.models.llada import LLaDAConfig

# Shown by `python -m convert --help` for --family llada.
SOURCES = """\
  (LLaDA, e.g. a local copy of GSAI-ML/LLaDA-8B-Base or -Instruct)
  * a Hugging Face model directory: config.json with the public LLaDA ModelConfig fields
    (block_type "llama", activation_type "silu", layer_norm_type "rms", rope, no biases,
    no ALiBi, no QK norm; mask_token_id given) and safetensors weights under
    'model.transformer.', sharded with model.safetensors.index.json or in one
    model.safetensors. bfloat16 / float16 weights are upcast to float32 (reading
    bfloat16 needs PyTorch). The process is 'llada' (--process may only say so)."""

PREFIX = "model.transformer."
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Per block, in the release's state-dict order (LLaDALlamaBlock registration order).
BLOCK_LEAVES = ("attn_out", "ff_out", "attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj",
                "ff_proj", "up_proj")
_FLOAT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

# The public ModelConfig defaults, used for fields config.json leaves out (as
# LLaDAConfig(**config.json) does).
MODEL_CONFIG_DEFAULTS: dict[str, Any] = {
    "d_model": 768, "n_heads": 12, "n_kv_heads": None, "n_layers": 12, "mlp_ratio": 4,
    "mlp_hidden_size": None, "activation_type": "swiglu", "block_type": "sequential",
    "block_group_size": 1, "alibi": False, "alibi_bias_max": 8.0, "rope": False,
    "rope_full_precision": True, "flash_attention": False, "attention_dropout": 0.1,
    "multi_query_attention": None, "attention_layer_norm": False, "residual_dropout": 0.1,
    "embedding_dropout": 0.1, "input_emb_norm": False, "layer_norm_type": "default",
    "layer_norm_with_affine": True, "rms_norm_eps": 1e-05,
    "attention_layer_norm_with_affine": True, "max_sequence_length": 1024,
    "rope_theta": 10000.0, "include_qkv_bias": False, "include_bias": False,
    "bias_for_layer_norm": None, "scale_logits": False, "vocab_size": 50257,
    "embedding_size": 50304, "weight_tying": True, "eos_token_id": 50256,
    "pad_token_id": 50256, "mask_token_id": 50256, "init_device": None, "init_fn": "normal",
    "init_std": 0.02, "init_cutoff_factor": None, "precision": None,
}
# ModelConfig fields that do not change the forward function: initialisation, training
# precision, the attention kernel, token ids other than the mask, and the parameters of
# options that are off (ALiBi's bias, the QK norm's affine).
NON_FUNCTIONAL = ("init_device", "init_fn", "init_std", "init_cutoff_factor", "precision",
                  "flash_attention", "eos_token_id", "pad_token_id", "alibi_bias_max",
                  "attention_layer_norm_with_affine")
# What transformers' PretrainedConfig writes beside the model's own fields.
HF_BOOKKEEPING = ("architectures", "auto_map", "model_type", "transformers_version",
                  "torch_dtype", "dtype", "_name_or_path", "use_cache", "bos_token_id",
                  "tie_word_embeddings", "return_dict", "output_hidden_states",
                  "output_attentions", "torchscript", "use_bfloat16", "pruned_heads",
                  "is_decoder", "is_encoder_decoder", "add_cross_attention",
                  "tokenizer_class", "id2label", "label2id", "problem_type",
                  "chunk_size_feed_forward", "tf_legacy_loss")
# (field, the only value implemented, why): each changes the function.
REQUIRED_VALUES = (
    ("block_type", "llama", "only LLaDA's 'llama' block (separate q/k/v, gated MLP) is "
                            "implemented"),
    ("activation_type", "silu", "LLaDA gates ff_proj with SiLU; 'swiglu' in a llama block "
                                "does not run in the public code and other activations "
                                "are not implemented"),
    ("layer_norm_type", "rms", "only RMSNorm is implemented"),
    ("layer_norm_with_affine", True, "RMSNorm without a weight is not implemented"),
    ("rope", True, "the public LLaDA forward requires rotary embeddings"),
    ("alibi", False, "the public LLaDA forward refuses ALiBi"),
    ("attention_layer_norm", False, "the QK norm is not implemented"),
    ("input_emb_norm", False, "scaling the input embeddings by sqrt(d_model) is not "
                              "implemented"),
    ("scale_logits", False, "scaling the logits by 1/sqrt(d_model) is not implemented"),
    ("include_bias", False, "linear biases are not implemented"),
    ("block_group_size", 1, "grouped blocks ('block_groups.' names) are not implemented"),
)


# ------------------------------------------------------------------- names


def hf_names(config: LLaDAConfig) -> list[str]:
  """Tensor names of the release's state dict, in its order (``LLaDAModel``'s module
  registration: wte, ln_f, blocks, ff_out; none for the output layer when tied)."""
  names = [PREFIX + "wte.weight", PREFIX + "ln_f.weight"]
  for i in range(config.n_layers):
    names += [f"{PREFIX}blocks.{i}.{leaf}.weight" for leaf in BLOCK_LEAVES]
  if not config.weight_tying:
    names.append(PREFIX + "ff_out.weight")
  return names


def hf_shape(name: str, c: LLaDAConfig) -> tuple[int, ...]:
  """The PyTorch shape of ``name`` (nn.Linear weights are [out, in])."""
  d, k, h, v = c.d_model, c.kv_dim, c.mlp_hidden_size, c.vocab_size
  top = {"wte": (v, d), "ln_f": (d,), "ff_out": (v, d)}
  block = {"attn_norm": (d,), "ff_norm": (d,), "q_proj": (d, d), "k_proj": (k, d),
           "v_proj": (k, d), "attn_out": (d, d), "ff_proj": (h, d), "up_proj": (h, d),
           "ff_out": (d, h)}
  parts = name[len(PREFIX):].split(".")
  return block[parts[2]] if parts[0] == "blocks" else top[parts[0]]


def flax_path(name: str) -> tuple[tuple[Any, ...], bool]:
  """Release name -> (path in the NNX pure-dict tree, transpose the [out, in] weight?)."""
  parts = name[len(PREFIX):].split(".")
  if parts[0] == "wte":
    return ("wte", "embedding"), False
  if parts[0] == "ln_f":
    return ("ln_f", "weight"), False
  if parts[0] == "ff_out":
    return ("ff_out", "kernel"), True
  leaf = parts[2]
  if leaf.endswith("_norm"):
    return ("blocks", int(parts[1]), leaf, "weight"), False
  return ("blocks", int(parts[1]), leaf, "kernel"), True


# ------------------------------------------------------------------- config


def _bool(value, field: str, where: str) -> bool:
  if not isinstance(value, bool):
    raise ConversionError(f"{where}: field '{field}' must be true or false, got "
                          f"{json.dumps(value)}")
  return value


def _rate(value, field: str, where: str) -> float:
  rate = config_float(value, field, where)
  if not 0.0 <= rate < 1.0:
    raise ConversionError(f"{where}: field '{field}' must be in [0, 1), got {value}")
  return rate


def _kv_heads(get, n_heads: int, where: str) -> int:
  """``ModelConfig.effective_n_kv_heads``: n_kv_heads, or from multi_query_attention."""
  n_kv, mqa = get("n_kv_heads"), get("multi_query_attention")
  if mqa is not None:
    _bool(mqa, "multi_query_attention", where)
  if n_kv is None:
    return 1 if mqa else n_heads
  n_kv = config_int(n_kv, "n_kv_heads", where)
  if mqa is not None and n_kv != (1 if mqa else n_heads):
    raise ConversionError(f"{where}: fields 'n_kv_heads'={n_kv} and "
                          f"'multi_query_attention'={json.dumps(mqa)} contradict each other "
                          f"(the public ModelConfig raises on this)")
  if n_heads % n_kv:
    raise ConversionError(f"{where}: field 'n_kv_heads'={n_kv} does not divide "
                          f"'n_heads'={n_heads}")
  return n_kv


def hf_config_to_llada(cfg: dict, where: str) -> tuple[LLaDAConfig, dict]:
  """A LLaDA config.json -> (LLaDAConfig, notes for meta: the special token ids).

  Raises:
    ConversionError: an unknown field, a value the project does not implement, a missing
      mask_token_id, an inconsistent vocabulary (one line naming the field and ``where``).
  """
  if not isinstance(cfg, dict):
    raise ConversionError(f"{where}: config.json must hold a JSON object")
  known = set(MODEL_CONFIG_DEFAULTS) | set(HF_BOOKKEEPING)
  unknown = sorted(set(cfg) - known)
  if unknown:
    raise ConversionError(f"{where}: unknown field '{unknown[0]}' (not a field of the public "
                          f"LLaDA ModelConfig; a modified LLaDA is not converted)")
  if cfg.get("model_type", "llada") != "llada":
    raise ConversionError(f"{where}: field 'model_type' is {json.dumps(cfg['model_type'])}, "
                          f"not \"llada\"")

  def get(field):
    return cfg.get(field, MODEL_CONFIG_DEFAULTS[field])

  for field, want, why in REQUIRED_VALUES:
    value = get(field)
    if value != want or type(value) is not type(want):  # pylint: disable=unidiomatic-typecheck
      raise ConversionError(f"{where}: field '{field}' is {json.dumps(value)}"
                            f"{'' if field in cfg else ' (the ModelConfig default)'}; "
                            f"{why} (LLaDA: {json.dumps(want)})")
  for field in ("include_qkv_bias", "bias_for_layer_norm"):
    if get(field) not in (None, False):
      raise ConversionError(f"{where}: field '{field}' is {json.dumps(get(field))}; biases "
                            f"are not implemented (LLaDA: false)")
  if config_float(get("attention_dropout"), "attention_dropout", where) != 0.0:
    raise ConversionError(f"{where}: field 'attention_dropout' is "
                          f"{get('attention_dropout')}"
                          f"{'' if 'attention_dropout' in cfg else ' (the ModelConfig default)'}"
                          f"; attention dropout is not implemented (LLaDA: 0.0)")
  if "mask_token_id" not in cfg:
    raise ConversionError(f"{where}: config.json lacks field 'mask_token_id' (LLaDA-8B: "
                          f"126336; the ModelConfig default 50256 is GPT-2's EOS, not a mask)")

  ints = {f: config_int(get(f), f, where) for f in ("d_model", "n_heads", "n_layers",
                                                    "max_sequence_length", "vocab_size")}
  n_kv = _kv_heads(get, ints["n_heads"], where)
  hidden = get("mlp_hidden_size")
  hidden = (config_int(get("mlp_ratio"), "mlp_ratio", where) * ints["d_model"]
            if hidden is None else config_int(hidden, "mlp_hidden_size", where))
  vocab, emb = ints["vocab_size"], get("embedding_size")
  if emb is not None and config_int(emb, "embedding_size", where) != vocab:
    raise ConversionError(
        f"{where}: field 'embedding_size'={emb} differs from 'vocab_size'={vocab}"
        f"{'' if 'embedding_size' in cfg else ' (embedding_size is the ModelConfig default)'}; "
        + ("the public code refuses a table smaller than the vocabulary" if emb < vocab else
           "padded embedding tables are not supported (logits must be [B, L, vocab_size])"))
  mask = cfg["mask_token_id"]
  if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask < vocab:
    raise ConversionError(f"{where}: field 'mask_token_id' must be an id in [0, {vocab}), got "
                          f"{json.dumps(mask)}")
  try:
    config = LLaDAConfig(
        vocab_size=vocab, d_model=ints["d_model"], n_layers=ints["n_layers"],
        n_heads=ints["n_heads"], n_kv_heads=n_kv, mlp_hidden_size=hidden,
        length=ints["max_sequence_length"],
        rope_theta=config_float(get("rope_theta"), "rope_theta", where),
        rms_norm_eps=config_float(get("rms_norm_eps"), "rms_norm_eps", where),
        mask_token_id=mask, weight_tying=_bool(get("weight_tying"), "weight_tying", where),
        rope_full_precision=_bool(get("rope_full_precision"), "rope_full_precision", where),
        dropout=_rate(get("residual_dropout"), "residual_dropout", where),
        embedding_dropout=_rate(get("embedding_dropout"), "embedding_dropout", where))
  except ValueError as e:
    raise ConversionError(f"{where}: {e}") from e
  notes = {f: cfg[f] for f in ("eos_token_id", "pad_token_id") if f in cfg}
  return config, notes


# ------------------------------------------------------------------- weights


def _read_json(path: str) -> Any:
  import convert  # pylint: disable=import-outside-toplevel
  return convert.read_json(path)


def weight_map(path: str) -> tuple[dict[str, str], str]:
  """{tensor name: shard file (absolute)} of a LLaDA directory, and where that map came
  from (the index, or the single model.safetensors)."""
  index = os.path.join(path, INDEX)
  if os.path.isfile(index):
    data = _read_json(index)
    wmap = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wmap, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in wmap.items()):
      raise ConversionError(f"{index}: no 'weight_map' object of tensor names to shard files")
    import convert  # pylint: disable=import-outside-toplevel
    return {k: convert.shard_path(path, v, index) for k, v in wmap.items()}, index
  single = os.path.join(path, SINGLE)
  if os.path.isfile(single):
    with _safe_open(single, "np") as f:
      return {k: single for k in f.keys()}, single
  if any(os.path.isfile(os.path.join(path, n))
         for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
    raise ConversionError(f"{path}: holds pytorch_model.bin weights; the llada converter reads "
                          f"safetensors only (as the LLaDA releases ship)")
  raise ConversionError(f"{path}: neither {INDEX} nor {SINGLE} found")


def _safe_open(fname: str, framework: str):
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  try:
    return safe_open(fname, framework=framework)
  except Exception as e:  # safetensors raises its own error types for bad headers
    raise ConversionError(f"{fname}: not a readable safetensors file "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


def check_headers(wmap: dict[str, str], source: str, config: LLaDAConfig) -> dict[str, dict]:
  """Checks names, shards, shapes and dtypes from the headers alone.

  Returns {shard file: {tensor name: dtype}} for the shards, in file-name order.
  """
  expected = hf_names(config)
  optional = set() if not config.weight_tying else {PREFIX + "ff_out.weight"}
  unknown = sorted(set(wmap) - set(expected) - optional)
  if unknown:
    raise ConversionError(f"{wmap[unknown[0]]}: unknown key '{unknown[0]}'"
                          + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                          + f"; not a parameter of the LLaDA backbone {config}")
  missing = [n for n in expected if n not in wmap]
  if missing:
    raise ConversionError(f"{source}: missing key '{missing[0]}'"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  shards: dict[str, dict] = {}
  for fname in sorted(set(wmap.values())):
    names = sorted(n for n, f in wmap.items() if f == fname)
    if not os.path.isfile(fname):
      raise ConversionError(f"{fname}: shard not found ({source} names it for '{names[0]}'"
                            + (f" and {len(names) - 1} more tensors)" if len(names) > 1 else ")"))
    with _safe_open(fname, "np") as f:
      held = set(f.keys())
      absent = [n for n in names if n not in held]
      if absent:
        raise ConversionError(f"{fname}: does not hold '{absent[0]}', which {source} names "
                              f"in it")
      extra = sorted(held - set(names))
      if extra:
        raise ConversionError(f"{fname}: unknown key '{extra[0]}' ({source} does not list it "
                              f"in this file)")
      dtypes = {}
      for name in names:
        sl = f.get_slice(name)
        shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
        want = hf_shape(name, config)
        if shape != want:
          what = (f" (vocab_size={config.vocab_size}, d_model={config.d_model} in config.json)"
                  if name.endswith(("wte.weight", "transformer.ff_out.weight")) else "")
          raise ConversionError(f"{fname}: shape mismatch for '{name}': checkpoint {shape} vs "
                                f"expected {want}{what}")
        if dtype not in _FLOAT_DTYPES:
          raise ConversionError(f"{fname}: '{name}' has dtype {dtype}; expected one of "
                                f"{sorted(_FLOAT_DTYPES)}")
        dtypes[name] = dtype
      shards[fname] = dtypes
  return shards


def _to_float32(tensor) -> np.ndarray:
  if isinstance(tensor, np.ndarray):
    return tensor.astype(np.float32, copy=False)
  import torch  # pylint: disable=import-outside-toplevel
  return tensor.to(dtype=torch.float32).numpy()


def read_weights(shards: dict[str, dict], config: LLaDAConfig) -> tuple[dict, list[str]]:
  """The float32 parameter tree from the checked shards, one shard and one tensor at a
  time; also the source dtypes seen. A tied checkpoint's stored output layer must equal
  the embedding."""
  params: dict = {}
  tied_copy = None
  for fname, dtypes in shards.items():
    framework = "np"
    if "BF16" in dtypes.values():
      if importlib.util.find_spec("torch") is None:
        raise ConversionError(f"{fname}: reading bfloat16 safetensors needs PyTorch: pip "
                              f"install -r requirements-convert.txt")
      framework = "pt"   # numpy has no bfloat16
    with _safe_open(fname, framework) as f:
      for name in dtypes:
        arr = _to_float32(f.get_tensor(name))
        if config.weight_tying and name == PREFIX + "ff_out.weight":
          tied_copy = (fname, arr)
          continue
        path, transpose = flax_path(name)
        set_path(params, path, np.ascontiguousarray(arr.T) if transpose else np.array(arr))
  if tied_copy is not None and not np.array_equal(tied_copy[1], params["wte"]["embedding"]):
    raise ConversionError(f"{tied_copy[0]}: weight_tying is true but '{PREFIX}ff_out.weight' "
                          f"differs from '{PREFIX}wte.weight'")
  seen = sorted({_FLOAT_DTYPES[d] for dt in shards.values() for d in dt.values()})
  return params, seen


# ------------------------------------------------------------------- entry point


def load_source(src: str, *, ema: bool = False, process: str | None = None,
                config_override: dict | None = None) -> tuple[dict, LLaDAConfig, dict]:
  """Reads a LLaDA HF directory. Returns (flax params float32, LLaDAConfig, meta)."""
  if not os.path.isdir(src):
    raise ConversionError(f"{src}: not a directory; the llada converter reads a Hugging "
                          f"Face LLaDA directory (config.json + safetensors)")
  if ema:
    raise ConversionError(f"{src}: --ema applies to Lightning .ckpt files only (a LLaDA "
                          f"release holds the weights to use)")
  if process not in (None, "llada"):
    raise ConversionError(f"--process {process}: LLaDA weights belong to the 'llada' masked "
                          f"diffusion process")
  cfg_path = os.path.join(src, "config.json")
  if not os.path.isfile(cfg_path):
    raise ConversionError(f"{src}: a model directory needs config.json")
  config, notes = hf_config_to_llada(_read_json(cfg_path), cfg_path)
  if config_override:
    fields = config.to_dict()
    unknown = sorted(set(config_override) - set(fields))
    if unknown:
      raise ConversionError(f"--config: unknown field '{unknown[0]}'; fields: {sorted(fields)}")
    fields.update(config_override)
    try:
      config = LLaDAConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
      raise ConversionError(f"--config: {e}") from e
  wmap, source = weight_map(src)
  shards = check_headers(wmap, source, config)
  params, dtypes = read_weights(shards, config)
  meta = {"process": "llada", "source": os.path.abspath(src), "source_kind": "hf_dir",
          "ema": False, "source_dtypes": dtypes, **notes}
  return params, config, meta


# ------------------------------------------------------------------- export (the inverse)
# Shown by `python -m convert.export --help` for --family llada, with EXPORT_FORMATS.
EXPORTS = """\
  (LLaDA)
  hf          a directory as the LLaDA releases have it: config.json with every public
              ModelConfig field explicit (the class defaults are GPT-2's), weights under
              'model.transformer.' in model.safetensors, sharded with
              model.safetensors.index.json above --max-shard-size; eos/pad token ids
              from the checkpoint's meta when it has them. The release's
              configuration_llada.py / modeling_llada.py are not written (copy them from
              the hub release to load with trust_remote_code)."""

EXPORT_FORMATS = ("hf",)
EXPORT_DTYPES = ("float32", "bfloat16", "float16")
_AUTO_MAP = {"AutoConfig": "configuration_llada.LLaDAConfig",
             "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
             "AutoModel": "modeling_llada.LLaDAModelLM"}


def check_exportable(config: LLaDAConfig, meta: dict, fmt: str) -> None:
  """Refuses a format the llada family does not write (every LLaDAConfig is a release
  config; the process is not recorded in an HF directory)."""
  del config, meta
  if fmt not in EXPORT_FORMATS:
    raise ConversionError(f"--format {fmt!r}: the llada family exports {list(EXPORT_FORMATS)}")


def to_torch_state(params: dict, config: LLaDAConfig) -> dict[str, np.ndarray]:
  """The inverse of the import: pure param dict -> the release's state dict (float32
  [out, in] weights, in the release's order)."""
  return params_to_state(params, hf_names(config), flax_path,
                         lambda name: hf_shape(name, config), config)


def hf_config(config: LLaDAConfig, meta: dict, dtype: str = "float32") -> dict:
  """config.json for ``config``: every public ModelConfig field explicit, LLaDA's values
  for the fields the project fixes (block type, norms, no biases, ...) and the
  non-functional ones (init as the release)."""
  out = dict(MODEL_CONFIG_DEFAULTS)
  out.update(
      d_model=config.d_model, n_heads=config.n_heads, n_kv_heads=config.n_kv_heads,
      n_layers=config.n_layers, mlp_hidden_size=config.mlp_hidden_size,
      mlp_ratio=4,   # unused when mlp_hidden_size is given; the release's value
      max_sequence_length=config.length, rope_theta=float(config.rope_theta),
      rms_norm_eps=float(config.rms_norm_eps), vocab_size=config.vocab_size,
      embedding_size=config.vocab_size, mask_token_id=config.mask_token_id,
      weight_tying=config.weight_tying, rope_full_precision=config.rope_full_precision,
      residual_dropout=float(config.dropout),
      embedding_dropout=float(config.embedding_dropout), attention_dropout=0.0,
      init_device="meta", init_fn="mitchell", init_std=0.02, precision="amp_bf16",
      bias_for_layer_norm=False, include_qkv_bias=False)
  out.update({field: want for field, want, _ in REQUIRED_VALUES})
  for field in ("eos_token_id", "pad_token_id"):
    if field in meta:
      out[field] = meta[field]
    else:
      del out[field]
  out.update(architectures=["LLaDAModelLM"], auto_map=_AUTO_MAP, model_type="llada",
             use_cache=False, torch_dtype=dtype)
  return dict(sorted(out.items()))


def export(params: dict, config: LLaDAConfig, meta: dict, dst: str, *, fmt: str,
           dtype: str = "float32", max_shard_size: str = "5GB") -> list[str]:
  """Writes ``params`` at ``dst`` (a new directory) as an HF LLaDA release; returns the
  files written (relative to ``dst``). The caller (``python -m convert.export``) writes
  to a temporary sibling and swaps it in."""
  check_exportable(config, meta, fmt)
  if dtype not in EXPORT_DTYPES:
    raise ConversionError(f"--dtype {dtype!r}: expected one of {list(EXPORT_DTYPES)}")
  tensors, kind = cast(to_torch_state(params, config), dtype)
  # In the release's order, as save_pretrained wrote it.
  return write_hf_dir(dst, tensors, kind, hf_config(config, meta, dtype),
                      max_shard_size=max_shard_size, sort_config_keys=False)
