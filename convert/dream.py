"""The ``dream`` family's converter: a Hugging Face Dream directory <-> parameter tree.

The source is a Dream release directory as Dream-org/Dream-v0-Base-7B has it:
``config.json`` (the fields of the public ``configuration_dream.DreamConfig``, model_type
"Dream", architectures ["DreamModel"]) and safetensors weights named as ``DreamModel``'s
state dict (``model.embed_tokens.weight``, ``model.layers.<i>.self_attn.q_proj.weight``,
..., ``model.norm.weight``, ``lm_head.weight``) -- sharded (``model.safetensors.index.json``
+ shards) or one ``model.safetensors``.

As the llada converter (:mod:`convert.llada`, whose shard reading this module shares):
the config is read first (every field that changes the function carried into
:class:`DreamConfig` or checked; an absent field takes the public DreamConfig default);
then every shard's header (each tensor listed once, present where the index says, the
expected shape, a float dtype; an unknown tensor is an error); only then the data, one
tensor at a time, upcast to float32 and transposed to [in, out] kernels.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import numpy as np

from convert import ConversionError
from convert.common import cast, config_float, config_int, params_to_state, set_path, write_hf_dir
from convert.llada import _safe_open, _to_float32, weight_map
from tokendrift_jax.models.dream import DreamConfig

SOURCES = """\
  (Dream, e.g. a local copy of Dream-org/Dream-v0-Base-7B or -Instruct-7B)
  * a Hugging Face model directory: config.json with the public DreamConfig fields
    (model_type "Dream", hidden_act "silu", rope_scaling null, no sliding window,
    attention_dropout 0) and safetensors weights named as DreamModel's state dict
    ('model.*', 'lm_head.weight'), sharded with model.safetensors.index.json or in one
    model.safetensors. bfloat16 / float16 weights are upcast to float32 (reading bfloat16
    needs PyTorch). The process is 'dream' (--process may only say so)."""

# The public DreamConfig defaults, used for fields config.json leaves out.
DREAM_CONFIG_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "hidden_act": "silu", "max_position_embeddings": 32768, "initializer_range": 0.02,
    "rms_norm_eps": 1e-6, "use_cache": False, "tie_word_embeddings": False,
    "rope_theta": 10000.0, "rope_scaling": None, "use_sliding_window": False,
    "sliding_window": 4096, "max_window_layers": 28, "attention_dropout": 0.0,
    "mask_token_id": 151666, "pad_token_id": 151643,
}
# What transformers' PretrainedConfig writes beside the model's own fields.
HF_BOOKKEEPING = ("architectures", "auto_map", "model_type", "transformers_version",
                  "torch_dtype", "dtype", "_name_or_path", "bos_token_id", "eos_token_id",
                  "return_dict", "output_hidden_states", "output_attentions", "torchscript",
                  "use_bfloat16", "pruned_heads", "is_decoder", "is_encoder_decoder",
                  "add_cross_attention", "tokenizer_class", "id2label", "label2id",
                  "problem_type", "chunk_size_feed_forward", "tf_legacy_loss")
# (field, the only value implemented, why): each changes the function.
REQUIRED_VALUES = (
    ("hidden_act", "silu", "DreamMLP gates with ACT2FN[hidden_act]; only SiLU is implemented"),
    ("rope_scaling", None, "only the default rotary (no scaling) is implemented"),
    ("use_sliding_window", False, "sliding-window attention is not implemented"),
)
# The special ids kept in the checkpoint's meta (and written back by the export).
TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id")

BLOCK_LEAVES = (("self_attn.q_proj.weight", "q_proj", "kernel", True),
                ("self_attn.q_proj.bias", "q_proj", "bias", False),
                ("self_attn.k_proj.weight", "k_proj", "kernel", True),
                ("self_attn.k_proj.bias", "k_proj", "bias", False),
                ("self_attn.v_proj.weight", "v_proj", "kernel", True),
                ("self_attn.v_proj.bias", "v_proj", "bias", False),
                ("self_attn.o_proj.weight", "o_proj", "kernel", True),
                ("mlp.gate_proj.weight", "gate_proj", "kernel", True),
                ("mlp.up_proj.weight", "up_proj", "kernel", True),
                ("mlp.down_proj.weight", "down_proj", "kernel", True),
                ("input_layernorm.weight", "input_layernorm", "weight", False),
                ("post_attention_layernorm.weight", "post_attention_layernorm", "weight",
                 False))
_BLOCK = {hf: (mod, leaf, t) for hf, mod, leaf, t in BLOCK_LEAVES}
LM_HEAD = "lm_head.weight"
_FLOAT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


# ------------------------------------------------------------------- names


def hf_names(config: DreamConfig) -> list[str]:
  """Tensor names of ``DreamModel``'s state dict in its order (embed_tokens, layers,
  norm, lm_head; no lm_head when tied, as save_pretrained drops tied weights)."""
  names = ["model.embed_tokens.weight"]
  for i in range(config.num_hidden_layers):
    names += [f"model.layers.{i}.{hf}" for hf, _, _, _ in BLOCK_LEAVES]
  names.append("model.norm.weight")
  if not config.tie_word_embeddings:
    names.append(LM_HEAD)
  return names


def hf_shape(name: str, c: DreamConfig) -> tuple[int, ...]:
  """The PyTorch shape of ``name`` (nn.Linear weights are [out, in])."""
  d, k, h, v = c.hidden_size, c.kv_dim, c.intermediate_size, c.vocab_size
  top = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), LM_HEAD: (v, d)}
  if name in top:
    return top[name]
  block = {"self_attn.q_proj.weight": (d, d), "self_attn.q_proj.bias": (d,),
           "self_attn.k_proj.weight": (k, d), "self_attn.k_proj.bias": (k,),
           "self_attn.v_proj.weight": (k, d), "self_attn.v_proj.bias": (k,),
           "self_attn.o_proj.weight": (d, d), "mlp.gate_proj.weight": (h, d),
           "mlp.up_proj.weight": (h, d), "mlp.down_proj.weight": (d, h),
           "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,)}
  return block[name.split(".", 3)[3]]


def flax_path(name: str) -> tuple[tuple[Any, ...], bool]:
  """Release name -> (path in the NNX pure-dict tree, transpose the [out, in] weight?)."""
  if name == "model.embed_tokens.weight":
    return ("embed_tokens", "embedding"), False
  if name == "model.norm.weight":
    return ("norm", "weight"), False
  if name == LM_HEAD:
    return ("lm_head", "kernel"), True
  parts = name.split(".", 3)
  mod, leaf, transpose = _BLOCK[parts[3]]
  return ("layers", int(parts[2]), mod, leaf), transpose


# ------------------------------------------------------------------- config


def _bool(value, field: str, where: str) -> bool:
  if not isinstance(value, bool):
    raise ConversionError(f"{where}: field '{field}' must be true or false, got "
                          f"{json.dumps(value)}")
  return value


def hf_config_to_dream(cfg: dict, where: str) -> tuple[DreamConfig, dict]:
  """A Dream config.json -> (DreamConfig, notes for meta: the special token ids).

  Raises:
    ConversionError: an unknown field, a value the project does not implement (one line
      naming the field and ``where``).
  """
  if not isinstance(cfg, dict):
    raise ConversionError(f"{where}: config.json must hold a JSON object")
  unknown = sorted(set(cfg) - set(DREAM_CONFIG_DEFAULTS) - set(HF_BOOKKEEPING))
  if unknown:
    raise ConversionError(f"{where}: unknown field '{unknown[0]}' (not a field of the public "
                          f"DreamConfig; a modified Dream is not converted)")
  if cfg.get("model_type", "Dream") != "Dream":
    raise ConversionError(f"{where}: field 'model_type' is {json.dumps(cfg['model_type'])}, "
                          f"not \"Dream\"")

  def get(field):
    return cfg.get(field, DREAM_CONFIG_DEFAULTS[field])

  for field, want, why in REQUIRED_VALUES:
    if get(field) != want:
      raise ConversionError(f"{where}: field '{field}' is {json.dumps(get(field))}; {why} "
                            f"(Dream-v0: {json.dumps(want)})")
  if config_float(get("attention_dropout"), "attention_dropout", where) != 0.0:
    raise ConversionError(f"{where}: field 'attention_dropout' is "
                          f"{get('attention_dropout')}; attention dropout is not implemented "
                          f"(Dream-v0: 0.0)")
  ints = {f: config_int(get(f), f, where)
          for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "max_position_embeddings")}
  kv = get("num_key_value_heads")
  # DreamConfig: "for backward compatibility", null means as many as the query heads.
  kv = ints["num_attention_heads"] if kv is None else config_int(kv, "num_key_value_heads",
                                                                 where)
  mask, vocab = get("mask_token_id"), ints["vocab_size"]
  if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask < vocab:
    raise ConversionError(f"{where}: field 'mask_token_id' must be an id in [0, {vocab}), got "
                          f"{json.dumps(mask)}")
  try:
    config = DreamConfig(
        vocab_size=vocab, hidden_size=ints["hidden_size"],
        intermediate_size=ints["intermediate_size"],
        num_hidden_layers=ints["num_hidden_layers"],
        num_attention_heads=ints["num_attention_heads"], num_key_value_heads=kv,
        length=ints["max_position_embeddings"],
        rope_theta=config_float(get("rope_theta"), "rope_theta", where),
        rms_norm_eps=config_float(get("rms_norm_eps"), "rms_norm_eps", where),
        mask_token_id=mask,
        tie_word_embeddings=_bool(get("tie_word_embeddings"), "tie_word_embeddings", where))
  except ValueError as e:
    raise ConversionError(f"{where}: {e}") from e
  notes = {f: cfg.get(f, DREAM_CONFIG_DEFAULTS.get(f)) for f in TOKEN_FIELDS
           if cfg.get(f, DREAM_CONFIG_DEFAULTS.get(f)) is not None}
  return config, notes


# ------------------------------------------------------------------- weights


def check_headers(wmap: dict[str, str], source: str, config: DreamConfig) -> dict[str, dict]:
  """Names, shards, shapes and dtypes from the headers alone; {shard: {name: dtype}}."""
  expected = hf_names(config)
  optional = {LM_HEAD} if config.tie_word_embeddings else set()
  unknown = sorted(set(wmap) - set(expected) - optional)
  if unknown:
    raise ConversionError(f"{wmap[unknown[0]]}: unknown key '{unknown[0]}'"
                          + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                          + f"; not a parameter of the Dream backbone {config}")
  missing = [n for n in expected if n not in wmap]
  if missing:
    raise ConversionError(f"{source}: missing key '{missing[0]}'"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
  shards: dict[str, dict] = {}
  for fname in sorted(set(wmap.values())):
    names = sorted(n for n, f in wmap.items() if f == fname)
    if not os.path.isfile(fname):
      raise ConversionError(f"{fname}: shard not found ({source} names it for '{names[0]}')")
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
          raise ConversionError(f"{fname}: shape mismatch for '{name}': checkpoint {shape} vs "
                                f"expected {want}")
        if dtype not in _FLOAT_DTYPES:
          raise ConversionError(f"{fname}: '{name}' has dtype {dtype}; expected one of "
                                f"{sorted(_FLOAT_DTYPES)}")
        dtypes[name] = dtype
      shards[fname] = dtypes
  return shards


def read_weights(shards: dict[str, dict], config: DreamConfig) -> tuple[dict, list[str]]:
  """The float32 parameter tree, one shard and one tensor at a time, and the source
  dtypes. A tied checkpoint's stored lm_head must equal the embedding."""
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
        if config.tie_word_embeddings and name == LM_HEAD:
          tied_copy = (fname, arr)
          continue
        path, transpose = flax_path(name)
        set_path(params, path, np.ascontiguousarray(arr.T) if transpose else np.array(arr))
  if tied_copy is not None and not np.array_equal(tied_copy[1],
                                                  params["embed_tokens"]["embedding"]):
    raise ConversionError(f"{tied_copy[0]}: tie_word_embeddings is true but '{LM_HEAD}' "
                          f"differs from 'model.embed_tokens.weight'")
  seen = sorted({_FLOAT_DTYPES[d] for dt in shards.values() for d in dt.values()})
  return params, seen


def load_source(src: str, *, ema: bool = False, process: str | None = None,
                config_override: dict | None = None) -> tuple[dict, DreamConfig, dict]:
  """Reads a Dream HF directory. Returns (flax params float32, DreamConfig, meta)."""
  if not os.path.isdir(src):
    raise ConversionError(f"{src}: not a directory; the dream converter reads a Hugging "
                          f"Face Dream directory (config.json + safetensors)")
  if ema:
    raise ConversionError(f"{src}: --ema applies to Lightning .ckpt files only (a Dream "
                          f"release holds the weights to use)")
  if process not in (None, "dream"):
    raise ConversionError(f"--process {process}: Dream weights belong to the 'dream' masked "
                          f"diffusion process")
  cfg_path = os.path.join(src, "config.json")
  if not os.path.isfile(cfg_path):
    raise ConversionError(f"{src}: a model directory needs config.json")
  import convert  # pylint: disable=import-outside-toplevel
  config, notes = hf_config_to_dream(convert.read_json(cfg_path), cfg_path)
  if config_override:
    fields = config.to_dict()
    unknown = sorted(set(config_override) - set(fields))
    if unknown:
      raise ConversionError(f"--config: unknown field '{unknown[0]}'; fields: {sorted(fields)}")
    fields.update(config_override)
    try:
      config = DreamConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
      raise ConversionError(f"--config: {e}") from e
  wmap, source = weight_map(src)
  shards = check_headers(wmap, source, config)
  params, dtypes = read_weights(shards, config)
  meta = {"process": "dream", "source": os.path.abspath(src), "source_kind": "hf_dir",
          "ema": False, "source_dtypes": dtypes, **notes}
  return params, config, meta


# ------------------------------------------------------------------- export (the inverse)
EXPORTS = """\
  (Dream)
  hf          a directory as the Dream releases have it: config.json with every public
              DreamConfig field explicit (model_type "Dream", architectures
              ["DreamModel"]), weights named as DreamModel's state dict in
              model.safetensors, sharded with model.safetensors.index.json above
              --max-shard-size (no lm_head.weight when tied, as save_pretrained);
              pad/bos/eos ids from the checkpoint's meta. The release's
              configuration_dream.py / modeling_dream.py / generation_utils.py are not
              written (copy them from the hub release to load with trust_remote_code)."""

EXPORT_FORMATS = ("hf",)
EXPORT_DTYPES = ("float32", "bfloat16", "float16")
_AUTO_MAP = {"AutoConfig": "configuration_dream.DreamConfig",
             "AutoModel": "modeling_dream.DreamModel"}


def check_exportable(config: DreamConfig, meta: dict, fmt: str) -> None:
  del config, meta
  if fmt not in EXPORT_FORMATS:
    raise ConversionError(f"--format {fmt!r}: the dream family exports {list(EXPORT_FORMATS)}")


def to_torch_state(params: dict, config: DreamConfig) -> dict[str, np.ndarray]:
  """Pure param dict -> DreamModel's state dict (float32 [out, in] weights, its order)."""
  return params_to_state(params, hf_names(config), flax_path,
                         lambda name: hf_shape(name, config), config)


def hf_config(config: DreamConfig, meta: dict, dtype: str = "float32") -> dict:
  """config.json for ``config``: every public DreamConfig field explicit."""
  out = dict(DREAM_CONFIG_DEFAULTS)
  out.update(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
             intermediate_size=config.intermediate_size,
             num_hidden_layers=config.num_hidden_layers,
             num_attention_heads=config.num_attention_heads,
             num_key_value_heads=config.num_key_value_heads,
             max_position_embeddings=config.length, rope_theta=float(config.rope_theta),
             rms_norm_eps=float(config.rms_norm_eps), mask_token_id=config.mask_token_id,
             tie_word_embeddings=config.tie_word_embeddings, attention_dropout=0.0,
             # DreamConfig stores sliding_window as None when use_sliding_window is off.
             sliding_window=None)
  out.update({field: want for field, want, _ in REQUIRED_VALUES})
  for field in TOKEN_FIELDS:
    if field in meta:
      out[field] = meta[field]
  out.update(architectures=["DreamModel"], auto_map=_AUTO_MAP, model_type="Dream",
             torch_dtype=dtype)
  return dict(sorted(out.items()))


def export(params: dict, config: DreamConfig, meta: dict, dst: str, *, fmt: str,
           dtype: str = "float32", max_shard_size: str = "5GB") -> list[str]:
  """Writes ``params`` at ``dst`` (a new directory) as an HF Dream release; returns the
  files written (relative to ``dst``)."""
  check_exportable(config, meta, fmt)
  if dtype not in EXPORT_DTYPES:
    raise ConversionError(f"--dtype {dtype!r}: expected one of {list(EXPORT_DTYPES)}")
  tensors, kind = cast(to_torch_state(params, config), dtype)
  return write_hf_dir(dst, tensors, kind, hf_config(config, meta, dtype),
                      max_shard_size=max_shard_size)
