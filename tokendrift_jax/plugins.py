"""A registry of plug-in classes found by name: built-in ones imported on first use, others
added with :meth:`Registry.register` (a test file, a user's module).

The objectives (``config.objective``) and the diffusion processes
(``config.diffusion.process``) are each one :class:`Registry`; importing a registry
imports none of its built-in modules, so reading the names is cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable


@dataclasses.dataclass
class Registry:
  """Classes of ``base`` by their ``name`` attribute.

  Attributes:
    base: the contract every entry subclasses.
    builtin: name -> the module holding that class (as its ``attr`` attribute).
    attr: the module attribute naming the class ("OBJECTIVE", "PROCESS").
    noun: how an entry is called in errors ("objective", "diffusion process").
    a_base: the contract with its article, in errors ("an Objective").
    unknown: the error message for a name that is not registered, given (name, names).
  """
  base: type
  builtin: dict[str, str]
  attr: str
  noun: str
  a_base: str
  unknown: Callable[[str, tuple[str, ...]], str]
  registered: dict[str, type] = dataclasses.field(default_factory=dict)

  def register(self, cls: type) -> type:
    """Registers ``cls`` under ``cls.name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, self.base)) or not cls.name:
      raise TypeError(f"{cls!r} is not {self.a_base} subclass with a name")
    if cls.name in self.builtin:
      raise ValueError(f"{self.noun} {cls.name!r} is built in")
    self.registered[cls.name] = cls
    return cls

  def names(self) -> tuple[str, ...]:
    """Every name: the built-in ones, then the registered ones."""
    return tuple(self.builtin) + tuple(n for n in self.registered if n not in self.builtin)

  def get(self, name: str) -> type:
    """The class registered as ``name`` (ValueError :attr:`unknown` otherwise)."""
    if name in self.registered:
      return self.registered[name]
    if name not in self.builtin:
      raise ValueError(self.unknown(name, self.names()))
    return getattr(importlib.import_module(self.builtin[name]), self.attr)
