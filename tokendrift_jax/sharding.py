"""Device mesh and sharding rules: the one place where placement is decided.

The mesh has three named axes, ``data``, ``fsdp`` and ``tensor`` (MaxText's names):

* a batch is split over ``data`` and ``fsdp`` (every device of a (data, fsdp) group sees
  different sequences; with ``fsdp = 1`` this is plain data parallelism); the ``tensor``
  axis sees the same rows, it splits the weights (and so the work) of each layer;
* parameters, optimizer moments and EMA are placed by one of three modes
  (:data:`PARAM_SHARDING_MODES`, ``config.mesh.param_sharding``): ``"replicated"``;
  ``"fsdp"``, the size heuristic of :func:`param_sharding` (the largest evenly divisible
  axis over ``fsdp``, ZeRO-3 style); ``"rules"``, the family's logical axes through the
  table :data:`LOGICAL_AXIS_RULES` (MaxText style: a parameter names what each of its dims
  is, the table says which mesh axis splits that kind of dim), see :func:`rules_sharding`.

A two-entry mesh shape (data, fsdp) is the three-axis mesh with ``tensor = 1``: every
config written before the tensor axis builds the same placement.

Everything that places arrays (train step, samplers, evaluators) asks this module.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)
BATCH_AXES = (DATA, FSDP)
PARAM_SHARDING_MODES = ("replicated", "fsdp", "rules")

# The vocabulary of logical dim names a family's ``logical_axes`` may use (None = a dim
# that no rule splits, e.g. a 1-D scale or the conditioning width).
LOGICAL_NAMES = ("vocab", "embed", "heads", "kv_heads", "mlp", "layers")

# Logical name -> the mesh axis that splits such a dim (None: kept whole). Megatron-style
# tensor parallelism: the dims that index heads, MLP hidden units and vocabulary entries
# are split over ``tensor``, so each tensor shard computes its heads / hidden units /
# logits from the whole residual stream; the model width ``embed`` is split over ``fsdp``
# (ZeRO-3: gathered before use, gradients reduce-scattered). ``layers`` (a stacked layer
# axis) stays whole: there is no pipeline axis.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("vocab", TENSOR),
    ("heads", TENSOR),
    ("kv_heads", TENSOR),
    ("mlp", TENSOR),
    ("embed", FSDP),
    ("layers", None),
)

LogicalAxesFn = Callable[[tuple[str, ...], tuple[int, ...]], tuple[str | None, ...]]


def make_mesh(shape: Sequence[int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh.

  Args:
    shape: (data, fsdp) or (data, fsdp, tensor) sizes; two entries mean ``tensor = 1``.
      ``None`` or (-1, 1) puts every device on ``data``. One entry may be -1 and is
      inferred.
    devices: devices to use (default: all global devices, so the same call works on one
      process or many). They fill the mesh in order, ``tensor`` varying fastest, so a
      tensor group is made of neighbouring devices (one host, one NVLink domain).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  shape = [-1, 1] if shape is None else list(shape)
  if len(shape) not in (2, 3):
    raise ValueError(f"mesh shape must be (data, fsdp) or (data, fsdp, tensor), "
                     f"got {tuple(shape)}")
  if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or (s < 1 and s != -1)
         for s in shape):
    raise ValueError(f"mesh shape {tuple(shape)} must hold positive ints or one -1")
  shape = [int(s) for s in shape] + [1] * (3 - len(shape))
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


def process_count(devices: Sequence[Any]) -> int:
  """How many processes (hosts) the devices belong to: ``jax.process_count()`` for
  ``jax.devices()``; for a compile-only topology, the hosts of that slice."""
  return len({d.process_index for d in devices})


def mesh_from_config(mesh_cfg: Any, devices: Sequence[Any] | None = None) -> Mesh:
  """The mesh a ``config.mesh`` section asks for (``shape``; ``num_devices`` > 0 keeps the
  first N devices, single-process runs only). ValueError naming the field otherwise.

  ``devices``: the devices to build it from (default ``jax.devices()``; a compilation
  target's compile-only devices, ``perf/targets.py``)."""
  n = int(mesh_cfg.get("num_devices", 0) or 0)
  nprocs = jax.process_count() if devices is None else process_count(devices)
  devices = jax.devices() if devices is None else list(devices)
  if n > 0:
    if nprocs > 1:
      raise ValueError("config.mesh.num_devices applies to single-process runs only")
    if n > len(devices):
      raise ValueError(f"config.mesh.num_devices={n} but only {len(devices)} devices exist")
    devices = devices[:n]
  try:
    return make_mesh(tuple(mesh_cfg.shape), devices)
  except ValueError as e:
    raise ValueError(f"config.mesh: {e}") from e


def num_batch_shards(mesh: Mesh) -> int:
  """How many different row blocks a batch is split into (data x fsdp; not tensor)."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis split over (data, fsdp); other axes whole; the same rows on
  every device of a tensor group."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
  """Inside jit: ``x`` [B, ...] constrained to :func:`batch_sharding` (identity without a
  mesh), so every sampler and step places its per-row arrays by the same rule."""
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(batch: int, mesh: Mesh, what: str = "batch") -> None:
  n = num_batch_shards(mesh)
  if batch % n:
    raise ValueError(
        f"{what} {batch} is not divisible by the {n} batch shards of the mesh "
        f"{dict(mesh.shape)}; pick a multiple of {n}")


# ----------------------------------------------------------------------------- "fsdp" mode


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


# ----------------------------------------------------------------------------- "rules" mode


def path_names(key_path: Sequence[Any]) -> tuple[str, ...]:
  """A jax key path (dict keys, sequence indices, attributes) as a tuple of strings."""
  out = []
  for k in key_path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
    else:
      out.append(str(k))
  return tuple(out)


def _rules_dict(rules) -> dict[str, str | None]:
  table = dict(rules)
  for name, axis in table.items():
    if axis is not None and axis not in MESH_AXES:
      raise ValueError(f"logical-axis rule {name!r} -> {axis!r}: not a mesh axis {MESH_AXES}")
  return table


def _checked_names(names, path: tuple[str, ...], shape: tuple[int, ...],
                   table: dict[str, str | None]) -> tuple[str | None, ...]:
  where = "/".join(path)
  if not isinstance(names, tuple) or len(names) != len(shape):
    raise ValueError(f"logical_axes of {where!r} with shape {shape} must be a tuple of "
                     f"{len(shape)} names, got {names!r}")
  for name in names:
    if name is not None and name not in table:
      raise ValueError(f"logical_axes of {where!r} names {name!r}, which no rule maps "
                       f"(known: {sorted(table)})")
  return names


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_AXIS_RULES) -> P:
  """The PartitionSpec of an array of ``shape`` whose dims are called ``names``.

  Dim i is split over the mesh axis ``rules[names[i]]`` when that axis divides it and no
  earlier dim of the same array took the axis; otherwise the dim stays whole (a mesh axis
  appears at most once in a spec, and an uneven split is never made). :func:`unsplit_dims`
  lists the dims a rule maps but that stay whole.
  """
  table = _rules_dict(rules)
  names = _checked_names(tuple(names), ("<array>",), tuple(shape), table)
  used: set[str] = set()
  spec = []
  for name, size in zip(names, shape):
    axis = None if name is None else table[name]
    if axis is None or axis in used or size % mesh.shape[axis]:
      spec.append(None)
    else:
      spec.append(axis)
      used.add(axis)
  return P(*spec)


def _leaf_names(logical_axes: LogicalAxesFn, path, leaf, table):
  shape = tuple(getattr(leaf, "shape", ()))
  names = tuple(logical_axes(path, shape))
  return _checked_names(names, path, shape, table), shape


def rules_sharding(tree: Any, mesh: Mesh, logical_axes: LogicalAxesFn,
                   rules=LOGICAL_AXIS_RULES) -> Any:
  """NamedSharding of every array leaf of a parameter ``tree`` by logical-axis rules.

  Args:
    tree: the pure parameter dict (arrays or ShapeDtypeStructs).
    logical_axes: ``(path, shape) -> names``, one name of :data:`LOGICAL_NAMES` (or None)
      per dim; ``path`` is the leaf's key path as strings, e.g.
      ``("blocks", "0", "attn_qkv", "kernel")`` (a family's ``Family.logical_axes``).
    rules: (logical name, mesh axis or None) pairs, :data:`LOGICAL_AXIS_RULES` by default.

  A dim whose rule names a mesh axis that does not divide it, or that an earlier dim of
  the same leaf already uses, stays whole (see :func:`logical_to_spec`); ValueError naming
  the leaf for a wrong number of names or an unknown name.
  """
  table = _rules_dict(rules)

  def one(key_path, leaf):
    path = path_names(key_path)
    names, shape = _leaf_names(logical_axes, path, leaf, table)
    return NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))

  return jax.tree_util.tree_map_with_path(one, tree)


def unsplit_dims(tree: Any, mesh: Mesh, logical_axes: LogicalAxesFn,
                 rules=LOGICAL_AXIS_RULES) -> list[str]:
  """One line per dim that a rule maps to a mesh axis of size > 1 but that stays whole
  (the axis does not divide it, or the leaf already uses the axis), e.g.
  ``"output_layer/linear/kernel dim 1 (vocab -> tensor): 33 % 4 != 0"``."""
  table = _rules_dict(rules)
  lines = []
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    path = path_names(key_path)
    names, shape = _leaf_names(logical_axes, path, leaf, table)
    spec = tuple(logical_to_spec(names, shape, mesh, rules))
    spec = spec + (None,) * (len(shape) - len(spec))
    for i, (name, size) in enumerate(zip(names, shape)):
      axis = None if name is None else table[name]
      if axis is None or mesh.shape[axis] == 1 or spec[i] == axis:
        continue
      why = (f"{size} % {mesh.shape[axis]} != 0" if size % mesh.shape[axis]
             else f"{axis} already splits another dim")
      lines.append(f"{'/'.join(path)} dim {i} ({name} -> {axis}): {why}")
  return lines


def like_params(tree: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
  """Shardings of a tree that holds copies of the parameter tree (an optax state).

  Every subtree of ``tree`` with the structure and shapes of ``params`` (Adam's ``mu`` and
  ``nu``, in any dtype) gets ``param_shardings``; every other leaf (step counts) is
  replicated.
  """
  structure = jax.tree.structure(params)
  shapes = [tuple(getattr(x, "shape", ())) for x in jax.tree.leaves(params)]

  def is_param_copy(x):
    if x is None or jax.tree.structure(x) != structure:
      return False
    return [tuple(getattr(y, "shape", ())) for y in jax.tree.leaves(x)] == shapes

  rep = replicated(mesh)
  return jax.tree.map(lambda x: param_shardings if is_param_copy(x) else rep, tree,
                      is_leaf=is_param_copy)


# ----------------------------------------------------------------------------- entry point


def check_placement(mode: str, mesh: Mesh, logical_axes: LogicalAxesFn | None,
                    family: str) -> LogicalAxesFn | None:
  """The ``logical_axes`` that parameter placement ``mode`` uses (None unless "rules").

  ValueError (naming ``config.mesh.param_sharding``) for an unknown mode, for "rules" with a
  family that defines no logical axes, and for a tensor axis > 1 with a mode that splits
  nothing over it (every tensor shard would repeat the same work).
  """
  if mode not in PARAM_SHARDING_MODES:
    raise ValueError(f"config.mesh.param_sharding must be one of {PARAM_SHARDING_MODES}, "
                     f"got {mode!r}")
  if mode != "rules":
    if mesh.shape[TENSOR] > 1:
      raise ValueError(f"config.mesh.shape {tuple(mesh.devices.shape)} has tensor="
                       f"{mesh.shape[TENSOR]} but param_sharding={mode!r} splits nothing "
                       f"over it; use param_sharding='rules'")
    return None
  if logical_axes is None:
    raise ValueError(f"config.mesh.param_sharding='rules' but model family {family!r} "
                     f"defines no logical_axes")
  return logical_axes


def param_sharding(tree: Any, mesh: Mesh, mode: str = "replicated", min_size: int = 2 ** 14,
                   *, logical_axes: LogicalAxesFn | None = None) -> Any:
  """Sharding for every array leaf of a parameter-shaped ``tree`` (params, EMA, encoder).

  Args:
    mode: ``"replicated"``; ``"fsdp"`` (split the largest evenly divisible axis over the
      ``fsdp`` mesh axis; arrays under ``min_size`` elements stay replicated; the leaf's
      shape alone decides, so an optax state tree can be passed whole); ``"rules"`` (the
      logical-axis rules, :func:`rules_sharding`; ``tree`` must be the parameter dict
      that ``logical_axes`` describes).
    logical_axes: the family's ``(path, shape) -> names``, required by ``"rules"``.
  """
  if mode not in PARAM_SHARDING_MODES:
    raise ValueError(f"param sharding mode must be one of {PARAM_SHARDING_MODES}, got {mode!r}")
  if mode == "rules":
    if logical_axes is None:
      raise ValueError("param sharding mode 'rules' needs a logical_axes function")
    return rules_sharding(tree, mesh, logical_axes)
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


# ----------------------------------------------------------------------------- activations

# Logical name of an activation dim -> the mesh axes that split it (MaxText's
# ``logical_axis_rules`` for activations, read by ``nn.with_logical_constraint``). The batch
# is split over (data, fsdp) inside every block, so an FSDP mesh computes each row on one
# (data, fsdp) group and gathers the weights (without a constraint XLA may instead split the
# residual stream by width over fsdp and replicate the batch); heads, kv heads, MLP hidden
# units and vocabulary entries over ``tensor`` (Megatron); the residual stream's length
# ("residual_length": the block's input and output and the stream between its halves, so
# the norms and residual adds) over ``tensor`` too (sequence parallelism: each tensor shard
# normalises and adds its quarter of the positions, the stream is gathered before the
# projections and reduce-scattered after them). :data:`REPLICATED_RESIDUAL_RULES` keeps the
# residual whole over ``tensor`` (plain Megatron) instead; docs/SCALING.md "Time on TPU"
# compares them.
ACTIVATION_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", BATCH_AXES),
    ("length", ()),
    ("residual_length", (TENSOR,)),
    ("embed", ()),
    ("heads", (TENSOR,)),
    ("kv_heads", (TENSOR,)),
    ("head_dim", ()),
    ("mlp", (TENSOR,)),
    ("vocab", (TENSOR,)),
)
REPLICATED_RESIDUAL_RULES = tuple((n, ()) if n == "residual_length" else (n, a)
                                  for n, a in ACTIVATION_RULES)

_ACTIVATION_LAYOUT: contextvars.ContextVar = contextvars.ContextVar("activation_layout",
                                                                    default=None)


@contextlib.contextmanager
def activation_mesh(mesh: Mesh | None, rules=ACTIVATION_RULES):
  """While tracing inside this context, :func:`constrain` places activations on ``mesh`` by
  ``rules``. ``None`` or a one-device mesh: :func:`constrain` is the identity, so the traced
  program is the one built without sharding."""
  if mesh is not None and mesh.size == 1:
    mesh = None
  token = _ACTIVATION_LAYOUT.set(None if mesh is None else (mesh, tuple(rules)))
  try:
    yield
  finally:
    _ACTIVATION_LAYOUT.reset(token)


def activation_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=ACTIVATION_RULES) -> P:
  """PartitionSpec of an activation whose dims are called ``names``: each dim split over the
  axes its rule names, minus axes of size 1, axes an earlier dim took, and trailing axes
  whose product does not divide the dim (an uneven split is never made)."""
  table = dict(rules)
  if len(names) != len(shape):
    raise ValueError(f"activation names {tuple(names)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  spec = []
  for name, size in zip(names, shape):
    if name is not None and name not in table:
      raise ValueError(f"activation dim name {name!r} has no rule (known: {sorted(table)})")
    axes = [a for a in (() if name is None else table[name])
            if a not in used and mesh.shape[a] > 1]
    while axes and size % math.prod(mesh.shape[a] for a in axes):
      axes.pop()
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return P(*spec)


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
  """``x`` constrained to the activation layout of :func:`activation_mesh` (one logical
  name per dim, :data:`ACTIVATION_RULES`); the identity outside such a context, on one
  device, or when no dim would be split."""
  layout = _ACTIVATION_LAYOUT.get()
  if layout is None:
    return x
  mesh, rules = layout
  spec = activation_spec(names, x.shape, mesh, rules)
  if all(s is None for s in spec):
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
