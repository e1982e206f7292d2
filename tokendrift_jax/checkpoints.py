"""Backbone checkpoints: an orbax directory holding the DiT parameters and architecture.

Layout of a backbone checkpoint directory (written by ``python -m convert`` and by
training exports)::

  DIR/
    params/    orbax StandardSave of the parameter tree (float32)
    config/    orbax JsonSave: {"format", "model": DiTConfig fields, "meta": {...}}

``meta`` records where the weights came from (source path, arch "mdlm" | "duo", whether
EMA weights were taken). A loader needs nothing but the directory.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from tokendrift_jax.models.dit import DiT, DiTConfig

FORMAT = "tokendrift_jax.backbone/v1"
ARCHES = ("mdlm", "duo")


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or does not match what was asked for."""


# Param trees keep NNX's integer keys for list entries in memory; orbax wants strings.
def _to_storage(tree):
  if isinstance(tree, dict):
    return {str(k): _to_storage(v) for k, v in tree.items()}
  return np.asarray(tree)


def _from_storage(tree):
  if isinstance(tree, dict):
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): _from_storage(v)
            for k, v in tree.items()}
  return tree


def init_params(config: DiTConfig, seed: int = 0) -> dict:
  """Freshly initialised parameters (the PyTorch init of the original) as a pure dict."""
  model = DiT(config, rngs=nnx.Rngs(seed))
  return nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])


def abstract_params(config: DiTConfig) -> dict:
  """ShapeDtypeStruct tree of the parameters, without allocating them."""
  model = nnx.eval_shape(lambda: DiT(config, rngs=nnx.Rngs(0)))
  return nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])


def graphdef(config: DiTConfig, *, dtype=jnp.float32, attention_impl: str | None = None,
             remat: bool = False, remat_policy: str = "", scan_layers: bool = False):
  """The NNX graph definition for ``config`` (no parameters allocated)."""
  model = nnx.eval_shape(lambda: DiT(config, dtype=dtype, attention_impl=attention_impl,
                                     remat=remat, remat_policy=remat_policy,
                                     scan_layers=scan_layers, rngs=nnx.Rngs(0)))
  return nnx.split(model, nnx.Param)[0]


def merge(gdef, params: dict) -> DiT:
  """A DiT module view of a pure parameter dict (cheap; usable inside jit)."""
  return nnx.merge(gdef, params)


def check_param_shapes(config: DiTConfig, params: dict, where: str) -> None:
  """Raises CheckpointError naming every parameter whose shape disagrees with config."""
  want = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
  have = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  problems = []
  for path, spec in want:
    name = jax.tree_util.keystr(path)
    if path not in have:
      problems.append(f"missing {name}")
    elif tuple(np.shape(have[path])) != tuple(spec.shape):
      problems.append(f"{name}: checkpoint {tuple(np.shape(have[path]))} vs "
                      f"config {tuple(spec.shape)}")
  extra = set(have) - {p for p, _ in want}
  problems += [f"unexpected {jax.tree_util.keystr(p)}" for p in sorted(extra, key=str)]
  if problems:
    raise CheckpointError(f"{where}: parameters do not match the architecture {config}: "
                          + "; ".join(problems[:8])
                          + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))


def save_backbone(path: str | os.PathLike, config: DiTConfig, params: dict, *,
                  meta: dict[str, Any] | None = None, force: bool = False) -> str:
  """Writes a backbone checkpoint atomically (orbax writes to a temporary dir and renames).

  Raises:
    CheckpointError: ``path`` exists and ``force`` is False, or params mismatch config.
  """
  path = os.path.abspath(os.fspath(path))
  check_param_shapes(config, params, "save_backbone")
  if os.path.exists(path) and not force:
    raise CheckpointError(f"{path} already exists; pass --force to overwrite")
  meta = dict(meta or {})
  if meta.get("arch") not in (None,) + ARCHES:
    raise CheckpointError(f"meta['arch'] must be one of {ARCHES}, got {meta.get('arch')!r}")
  payload = {"format": FORMAT, "model": config.to_dict(), "meta": meta}
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path,
               args=ocp.args.Composite(params=ocp.args.StandardSave(_to_storage(params)),
                                       config=ocp.args.JsonSave(payload)),
               force=force)
  return path


def read_backbone_config(path: str | os.PathLike) -> tuple[DiTConfig, dict]:
  """(architecture, meta) of a backbone checkpoint, without reading the weights."""
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise CheckpointError(f"no backbone checkpoint at {path} (not a directory); create one "
                          f"with `python -m convert SRC {path}`")
  if not os.path.isdir(os.path.join(path, "config")) or not os.path.isdir(
      os.path.join(path, "params")):
    raise CheckpointError(f"{path} is not a tokendrift_jax backbone checkpoint (expected "
                          f"'params/' and 'config/' inside); create one with "
                          f"`python -m convert SRC {path}`")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    payload = ckptr.restore(path, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
        "config"]
  if not isinstance(payload, dict) or payload.get("format") != FORMAT:
    raise CheckpointError(f"{path}: unknown checkpoint format "
                          f"{payload.get('format') if isinstance(payload, dict) else payload!r}")
  return DiTConfig.from_dict(payload["model"]), dict(payload.get("meta", {}))


def load_backbone_params(path: str | os.PathLike) -> tuple[DiTConfig, dict, dict]:
  """(config, params as a pure dict of numpy float32 arrays, meta)."""
  path = os.path.abspath(os.fspath(path))
  config, meta = read_backbone_config(path)
  target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_params(config))
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    try:
      restored = ckptr.restore(path, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_to_storage(target))))["params"]
    except (ValueError, KeyError) as e:
      raise CheckpointError(f"{path}: parameters do not match the stored architecture "
                            f"{config}: {e}") from e
  params = jax.tree.map(np.asarray, _from_storage(dict(restored)))
  check_param_shapes(config, params, path)
  return config, params, meta


class Backbone:
  """A loaded backbone: ``f(input_ids int32[B, L], sigma float32[B]) -> float32[B, L, V]``.

  The raw DiT output (before SUBS or log-softmax), equal to PyTorch
  ``DIT.forward(indices, sigma)`` with sigma zeroed when the checkpoint is not
  time-conditioned. Attributes: ``config``, ``meta``, ``params``, ``graphdef``.
  """

  def __init__(self, config: DiTConfig, params: dict, meta: dict, *, dtype=jnp.float32,
               attention_impl: str | None = None):
    self.config, self.meta = config, meta
    self.params = jax.tree.map(jnp.asarray, params)
    self.graphdef = graphdef(config, dtype=dtype, attention_impl=attention_impl)
    gdef = self.graphdef
    self._fn = jax.jit(lambda p, ids, sigma: merge(gdef, p)(ids, sigma))

  def __call__(self, input_ids, sigma) -> jax.Array:
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids must be int[B, L], got shape {tuple(input_ids.shape)}")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f"input_ids must be integer, got {input_ids.dtype}")
    sigma = jnp.asarray(sigma, jnp.float32)
    if sigma.shape != (input_ids.shape[0],):
      raise ValueError(f"sigma must be float32[{input_ids.shape[0]}], got shape "
                       f"{tuple(sigma.shape)}")
    return self._fn(self.params, input_ids.astype(jnp.int32), sigma)


def load_backbone(path: str | os.PathLike, *, dtype=jnp.float32,
                  attention_impl: str | None = None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Loads a converted checkpoint as ``f(input_ids: int32[B, L], sigma: float32[B])``.

  Returns float32[B, L, V] raw logits. ``dtype`` selects the compute dtype (float32 or
  bfloat16; parameters stay float32).
  """
  config, params, meta = load_backbone_params(path)
  return Backbone(config, params, meta, dtype=dtype, attention_impl=attention_impl)
