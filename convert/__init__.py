"""Converters from released PyTorch checkpoints to tokendrift_jax backbones, one per family.

``python -m convert SRC DST [--family NAME]``: a family's converter is one module, found
here by the family name (``CONVERTERS``), or added with :func:`register`. It provides
``SOURCES`` (the --help text on what SRC may be) and ``load_source(src, *, ema, process,
config_override) -> (params, config, meta)``, raising :class:`ConversionError`; the CLI
writes the result with ``checkpoints.save_backbone``. GPT-2 judges: ``python -m convert.gpt2``.

The inverse, ``python -m convert.export SRC DST --format F``: a family's converter module
that can also write the public formats provides ``EXPORT_FORMATS`` (names), ``EXPORTS``
(the --help text) and ``export(params, config, meta, dst, *, fmt, dtype, max_shard_size)
-> files``, found by :func:`get_exporter`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CONVERTERS = {"dit": "convert.dit", "dream": "convert.dream", "llada": "convert.llada"}
_REGISTERED: dict[str, ModuleType] = {}


class ConversionError(ValueError):
  """One-line, user-facing conversion error."""


def register(family: str, module: ModuleType) -> None:
  """Adds the converter ``module`` for ``family`` (replacing one of the same name)."""
  for attr in ("SOURCES", "load_source"):
    if not hasattr(module, attr):
      raise TypeError(f"a converter module needs {attr!r}; {module.__name__} has none")
  _REGISTERED[family] = module


def families() -> list[str]:
  return sorted(set(CONVERTERS) | set(_REGISTERED))


def get_converter(family: str) -> ModuleType:
  """The converter module of ``family``; ConversionError naming the known ones otherwise."""
  if family in _REGISTERED:
    return _REGISTERED[family]
  if family not in CONVERTERS:
    raise ConversionError(f"no converter for model family {family!r}; known: {families()}")
  return importlib.import_module(CONVERTERS[family])


def get_exporter(family: str) -> ModuleType:
  """The converter module of ``family`` if it exports (``EXPORT_FORMATS`` and ``export``);
  ConversionError "no exporter for model family ..." naming those that do otherwise."""
  try:
    module = get_converter(family)
  except ConversionError:
    module = None
  if module is None or not all(hasattr(module, a) for a in ("EXPORT_FORMATS", "export")):
    raise ConversionError(f"no exporter for model family {family!r}; families with one: "
                          f"{exporter_families()}")
  return module


def exporter_families() -> list[str]:
  """Families whose converter module provides an exporter (imports built-in converters)."""
  out = []
  for name in families():
    module = _REGISTERED.get(name) or importlib.import_module(CONVERTERS[name])
    if hasattr(module, "EXPORT_FORMATS") and hasattr(module, "export"):
      out.append(name)
  return out


def read_json(path: str):
  """The JSON in ``path``; ConversionError naming the file when it is not UTF-8 JSON."""
  import json  # pylint: disable=import-outside-toplevel
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except UnicodeDecodeError as e:
    raise ConversionError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                          f"config files are UTF-8 JSON") from e
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path}: not valid JSON ({e})") from e


def shard_path(src: str, name, index: str) -> str:
  """``SRC/name`` for a shard file an index names; ConversionError unless ``name`` is a
  plain file name inside SRC (no directory part, no ``..``, not absolute, no link out)."""
  import os  # pylint: disable=import-outside-toplevel
  if (not isinstance(name, str) or not name or os.path.isabs(name) or name in (".", "..")
      or os.path.basename(name) != name or (os.altsep and os.altsep in name)):
    raise ConversionError(f"{index}: shard {name!r} is not a plain file name inside "
                          f"{src}; an index names files beside it")
  path = os.path.join(src, name)
  if os.path.dirname(os.path.realpath(path)) != os.path.realpath(src):
    raise ConversionError(f"{index}: shard {name!r} is a link to a file outside {src}")
  return path


def detect_family(src: str) -> str:
  """The family of a source when --family is not given: an HF directory's config.json says
  it (``model_type`` / ``architectures``: LLaDA -> "llada"; Dream's ``model_type`` "Dream"
  or ``DreamModel`` -> "dream"); everything else is a DiT."""
  import os  # pylint: disable=import-outside-toplevel
  cfg_path = os.path.join(src, "config.json")
  if not os.path.isfile(cfg_path):
    return "dit"
  cfg = read_json(cfg_path)
  if not isinstance(cfg, dict):
    return "dit"
  names = [str(cfg.get("model_type", ""))] + [str(a) for a in cfg.get("architectures") or []
                                              if isinstance(cfg.get("architectures"), list)]
  if any("llada" in n.lower() for n in names):
    return "llada"
  if names[0] == "Dream" or "DreamModel" in names[1:]:
    return "dream"
  return "dit"
