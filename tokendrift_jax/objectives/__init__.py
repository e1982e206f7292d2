"""Training objectives, one file each, found by ``config.objective`` (the objective contract is
:class:`tokendrift_jax.objectives.base.Objective`).

Built in: ``continuation`` (the backbone's own diffusion loss), ``drift`` (TokenDrift),
``sdtt`` (self-distillation through time, MDLM) and ``dcd`` (DUO's discrete consistency
distillation). The built-in files are imported on first use, so importing this package
pulls in none of them; :func:`register` adds an objective defined elsewhere (a test file,
a user's module) under its ``name``.
"""

from __future__ import annotations

from tokendrift_jax import plugins
from tokendrift_jax.objectives.base import Objective

# config.objective -> the module holding that objective (its ``OBJECTIVE`` attribute).
BUILTIN = {
    "continuation": "tokendrift_jax.objectives.continuation",
    "drift": "tokendrift_jax.objectives.tokendrift",
    "sdtt": "tokendrift_jax.objectives.sdtt",
    "dcd": "tokendrift_jax.objectives.dcd",
}

REGISTRY = plugins.Registry(
    base=Objective, builtin=BUILTIN, attr="OBJECTIVE", noun="objective", a_base="an Objective",
    unknown=lambda name, names: f"config.objective must be one of {names}, got {name!r}")
register = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get


def check_config(config) -> None:
  """The value checks of the section of the objective ``config.objective`` names
  (:meth:`Objective.check_section`): ValueError naming ``config.<section>.<field>``."""
  objective = get(str(config.objective))
  if objective.section is not None:
    objective.check_section(config.get(objective.section, None))


def from_config(config, model_cfg, process) -> Objective:
  """The objective of a run config, built from its section (ValueError naming the field)."""
  return get(str(config.objective)).from_config(config, model_cfg, process)


__all__ = ["BUILTIN", "Objective", "REGISTRY", "check_config", "from_config", "get", "names",
           "register"]
