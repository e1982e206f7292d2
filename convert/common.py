"""Pieces every family converter uses: config-field parsing and pure-dict <-> state-dict
mapping. A family's converter (convert/<family>.py) supplies only its names, paths and
shapes."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

import numpy as np

from convert import ConversionError


def config_int(value, field: str, where: str) -> int:
  """``value`` of config field ``field`` (in the file ``where``) as a positive int.

  Only JSON integers are accepted: null, booleans, strings and every float (also an
  integral 32.0, which the public PyTorch code would not accept as a layer size) are
  refused, naming the field and the file.
  """
  if isinstance(value, bool) or not isinstance(value, int):
    raise ConversionError(f"{where}: field '{field}' must be a positive integer, got "
                          f"{show(value)}")
  if value <= 0:
    raise ConversionError(f"{where}: field '{field}' must be a positive integer, got {value}")
  return value


def config_float(value, field: str, where: str) -> float:
  """``value`` of config field ``field`` as a float (a JSON number; not null/bool/string)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ConversionError(f"{where}: field '{field}' must be a number, got {show(value)}")
  return float(value)


def show(value) -> str:
  """A config value and its JSON type, for error messages."""
  try:
    return f"{json.dumps(value)} ({'null' if value is None else type(value).__name__})"
  except (TypeError, ValueError):
    return f"{value!r} ({type(value).__name__})"


def set_path(tree: dict, path: tuple, value) -> None:
  """``tree[path[0]][path[1]]... = value``, creating the inner dicts."""
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def get_path(tree: dict, path: tuple):
  for k in path:
    tree = tree[k]
  return tree


def params_to_state(params: dict, names: Iterable[str],
                    flax_path: Callable[[str], tuple[tuple[Any, ...], bool]],
                    torch_shape: Callable[[str], tuple[int, ...]], config) -> dict[str, np.ndarray]:
  """The inverse of a family's import: for every PyTorch ``name`` (in order), the float32
  array at ``flax_path(name)`` of the pure param dict, transposed where the path says so
  ([in, out] kernels -> [out, in] weights), checked against ``torch_shape(name)``."""
  state: dict[str, np.ndarray] = {}
  for name in names:
    path, transpose = flax_path(name)
    try:
      arr = np.asarray(get_path(params, path), np.float32)
    except (KeyError, TypeError) as e:
      raise ConversionError(f"the parameters have no {path} for '{name}'") from e
    arr = np.ascontiguousarray(arr.T) if transpose else arr
    if tuple(arr.shape) != torch_shape(name):
      raise ConversionError(f"parameter {path} gives '{name}' the shape {tuple(arr.shape)}, "
                            f"expected {torch_shape(name)} for {config}")
    state[name] = arr
  return state


# ------------------------------------------------------------------- writing releases


def parse_size(text: str) -> int:
  """'5GB', '200MB', '20KB' or a byte count -> bytes (powers of 1000, as HF's)."""
  s = str(text).strip().upper()
  for unit, mult in (("GB", 10 ** 9), ("MB", 10 ** 6), ("KB", 10 ** 3), ("B", 1)):
    if s.endswith(unit):
      s, scale = s[:-len(unit)], mult
      break
  else:
    scale = 1
  try:
    value = int(float(s) * scale)
  except ValueError:
    value = 0
  if value <= 0:
    raise ConversionError(f"--max-shard-size {text!r}: expected a positive size like 5GB, "
                          f"200MB or 20KB")
  return value


def cast(state: dict[str, np.ndarray], dtype: str, keep_float32: Iterable[str] = ()):
  """{name: float32 array} -> (tensors to save, "np" | "torch"): torch for bfloat16 (numpy
  has none), numpy otherwise; the names in ``keep_float32`` stay float32."""
  keep = set(keep_float32)
  if dtype == "bfloat16":
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ConversionError("--dtype bfloat16 needs PyTorch: pip install -r "
                            "requirements-convert.txt") from e
    return {k: torch.from_numpy(v) if k in keep else torch.from_numpy(v).to(torch.bfloat16)
            for k, v in state.items()}, "torch"
  np_dtype = {"float32": np.float32, "float16": np.float16}[dtype]
  return {k: v if k in keep else v.astype(np_dtype) for k, v in state.items()}, "np"


def nbytes(t) -> int:
  return int(t.nbytes) if hasattr(t, "nbytes") else int(t.numel() * t.element_size())


def save_safetensors(tensors: dict, kind: str, path: str) -> None:
  # "format": what transformers' loader expects of a PyTorch file; the tag lets a later
  # `--force` recognise the file as this project's export (tokendrift_jax.fs.recognise).
  from tokendrift_jax import fs  # pylint: disable=import-outside-toplevel
  metadata = {"format": "pt", fs.EXPORT_TAG: "export"}
  if kind == "torch":
    from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  else:
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  save_file(tensors, path, metadata=metadata)


def write_hf_dir(dst: str, tensors: dict, kind: str, config_json: dict, *,
                 max_shard_size: str, sort_config_keys: bool = True) -> list[str]:
  """An HF release directory at ``dst`` (created): config.json and the tensors in their
  order, one ``model.safetensors`` or shards of at most ``max_shard_size`` with
  ``model.safetensors.index.json`` (as ``save_pretrained``). Returns the files written."""
  import os  # pylint: disable=import-outside-toplevel
  limit = parse_size(max_shard_size)
  shards: list[dict] = [{}]
  size = 0
  for name, t in tensors.items():
    if shards[-1] and size + nbytes(t) > limit:
      shards.append({})
      size = 0
    shards[-1][name] = t
    size += nbytes(t)
  os.makedirs(dst)
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(config_json, f, indent=2, sort_keys=sort_config_keys)
    f.write("\n")
  if len(shards) == 1:
    save_safetensors(shards[0], kind, os.path.join(dst, "model.safetensors"))
    return ["config.json", "model.safetensors"]
  files, weight_map = [], {}
  for i, shard in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_safetensors(shard, kind, os.path.join(dst, fname))
    files.append(fname)
    weight_map.update({k: fname for k in shard})
  index = {"metadata": {"total_size": sum(nbytes(t) for t in tensors.values())},
           "weight_map": weight_map}
  with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
    json.dump(index, f, indent=2, sort_keys=True)
    f.write("\n")
  return ["config.json", "model.safetensors.index.json"] + files
