"""Device mesh and sharding rules: the one place where placement is decided.

The mesh has two named axes, ``data`` and ``fsdp`` (MaxText's names):

* a batch is split over *both* axes (every device sees different sequences; with
  ``fsdp = 1`` this is plain data parallelism);
* parameters and optimizer state are either replicated, or their largest axis that
  divides evenly is split over ``fsdp`` (ZeRO-3 style), see :func:`param_sharding`.

Everything that places arrays (train step, samplers, evaluators) asks this module.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
FSDP = "fsdp"
MESH_AXES = (DATA, FSDP)
BATCH_AXES = (DATA, FSDP)


def make_mesh(shape: Sequence[int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
  """Builds a (data, fsdp) mesh.

  Args:
    shape: (data, fsdp) sizes; ``None`` or (-1, 1) puts every device on ``data``. One
      entry may be -1 and is inferred.
    devices: devices to use (default: all global devices, so the same call works on one
      process or many).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  shape = [-1, 1] if shape is None else list(shape)
  if len(shape) != 2:
    raise ValueError(f"mesh shape must be (data, fsdp), got {tuple(shape)}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {tuple(shape)} has more than one -1")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if n % known:
      raise ValueError(f"mesh shape {tuple(shape)} does not divide {n} devices")
    shape[shape.index(-1)] = n // known
  if math.prod(shape) != n:
    raise ValueError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, have {n}")
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES)


def mesh_from_config(mesh_cfg: Any) -> Mesh:
  """The mesh a ``config.mesh`` section asks for (``shape``; ``num_devices`` > 0 keeps the
  first N devices, single-process runs only). ValueError naming the field otherwise."""
  n = int(mesh_cfg.get("num_devices", 0) or 0)
  devices = jax.devices()
  if n > 0:
    if jax.process_count() > 1:
      raise ValueError("config.mesh.num_devices applies to single-process runs only")
    if n > len(devices):
      raise ValueError(f"config.mesh.num_devices={n} but only {len(devices)} devices exist")
    devices = devices[:n]
  try:
    return make_mesh(tuple(mesh_cfg.shape), devices)
  except ValueError as e:
    raise ValueError(f"config.mesh: {e}") from e


def num_batch_shards(mesh: Mesh) -> int:
  return mesh.shape[DATA] * mesh.shape[FSDP]


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis split over every device; other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(batch: int, mesh: Mesh, what: str = "batch") -> None:
  n = num_batch_shards(mesh)
  if batch % n:
    raise ValueError(
        f"{what} {batch} is not divisible by the {n} batch shards of the mesh "
        f"{dict(mesh.shape)}; pick a multiple of {n}")


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  if fsdp == 1 or math.prod(shape) < min_size:
    return P()
  # Split the largest axis that the fsdp size divides; ties go to the first axis.
  order = sorted(range(len(shape)), key=lambda i: -shape[i])
  for i in order:
    if shape[i] % fsdp == 0:
      spec = [None] * len(shape)
      spec[i] = FSDP
      return P(*spec)
  return P()


def param_sharding(tree: Any, mesh: Mesh, mode: str = "replicated", min_size: int = 2 ** 14) -> Any:
  """Sharding for every array leaf of ``tree`` (params, optimizer state, EMA).

  Args:
    mode: ``"replicated"`` or ``"fsdp"`` (split the largest evenly divisible axis over
      the ``fsdp`` mesh axis; arrays under ``min_size`` elements stay replicated).
  """
  if mode not in ("replicated", "fsdp"):
    raise ValueError(f"param sharding mode must be 'replicated' or 'fsdp', got {mode!r}")
  fsdp = mesh.shape[FSDP]

  def one(x):
    shape = tuple(getattr(x, "shape", ()))
    spec = P() if mode == "replicated" else _fsdp_spec(shape, fsdp, min_size)
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, tree)


def to_global(tree: Any, shardings: Any) -> Any:
  """Host arrays, identical on every process, as global ``jax.Array``s with ``shardings``.

  Each process fills only its addressable shards, so this works on one process and on
  many; ``jax.device_put`` of a host array onto devices of other processes would need a
  cross-host transfer, which the CPU and GPU backends do not offer. ``shardings`` is one
  sharding for every leaf or a tree matching ``tree``.
  """
  def one(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: one(x, shardings), tree)
  return jax.tree.map(one, tree, shardings)


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly batch-sharded over several processes) array as a full host array.

  Every process must call it (it is a collective when the array spans processes).
  """
  if not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
