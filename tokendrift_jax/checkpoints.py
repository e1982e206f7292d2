"""Backbone checkpoints: an orbax directory holding a backbone's parameters and architecture.

Layout of a backbone checkpoint directory (written by ``python -m convert`` and by
training exports)::

  DIR/
    params/    orbax StandardSave of the parameter tree (float32)
    config/    orbax JsonSave: {"format", "family", "model": the family's config fields,
                                "meta": {...}}

``family`` names the model family (:mod:`tokendrift_jax.models`); ``meta["process"]`` the
diffusion process the weights were trained for ("mdlm": masked, "duo": uniform, "llada":
LLaDA's masked process), beside
where the weights came from (source path, whether EMA weights were taken, ...). A loader
needs nothing but the directory.

Checkpoints written before families existed have no ``family`` (they are all DiTs) and
name the process ``meta["arch"]``; reading normalises both.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from tokendrift_jax import fs, models
from tokendrift_jax.diffusion import registry as process_registry

FORMAT = fs.BACKBONE_FORMAT  # "tokendrift_jax.backbone/v1"
LEGACY_FAMILY = "dit"   # the only family before the registry


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


def check_param_shapes(config, params: dict, where: str) -> None:
  """Raises CheckpointError naming every parameter whose shape disagrees with config."""
  want = jax.tree_util.tree_flatten_with_path(models.abstract_params(config))[0]
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


def normalize_meta(meta: dict, where: str) -> dict:
  """``meta`` with ``process`` set (from the legacy ``arch`` when absent) and checked."""
  meta = dict(meta)
  legacy = meta.pop("arch", None)
  if "process" not in meta:
    meta["process"] = legacy
  elif legacy is not None and legacy != meta["process"]:
    raise CheckpointError(f"{where}: meta names the process {meta['process']!r} and, as "
                          f"'arch', {legacy!r}; which one the weights belong to is ambiguous")
  if meta["process"] not in (None,) + process_registry.names():
    raise CheckpointError(f"{where}: meta['process'] must be one of "
                          f"{process_registry.names()}, got "
                          f"{meta['process']!r}")
  return meta


def checkpoint_process(meta: dict, where: str) -> str:
  """The diffusion process a checkpoint's (normalised) meta records; CheckpointError if none."""
  process = meta.get("process")
  if process is None:
    raise CheckpointError(f"{where}: the checkpoint does not record its diffusion process "
                          f"(meta['process'] is missing; expected one of "
                          f"{process_registry.names()}); "
                          f"convert it again with `python -m convert SRC DST --process ...`")
  return process


def save_backbone(path: str | os.PathLike, config, params: dict, *,
                  meta: dict[str, Any] | None = None, force: bool = False) -> str:
  """Writes a backbone checkpoint, write-new-then-swap.

  The checkpoint is written to a temporary sibling of ``path`` and renamed into place only
  when complete; an existing ``path`` (``force``) is moved aside, and removed only once the
  new one is in place, so any failure leaves it exactly as it was (and no temporaries).
  The destination is checked (parent a directory, writable, free space for the weights)
  before anything is written. Missing parent directories are created. Every process of a
  multi-process run calls this collectively (process 0 does the swap).

  Raises:
    CheckpointError: ``path`` exists and ``force`` is False, params mismatch config, the
      destination cannot be written (one line naming path and reason), or the write failed.
  """
  path = os.path.abspath(os.fspath(path))
  check_param_shapes(config, params, "save_backbone")
  try:   # an existing path: only with force, and only an earlier checkpoint (or empty)
    fs.check_replace(path, force=force, kind="dir")
  except fs.DestinationError as e:
    raise CheckpointError(str(e)) from e
  meta = normalize_meta(meta or {}, "save_backbone")
  payload = {"format": FORMAT, "family": models.family_of(config).name,
             "model": config.to_dict(), "meta": meta}
  storage = _to_storage(params)
  need = int(sum(np.asarray(a).nbytes for a in jax.tree.leaves(storage))) + fs.MiB
  try:
    fs.check_writable_destination(path, kind="dir", need_bytes=need)
  except fs.DestinationError as e:
    raise CheckpointError(str(e)) from e
  existed = os.path.lexists(path)

  def write(tmp):
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
      # Never orbax's force=True: it deletes the destination before writing.
      ckptr.save(tmp, args=ocp.args.Composite(params=ocp.args.StandardSave(storage),
                                              config=ocp.args.JsonSave(payload)))

  try:
    if jax.process_count() == 1:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fs.write_then_swap(path, write, label="saving")
    else:
      _save_collectively(path, write)
  except (OSError, ValueError) as e:
    if isinstance(e, CheckpointError):
      raise
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    left = ("the existing checkpoint there is left as it was" if existed
            else "nothing was written")
    raise CheckpointError(f"{path}: writing the checkpoint failed ({type(e).__name__}: "
                          f"{reason}); {left}") from e
  return path


def _save_collectively(path: str, write) -> None:
  """write_then_swap across processes: all write the same temporary (orbax coordinates the
  write), process 0 swaps it in, and every process learns whether that succeeded."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  tag = int(multihost_utils.broadcast_one_to_all(
      np.int32(int.from_bytes(os.urandom(3), "little"))))
  tmp = fs.sibling(path, "saving", f"{tag:06x}") + ".tmp"
  primary = jax.process_index() == 0
  if primary:
    os.makedirs(os.path.dirname(path), exist_ok=True)
  ok = False
  try:
    write(tmp)
    if primary:
      fs.swap_into_place(tmp, path, tag=f"{tag:06x}")
    ok = True
  finally:
    if primary:
      fs.remove_with_leftovers(tmp)
    all_ok = bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))
  if ok and not all_ok:
    raise CheckpointError(f"{path}: process 0 could not put the checkpoint in place; the "
                          f"existing checkpoint there (if any) is left as it was")


def read_backbone_config(path: str | os.PathLike) -> tuple[Any, dict]:
  """(architecture, meta) of a backbone checkpoint, without reading the weights.

  ``meta`` is normalised: ``meta["family"]`` is the model family and ``meta["process"]``
  the diffusion process or None (see :func:`checkpoint_process`).
  """
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
  family = payload.get("family", LEGACY_FAMILY)
  try:
    config = models.config_from_dict(family, payload["model"])
  except ValueError as e:
    raise CheckpointError(f"{path}: {e}") from e
  meta = normalize_meta(payload.get("meta", {}), path)
  meta["family"] = family
  return config, meta


def load_backbone_params(path: str | os.PathLike) -> tuple[Any, dict, dict]:
  """(config, params as a pure dict of numpy float32 arrays, meta)."""
  path = os.path.abspath(os.fspath(path))
  config, meta = read_backbone_config(path)
  target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), models.abstract_params(config))
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

  The raw network output (before SUBS or log-softmax); for the DiT equal to PyTorch
  ``DIT.forward(indices, sigma)`` with sigma zeroed when the checkpoint is not
  time-conditioned. Attributes: ``config``, ``meta``, ``params``, ``graphdef``.
  """

  def __init__(self, config, params: dict, meta: dict, *, dtype=jnp.float32,
               attention_impl: str | None = None):
    self.config, self.meta = config, meta
    self.params = jax.tree.map(jnp.asarray, params)
    self.graphdef = models.graphdef(config, dtype=dtype, attention_impl=attention_impl)
    gdef = self.graphdef
    self._fn = jax.jit(lambda p, ids, sigma: models.merge(gdef, p)(ids, sigma))

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
