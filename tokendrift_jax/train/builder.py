"""One function from a config to the jitted, sharded training step: :func:`build_step`.

The trainer, the benchmark (``perf/benchmark.py``) and the bf16 smoke check
(``perf/smoke.py``) all call it, so what is timed and checked is the step that training
runs. It needs no data and no checkpoint: parameters enter through ``init_state``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from tokendrift_jax import config_checks
from tokendrift_jax import models
from tokendrift_jax import objectives
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import process_from_config
from tokendrift_jax.train import losses
from tokendrift_jax.train import optim
from tokendrift_jax.train import prompt as prompt_lib
from tokendrift_jax.train import step as step_lib

class TrainError(ValueError):
  """A configuration or input problem, reported as one line before anything is written."""


# The value checks of a training config, applied where it is read (:func:`check_config_values`
# from trainer.build and build_step): one line naming the field, before anything is built.
_unit = config_checks.number(0.0, 1.0, hi_open=True)   # [0, 1)
CONFIG_CHECKS = (
    ("seed", config_checks.integer(0)),
    ("train.steps", config_checks.integer(0)),
    ("train.log_every", config_checks.integer(1)),
    ("train.checkpoint_every", config_checks.integer(0)),
    ("train.keep_checkpoints", config_checks.integer(1)),
    ("train.eval_every", config_checks.integer(0)),
    ("train.eval_batches", config_checks.integer(0)),
    ("train.resume", config_checks.boolean),
    ("train.export_backbone", config_checks.boolean),
    ("optim.lr", config_checks.number(0.0, lo_open=True)),
    ("optim.b1", _unit),
    ("optim.b2", _unit),
    ("optim.eps", config_checks.number(0.0)),
    ("optim.weight_decay", config_checks.number(0.0)),
    ("optim.warmup_steps", config_checks.integer(0)),
    ("optim.grad_clip", config_checks.number()),
    ("ema.enabled", config_checks.boolean),
    ("ema.decay", config_checks.number(0.0, 1.0)),
    ("batch.global_batch", config_checks.integer(1)),
    ("batch.micro_batch", config_checks.integer(1)),
    ("batch.eval_global_batch", config_checks.integer(1)),
    ("diffusion.eps", config_checks.number(0.0, 1.0, hi_open=True)),
    ("diffusion.sampling_eps", config_checks.number(0.0, 1.0, hi_open=True)),
    ("model.dropout", _unit),
    ("drift.temperatures", config_checks.each(config_checks.number(0.0, lo_open=True))),
    ("drift.alpha", config_checks.number()),
    ("drift.eps", config_checks.number(0.0)),
    ("drift.queue_size", config_checks.integer(0)),
    ("drift.base_loss_weight", config_checks.number(0.0)),
    ("drift.fixed_scale", config_checks.each(config_checks.number(0.0, lo_open=True))),
    ("prompt.length", config_checks.integer(0)),
    ("prompt.pad_id", config_checks.integer(-1)),
)


def check_config_values(config: ml_collections.ConfigDict) -> None:
  """TrainError naming the first field of :data:`CONFIG_CHECKS` whose value is refused
  (a type, range or finiteness problem)."""
  config_checks.validate(config, CONFIG_CHECKS, TrainError)


# ----------------------------------------------------------------------------- config parts


def model_config(config: ml_collections.ConfigDict):
  """The architecture ``config.model`` describes (its ``family``'s config dataclass)."""
  try:
    return models.model_config(config.model)
  except (KeyError, TypeError, ValueError) as e:
    raise TrainError(f"config.model: {e}") from e


def make_mesh(config: ml_collections.ConfigDict, devices=None):
  """``config.mesh``'s mesh over ``devices`` (default ``jax.devices()``)."""
  try:
    return sharding.mesh_from_config(config.mesh, devices)
  except ValueError as e:
    raise TrainError(str(e)) from e


def check_batch_config(config, mesh, process_count: int) -> None:
  g, b = int(config.batch.global_batch), int(config.batch.micro_batch)
  shards = sharding.num_batch_shards(mesh)
  if g < 1 or b < 1:
    raise TrainError(f"config.batch.global_batch={g} and micro_batch={b} must be >= 1")
  if g % b:
    raise TrainError(f"config.batch.global_batch={g} is not divisible by "
                     f"config.batch.micro_batch={b}")
  if b % shards:
    raise TrainError(f"config.batch.micro_batch={b} is not divisible by the {shards} devices "
                     f"of the mesh's batch axes data x fsdp {dict(mesh.shape)}; every "
                     f"micro-batch is spread over them")
  if g % process_count:
    raise TrainError(f"config.batch.global_batch={g} is not divisible by the "
                     f"{process_count} processes")
  e = int(config.batch.eval_global_batch)
  if e % shards or e % process_count:
    raise TrainError(f"config.batch.eval_global_batch={e} must be divisible by the {shards} "
                     f"devices and {process_count} processes")


def check_ema_config(config) -> None:
  if config.ema.evaluate not in ("raw", "ema"):
    raise TrainError(f"config.ema.evaluate must be 'raw' or 'ema', got {config.ema.evaluate!r}")
  if config.ema.evaluate == "ema" and not config.ema.enabled:
    raise TrainError("config.ema.evaluate='ema' but config.ema.enabled is False")


def param_placement(config, model_cfg, mesh) -> tuple[str, Any]:
  """``config.mesh.param_sharding`` and the family's ``logical_axes`` ("rules" only);
  TrainError for a placement :func:`sharding.check_placement` refuses."""
  mode = str(config.mesh.param_sharding)
  family = models.family_of(model_cfg)
  try:
    return mode, sharding.check_placement(mode, mesh, family.logical_axes, family.name)
  except ValueError as e:
    raise TrainError(str(e)) from e


def objective_for(config, model_cfg, process) -> objectives.Objective:
  """The objective ``config.objective`` names, built from its config section."""
  try:
    return objectives.from_config(config, model_cfg, process)
  except (TypeError, ValueError) as e:
    raise TrainError(str(e)) from e


def process_for(config, model_cfg):
  """The diffusion process of ``config.diffusion`` for ``model_cfg``."""
  try:
    return process_from_config(config, model_cfg)
  except (TypeError, ValueError) as e:
    raise TrainError(f"config.diffusion: {e}") from e


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def compute_dtype(config, platform: str | None = None) -> jnp.dtype:
  """``config.model.dtype`` as a dtype; "auto" (the base config's) = float32 on CPU,
  bfloat16 on a GPU or TPU (``platform``: of the devices the step runs on, default
  ``jax.devices()``'s). On CPU bf16 products run as float32 after conversions (measured
  slower than float32, docs/PERFORMANCE.md "CPU figures"); a config that names a dtype
  gets it on every platform."""
  name = str(config.model.get("dtype", "auto"))
  if name not in COMPUTE_DTYPES:
    raise TrainError(f"config.model.dtype must be one of {COMPUTE_DTYPES}, got {name!r}")
  if name == "auto":
    platform = platform or jax.devices()[0].platform
    return jnp.dtype(jnp.float32 if platform == "cpu" else jnp.bfloat16)
  return jnp.dtype(name)


def model_graphdef(config, model_cfg, dtype=None):
  """The NNX graph of the backbone as config.model asks (dtype, attention, remat, scan);
  ``dtype``: the resolved compute dtype (default :func:`compute_dtype` of the config)."""
  try:
    return models.graphdef(
        model_cfg, dtype=compute_dtype(config) if dtype is None else dtype,
        attention_impl=config.model.attention_impl or None, remat=bool(config.model.remat),
        remat_policy=str(config.model.get("remat_policy", "") or ""),
        scan_layers=bool(config.model.get("scan_layers", False)))
  except (TypeError, ValueError) as e:
    raise TrainError(f"config.model: {e}") from e


def check_objective_name(config) -> None:
  """TrainError unless ``config.objective`` names a registered objective."""
  if str(config.objective) not in objectives.names():
    raise TrainError(f"config.objective must be one of {objectives.names()}, got "
                     f"{config.objective!r}")


NONFINITE_POLICIES = ("stop", "skip")


def nonfinite_policy(config) -> str:
  """config.train.nonfinite: what a non-finite update does ("stop" by default)."""
  policy = str(config.train.get("nonfinite", "stop"))
  if policy not in NONFINITE_POLICIES:
    raise TrainError(f"config.train.nonfinite must be one of {NONFINITE_POLICIES}, "
                     f"got {policy!r}")
  return policy


# ----------------------------------------------------------------------------- the step


@dataclasses.dataclass
class StepParts:
  """The compiled-to-be pieces of a run, independent of data and checkpoints.

  Attributes:
    model_cfg, mesh, process, objective: what the config resolves to.
    ctx: the static context of the micro-steps.
    optimizer: the optax transformation.
    init_state: ``params -> TrainState`` (host arrays in, host arrays out).
    state_shardings: TrainState of shardings; frozen_shardings: the objective's frozen
      tree's (None when it has none); batch_sharding: of a global [G, L] batch.
    step_fn: jitted ``(state, batch, frozen) -> (state, metrics)``, state donated.
    eval_fn: jitted ``(params, batch, key) -> {"nll_sum", "num_tokens"}``.
  """
  config: ml_collections.ConfigDict
  model_cfg: Any
  mesh: Any
  process: Any
  objective: objectives.Objective
  ctx: losses.StepContext
  optimizer: Any
  init_state: Callable[[Any], step_lib.TrainState]
  state_shardings: step_lib.TrainState
  frozen_shardings: Any
  batch_sharding: Any
  step_fn: Callable
  eval_fn: Callable

  def abstract_args(self) -> tuple:
    """ShapeDtypeStructs (with shardings) of ``step_fn``'s arguments, for ``.lower``."""
    def with_sharding(tree, shardings):
      return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          tree, shardings)
    abs_params = models.abstract_params(self.model_cfg)
    abs_state = jax.eval_shape(self.init_state, abs_params)
    width = self.model_cfg.length + self.ctx.prompt.extra_columns  # + per-row prompt lengths
    batch = jax.ShapeDtypeStruct((int(self.config.batch.global_batch), width),
                                 jnp.int32, sharding=self.batch_sharding)
    abs_frozen = jax.eval_shape(self.objective.frozen, abs_params)
    frozen = (None if abs_frozen is None
              else with_sharding(abs_frozen, self.frozen_shardings))
    return with_sharding(abs_state, self.state_shardings), batch, frozen


def build_step(config: ml_collections.ConfigDict, model_cfg=None, *,
               devices=None) -> StepParts:
  """The sharded, jitted train and eval steps of ``config``.

  Checks the objective (its config section), the model, the mesh and batch sizes, EMA and
  diffusion settings (TrainError naming the field). ``model_cfg`` defaults to ``config.model``'s
  architecture (the trainer passes the one it checked against the init checkpoint).
  ``devices``: what the mesh is built from, default ``jax.devices()`` (what training runs
  on); the planner passes a compilation target's compile-only devices
  (``perf/targets.Target.devices``), so that it compiles the very program training runs,
  for that hardware. The processes a batch is split over are those the devices belong to.
  """
  check_config_values(config)
  check_objective_name(config)
  model_cfg = model_config(config) if model_cfg is None else model_cfg
  mesh = make_mesh(config, devices)
  check_batch_config(config, mesh, jax.process_count() if devices is None
                     else sharding.process_count(mesh.devices.flat))
  check_ema_config(config)
  process = process_for(config, model_cfg)
  objective = objective_for(config, model_cfg, process)
  try:
    prompt = prompt_lib.from_config(config, model_cfg.length, process)
  except ValueError as e:
    raise TrainError(str(e)) from e
  dtype = compute_dtype(config, mesh.devices.flat[0].platform)
  gdef = model_graphdef(config, model_cfg, dtype)
  total = int(config.train.steps)
  try:
    optimizer = optim.make_optimizer(config.optim, total)
  except ValueError as e:
    raise TrainError(f"config.{e}") from e

  def init_state(params):
    return step_lib.init_state(
        params, optimizer, seed=int(config.seed), ema=bool(config.ema.enabled),
        objective=objective)

  abstract = models.abstract_params(model_cfg)
  mode, logical_axes = param_placement(config, model_cfg, mesh)
  try:
    shardings = step_lib.state_sharding(jax.eval_shape(init_state, abstract), mesh, mode,
                                        logical_axes=logical_axes, objective=objective)
  except ValueError as e:
    raise TrainError(f"config.mesh.param_sharding={mode!r}: {e}") from e
  frozen_shardings = None
  if objective.frozen_kind is not None:
    # A frozen tree is a copy of the generator's network: the same placement, and no
    # optimizer state.
    frozen_shardings = objective.frozen_shardings(
        sharding.param_sharding(abstract, mesh, mode, logical_axes=logical_axes))
  ctx = losses.StepContext(graphdef=gdef, process=process, mesh=mesh,
                           dropout=float(model_cfg.dropout) > 0,
                           compute_dtype=dtype, prompt=prompt)
  scfg = step_lib.StepConfig(micro_batch=int(config.batch.micro_batch),
                             ema_decay=float(config.ema.decay) if config.ema.enabled else None,
                             lr_schedule=optim.learning_rate_schedule(config.optim, total),
                             ema_warmup=bool(config.ema.get("warmup", True)),
                             nonfinite=nonfinite_policy(config))
  step_fn = step_lib.jit_train_step(step_lib.make_train_step(ctx, objective, optimizer, scfg),
                                    shardings, mesh, frozen_shardings)
  eval_fn = jax.jit(step_lib.make_eval_step(ctx),
                    in_shardings=(shardings.params, sharding.batch_sharding(mesh),
                                  sharding.replicated(mesh)),
                    out_shardings=sharding.replicated(mesh))
  return StepParts(config=config, model_cfg=model_cfg, mesh=mesh, process=process,
                   objective=objective, ctx=ctx, optimizer=optimizer, init_state=init_state,
                   state_shardings=shardings, frozen_shardings=frozen_shardings,
                   batch_sharding=sharding.batch_sharding(mesh), step_fn=step_fn,
                   eval_fn=eval_fn)
