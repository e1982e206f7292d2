"""Converters from released PyTorch checkpoints to tokendrift_jax backbones, one per family.

``python -m convert SRC DST [--family NAME]``: a family's converter is one module, found
here by the family name (``CONVERTERS``), or added with :func:`register`. It provides
``SOURCES`` (the --help text on what SRC may be) and ``load_source(src, *, ema, process,
config_override) -> (params, config, meta)``, raising :class:`ConversionError`; the CLI
writes the result with ``checkpoints.save_backbone``. GPT-2 judges: ``python -m convert.gpt2``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CONVERTERS = {"dit": "convert.dit"}
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
