"""The diffusion processes by name: ``config.diffusion.process`` and a checkpoint's
``meta['process']`` (the process contract is :class:`tokendrift_jax.diffusion.base.Process`).

Built in: ``mdlm`` (absorbing state), ``duo`` (uniform state), ``llada`` (LLaDA's masked
process) and ``dream`` (Dream's), each the ``PROCESS`` of its module, imported on first
use, so that reading the
names (checkpoints, ``python -m convert``) imports none of them; :func:`register_process`
adds a process defined elsewhere (a test file, a user's module) under its ``name``.
"""

from __future__ import annotations

from tokendrift_jax import plugins
from tokendrift_jax.diffusion.base import Process

# name -> the module holding that process (its ``PROCESS`` attribute).
BUILTIN = {
    "mdlm": "tokendrift_jax.diffusion.mdlm",
    "duo": "tokendrift_jax.diffusion.duo",
    "llada": "tokendrift_jax.diffusion.llada",
    "dream": "tokendrift_jax.diffusion.dream",
}

REGISTRY = plugins.Registry(
    base=Process, builtin=BUILTIN, attr="PROCESS", noun="diffusion process",
    a_base="a diffusion Process",
    unknown=lambda name, names: f"unknown diffusion process {name!r}; expected one of {names}")
register_process = REGISTRY.register
names = REGISTRY.names
get = REGISTRY.get
