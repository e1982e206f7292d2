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

CONVERTERS = {"dit": "convert.dit", "llada": "convert.llada"}
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
