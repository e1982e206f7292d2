"""The diffusion processes by name: ``config.diffusion.process`` and a checkpoint's
``meta['process']`` (the process contract is :class:`tokendrift_jax.diffusion.base.Process`).

Built in: ``mdlm`` (absorbing state), ``duo`` (uniform state) and ``llada`` (LLaDA's masked
process), each the ``PROCESS`` of its module, imported on first use, so that reading the
names (checkpoints, ``python -m convert``) imports none of them; :func:`register_process`
adds a process defined elsewhere (a test file, a user's module) under its ``name``.
"""

from __future__ import annotations

import importlib

from tokendrift_jax.diffusion.base import Process

# name -> the module holding that process (its ``PROCESS`` attribute).
BUILTIN = {
    "mdlm": "tokendrift_jax.diffusion.mdlm",
    "duo": "tokendrift_jax.diffusion.duo",
    "llada": "tokendrift_jax.diffusion.llada",
}

_REGISTERED: dict[str, type[Process]] = {}


def register_process(cls: type[Process]) -> type[Process]:
  """Registers ``cls`` under ``cls.name`` (usable as a class decorator)."""
  if not (isinstance(cls, type) and issubclass(cls, Process)) or not cls.name:
    raise TypeError(f"{cls!r} is not a diffusion Process subclass with a name")
  if cls.name in BUILTIN:
    raise ValueError(f"diffusion process {cls.name!r} is built in")
  _REGISTERED[cls.name] = cls
  return cls


def names() -> tuple[str, ...]:
  """Every process ``config.diffusion.process`` (and a checkpoint's meta) may name."""
  return tuple(BUILTIN) + tuple(n for n in _REGISTERED if n not in BUILTIN)


def get(name: str) -> type[Process]:
  """The process class registered as ``name`` (ValueError listing the names)."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in BUILTIN:
    raise ValueError(f"unknown diffusion process {name!r}; expected one of {names()}")
  return importlib.import_module(BUILTIN[name]).PROCESS
