"""The train state and the jitted, sharded training step with micro-step accumulation.

One step (App. F): the global batch [G, L] is split into G / b micro-batches of b
sequences; for each (``lax.scan``) the objective's micro-step (:mod:`tokendrift_jax.objectives`)
computes the loss with the parameters of the step start and the auxiliary state as it stands
(TokenDrift's queues, pushed by each micro-step), and gradients are summed; the optimizer
applies the mean gradient once, then the objective's ``end_step`` updates its state. Micro-batch j holds rows {m·(G/b) + j}: with the
batch split contiguously over devices this keeps every micro-batch spread over all devices
without moving data, and it is defined on the global array, so it does not depend on the
device count.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from tokendrift_jax import sharding
from tokendrift_jax.train import losses
from tokendrift_jax.train import optim


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; a pytree of device arrays (checkpointed whole).

  Attributes:
    step: int32 [] optimizer steps taken.
    params: generator parameters (pure dict, float32).
    opt_state: optax state.
    ema_params: EMA of params (same tree), or None when EMA is off.
    aux: the objective's auxiliary state (``Objective.init_aux``: TokenDrift's
      {"real", "gen"} FeatureQueues, a distillation's teacher and round), or None.
    rng: uint32 [2] base key; step s uses fold_in(rng, s), so resuming is exact.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  aux: Any
  rng: jax.Array


def init_state(params, optimizer: optax.GradientTransformation, *, seed: int, ema: bool,
               objective=None) -> TrainState:
  """The state at step 0; ``objective`` (an ``Objective``, None: no auxiliary state)
  gives the auxiliary state for ``params``."""
  params = jax.tree.map(jnp.asarray, params)
  aux = None if objective is None else objective.init_aux(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    ema_params=jax.tree.map(jnp.copy, params) if ema else None,
                    aux=aux, rng=jax.random.PRNGKey(seed))


def state_sharding(state: TrainState, mesh: Mesh, mode: str, *,
                   logical_axes: sharding.LogicalAxesFn | None = None,
                   objective=None) -> TrainState:
  """Params, EMA and optimizer moments placed like the params; step and RNG replicated;
  the auxiliary state as ``objective.aux_shardings`` says (replicated without one).

  ``mode`` is ``config.mesh.param_sharding``. "replicated" and "fsdp" decide by each leaf's
  shape, so the optax state is passed whole (its moments get their parameter's placement,
  its counts are replicated). "rules" needs the family's ``logical_axes``: the parameter
  shardings come from the rules and every parameter-shaped subtree of the optax state
  (Adam's mu and nu, whatever their dtype) takes them (:func:`sharding.like_params`).
  """
  rep = sharding.replicated(mesh)
  if mode == "rules":
    params = sharding.param_sharding(state.params, mesh, mode, logical_axes=logical_axes)
    opt = sharding.like_params(state.opt_state, state.params, params, mesh)
    ema = params
  else:
    rule = lambda tree: sharding.param_sharding(tree, mesh, mode)
    params, opt, ema = rule(state.params), rule(state.opt_state), rule(state.ema_params)
  if objective is None:
    aux = jax.tree.map(lambda _: rep, state.aux)
  else:
    aux = objective.aux_shardings(state.aux, mesh, params)
  return TrainState(step=rep, params=params, opt_state=opt,
                    ema_params=None if state.ema_params is None else ema, aux=aux, rng=rep)


def split_micro_batches(batch: jax.Array, micro_batch: int) -> jax.Array:
  """[G, L] -> [G // b, b, L]; micro-batch j = rows {m·(G/b) + j : m < b}."""
  g, length = batch.shape
  if g % micro_batch:
    raise ValueError(f"global batch {g} is not divisible by micro_batch {micro_batch}")
  n = g // micro_batch
  return batch.reshape(micro_batch, n, length).swapaxes(0, 1)


@dataclasses.dataclass(frozen=True)
class StepConfig:
  micro_batch: int
  ema_decay: float | None
  lr_schedule: Callable[[jax.Array], jax.Array]
  ema_warmup: bool = True
  # config.train.nonfinite: "stop" returns the new state whatever it holds (the trainer
  # stops before saving a non-finite one); "skip" keeps the old params, optimizer state,
  # EMA and auxiliary state when the update is non-finite (the step counter, hence the data and
  # the RNG, still moves on).
  nonfinite: str = "stop"


def all_finite(*trees) -> jax.Array:
  """bool []: every floating leaf of ``trees`` is finite (one fused reduction)."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)
           if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def update_finite(params, aux, metrics) -> jax.Array:
  """bool []: the state a step wrote from a finite state is finite, read from the three
  things whose arithmetic can leave the finite numbers: the new ``params`` (p + u, u
  unbounded: Adam's division, the learning rate), the new auxiliary state (queues,
  teachers) and ``metrics``, which hold the loss and ``grad_norm`` (||g||, the averaged
  gradient before clipping).

  The rest follows, so it is not read again (at 170M the full-state pass read 4 trees of
  0.68 GB, a tenth of the CPU step; docs/PERFORMANCE.md): ||g|| finite means every g and
  the sum of the g^2 finite, so Adam's moments m' = b1 m + (1 - b1) g and
  v' = b2 v + (1 - b2) g^2 (of g or of its clipped copy) and the EMA
  (1 - d) p' + d ema are convex combinations of finite numbers; such a combination is
  bounded by its largest operand and can round past float32's largest value (3.4e38;
  bfloat16's 3.39e38 for a bfloat16 first moment) only from an operand within a few ulps
  of it. The trainer starts from a finite state: a fresh initialisation, a checkpoint it
  saved (only ever with this flag true), or an init checkpoint whose parameters it checks
  when it loads them (:func:`tokendrift_jax.train.trainer.check_finite_params`); with
  ``nonfinite="skip"`` a step that fails keeps the previous state, so every step starts
  from a finite one.
  """
  return all_finite(params, aux, metrics)


def make_train_step(ctx: losses.StepContext, objective, optimizer: optax.GradientTransformation,
                    scfg: StepConfig) -> Callable:
  """Returns ``step(state, batch, frozen) -> (state, metrics)`` (not jitted).

  ``objective`` is an :class:`tokendrift_jax.objectives.Objective`; ``frozen`` its frozen
  tree (``objective.frozen``; None when it has none). ``metrics["finite"]`` (bool []) says
  whether the update (params, optimizer state, EMA, auxiliary state) and the metrics are
  all finite (:func:`update_finite`: exact for a step from a finite state): the trainer
  reads that one scalar before logging and saving instead of copying the state to the
  host. With ``scfg.nonfinite == "skip"`` a non-finite update is
  not applied.
  """

  def step(state: TrainState, batch: jax.Array, frozen):
    micro = split_micro_batches(batch, scfg.micro_batch)
    base_key = jax.random.fold_in(state.rng, state.step)
    zeros = jax.tree.map(jnp.zeros_like, state.params)

    def body(carry, inp):
      grad_sum, aux = carry
      j, x0 = inp
      key = jax.random.fold_in(base_key, j)
      _, grads, aux, metrics = objective.microstep(ctx, state.params, frozen, aux, x0, key)
      grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
      return (grad_sum, aux), metrics

    n_micro = micro.shape[0]
    (grad_sum, aux), per_micro = jax.lax.scan(
        body, (zeros, state.aux), (jnp.arange(n_micro, dtype=jnp.int32), micro))
    grads = jax.tree.map(lambda g: g / n_micro, grad_sum)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_step = state.step + 1
    ema = state.ema_params
    if ema is not None:
      ema = optim.ema_update(ema, params, scfg.ema_decay, new_step, scfg.ema_warmup)
    metrics = jax.tree.map(lambda x: jnp.mean(x, axis=0), per_micro)
    aux, step_metrics = objective.end_step(aux, params, new_step)
    metrics.update(step_metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["lr"] = scfg.lr_schedule(state.step)
    finite = update_finite(params, aux, metrics)
    if scfg.nonfinite == "skip":
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
      params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
      ema, aux = keep(ema, state.ema_params), keep(aux, state.aux)
    metrics["finite"] = finite
    new_state = state.replace(step=new_step, params=params, opt_state=opt_state,
                              ema_params=ema, aux=aux)
    return new_state, metrics

  @functools.wraps(step)
  def sharded_step(state: TrainState, batch: jax.Array, frozen):
    # The models place their activations on ctx.mesh while this traces (sharding.constrain).
    with sharding.activation_mesh(ctx.mesh):
      return step(state, batch, frozen)

  return sharded_step


def jit_train_step(step_fn: Callable, state_shardings: TrainState, mesh: Mesh,
                   frozen_shardings: Any) -> Callable:
  """jax.jit with explicit shardings; the state is donated."""
  rep = sharding.replicated(mesh)
  return jax.jit(step_fn,
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh), frozen_shardings),
                 out_shardings=(state_shardings, rep),
                 donate_argnums=(0,))


def make_eval_step(ctx: losses.StepContext) -> Callable:
  """``eval(params, batch, key) -> {"nll_sum", "num_tokens"}``: one NELBO sample per batch."""

  def eval_step(params, batch, key):
    nctx = dataclasses.replace(ctx, dropout=False)
    gen = losses.generator(nctx, params, None)
    with sharding.activation_mesh(ctx.mesh):
      _, metrics = ctx.process.loss(gen, ctx.constrain_batch(batch), key)
    return {"nll_sum": metrics["nll_sum"].astype(jnp.float32),
            "num_tokens": metrics["num_tokens"].astype(jnp.float32)}

  return eval_step
