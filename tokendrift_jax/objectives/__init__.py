"""Training objectives, one file each, found by ``config.objective`` (the objective contract is
:class:`tokendrift_jax.objectives.base.Objective`).

Built in: ``continuation`` (the backbone's own diffusion loss), ``drift`` (TokenDrift),
``sdtt`` (self-distillation through time, MDLM) and ``dcd`` (DUO's discrete consistency
distillation). The built-in files are imported on first use, so importing this package
pulls in none of them; :func:`register` adds an objective defined elsewhere (a test file,
a user's module) under its ``name``.
"""

from __future__ import annotations

import importlib

from tokendrift_jax.objectives.base import Objective

# config.objective -> the module holding that objective (its ``OBJECTIVE`` attribute).
BUILTIN = {
    "continuation": "tokendrift_jax.objectives.continuation",
    "drift": "tokendrift_jax.objectives.tokendrift",
    "sdtt": "tokendrift_jax.objectives.sdtt",
    "dcd": "tokendrift_jax.objectives.dcd",
}

_REGISTERED: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
  """Registers ``cls`` under ``cls.name`` (usable as a class decorator)."""
  if not (isinstance(cls, type) and issubclass(cls, Objective)) or not cls.name:
    raise TypeError(f"{cls!r} is not an Objective subclass with a name")
  if cls.name in BUILTIN:
    raise ValueError(f"objective {cls.name!r} is built in")
  _REGISTERED[cls.name] = cls
  return cls


def names() -> tuple[str, ...]:
  """Every objective ``config.objective`` may name."""
  return tuple(BUILTIN) + tuple(n for n in _REGISTERED if n not in BUILTIN)


def get(name: str) -> type[Objective]:
  """The objective class registered as ``name`` (ValueError listing the names)."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in BUILTIN:
    raise ValueError(f"config.objective must be one of {names()}, got {name!r}")
  return importlib.import_module(BUILTIN[name]).OBJECTIVE


def from_config(config, model_cfg, process) -> Objective:
  """The objective of a run config, built from its section (ValueError naming the field)."""
  return get(str(config.objective)).from_config(config, model_cfg, process)


__all__ = ["BUILTIN", "Objective", "from_config", "get", "names", "register"]
