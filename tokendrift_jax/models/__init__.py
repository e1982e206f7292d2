"""Backbone families: a registry keyed by ``config.model.family`` and family-generic helpers.

A built-in family is one entry of ``_BUILTIN`` (name -> module defining ``FAMILY``), imported
on first use; any other (a test's toy, a user's model) is added with :func:`register`. The
contract a family fulfils is in :mod:`tokendrift_jax.models.base`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from flax import nnx

from tokendrift_jax.models.base import BackboneConfig, Family, FlopModel

_BUILTIN = {"dit": "tokendrift_jax.models.dit", "dream": "tokendrift_jax.models.dream",
            "llada": "tokendrift_jax.models.llada"}
_REGISTRY: dict[str, Family] = {}
# Fields of config.model that say how a backbone computes, not what it is.
COMPUTE_FIELDS = ("family", "dtype", "attention_impl", "remat", "remat_policy", "scan_layers")


def register(family: Family) -> Family:
  """Adds ``family`` (replacing one of the same name); returns it."""
  if not isinstance(family, Family):
    raise TypeError(f"register() takes a models.base.Family, got {type(family).__name__}")
  _REGISTRY[family.name] = family
  return family


def families() -> list[str]:
  """Names of every known family (built-in and registered)."""
  return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_family(name: str) -> Family:
  """The family called ``name``; ValueError naming the known ones otherwise."""
  if name not in _REGISTRY and name in _BUILTIN:
    module = importlib.import_module(_BUILTIN[name])
    register(module.FAMILY)
  if name not in _REGISTRY:
    raise ValueError(f"unknown model family {name!r}; known: {families()}")
  return _REGISTRY[name]


def family_of(config: Any) -> Family:
  """The family whose config class ``config`` is an instance of."""
  for name in families():
    family = get_family(name)
    if type(config) is family.config_cls:  # pylint: disable=unidiomatic-typecheck
      return family
  raise ValueError(f"{type(config).__name__} is the config of no registered model family "
                   f"(known: {families()})")


def config_from_dict(family: str, fields: dict[str, Any]):
  """The architecture of ``family`` from a dict of its fields (unknown ones are errors)."""
  return get_family(family).config_cls.from_dict(dict(fields))


def model_config(model: Any):
  """The architecture that a ``config.model`` section describes.

  ``model.family`` picks the family; the section holds exactly the family's config fields
  and the compute options (:data:`COMPUTE_FIELDS`, not used here). Raises ValueError
  naming a missing or unknown field or a bad value.
  """
  if "family" not in model:
    raise ValueError(f"config.model has no 'family' (one of {families()})")
  name = str(model["family"])
  family = get_family(name)
  fields = [f.name for f in dataclasses.fields(family.config_cls)]
  missing = [f for f in fields if f not in model]
  if missing:
    raise ValueError(f"model.family={name!r} needs the field(s) {missing} in config.model")
  unknown = sorted(set(model.keys()) - set(fields) - set(COMPUTE_FIELDS))
  if unknown:
    raise ValueError(f"config.model has field(s) {unknown} that model.family={name!r} does "
                     f"not have (its fields: {fields}; compute options: {list(COMPUTE_FIELDS)})")
  try:
    return family.config_cls(**{f: model[f] for f in fields})
  except TypeError as e:
    raise ValueError(f"model.family={name!r}: {e}") from e


def build(config, *, rngs: nnx.Rngs, **compute) -> nnx.Module:
  """The backbone module of ``config`` (compute: dtype, attention_impl, remat, ...)."""
  return family_of(config).module_cls(config, rngs=rngs, **compute)


def init_params(config, seed: int = 0) -> dict:
  """Freshly initialised parameters of ``config`` as a pure dict."""
  model = build(config, rngs=nnx.Rngs(seed))
  return nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])


def abstract_params(config) -> dict:
  """ShapeDtypeStruct tree of the parameters, without allocating them."""
  model = nnx.eval_shape(lambda: build(config, rngs=nnx.Rngs(0)))
  return nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])


def graphdef(config, **compute):
  """The NNX graph definition of ``config`` built with the compute options ``compute``."""
  model = nnx.eval_shape(lambda: build(config, rngs=nnx.Rngs(0), **compute))
  return nnx.split(model, nnx.Param)[0]


def merge(gdef, params: dict) -> nnx.Module:
  """A module view of a pure parameter dict (cheap; usable inside jit)."""
  return nnx.merge(gdef, params)


__all__ = ["BackboneConfig", "COMPUTE_FIELDS", "Family", "FlopModel", "abstract_params",
           "build", "config_from_dict", "families", "family_of",
           "get_family", "graphdef", "init_params", "merge", "model_config", "register"]
