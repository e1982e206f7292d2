"""The objective contract: what a training objective is to the builder, the step and the trainer.

An objective is one file (``tokendrift_jax/objectives/<name>.py``) holding one
:class:`Objective` subclass, registered under the name ``config.objective`` takes
(:mod:`tokendrift_jax.objectives`). It owns, for one run:

* its hyper-parameters, read from its own config section (``config.<section>``) by
  :meth:`Objective.from_config`, a ``ValueError`` naming the field for a bad value: each
  field's type and range through its table :attr:`Objective.section_checks`
  (:mod:`tokendrift_jax.config_checks`, applied by :meth:`Objective.check_section`),
  relations between fields in ``from_config``;
* its **auxiliary state** (:meth:`init_aux`): a pytree of arrays the step carries from
  micro-step to micro-step and step to step and the checkpoint holds (TokenDrift's feature
  queues; a distillation's teacher and round; None for continuation), with its placement
  (:meth:`aux_shardings`) and a per-step update after the optimizer (:meth:`end_step`);
* its **frozen tree** (:meth:`frozen`): parameters that never change during the run and are
  rebuilt from the initial checkpoint rather than saved (TokenDrift's encoder ϕ; None
  otherwise), named by :attr:`frozen_kind`;
* the micro-step itself (:meth:`microstep`): loss, gradients w.r.t. the generator's
  parameters, the new auxiliary state and metrics, for one global micro-batch;
* its analytic FLOPs beyond the generator's forward and backward (:meth:`extra_flops`);
* what resume must find unchanged (:meth:`resume_fields`).

The step (:mod:`tokendrift_jax.train.step`) scans :meth:`microstep` over the micro-batches,
applies the mean gradient once and then calls :meth:`end_step`; nothing outside an
objective's file tests which objective it is.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

from tokendrift_jax import config_checks
from tokendrift_jax import sharding


def refuse_prompts(name: str, config) -> None:
  """ValueError when ``config.prompt`` asks for prompts or padded rows, which objective
  ``name`` does not support: raised while the run is built, before anything is written
  (the step refuses them again when traced)."""
  prompt = config.get("prompt", None)
  if prompt is None:
    return
  mode = str(prompt.get("mode", "none"))
  if mode != "none":
    raise ValueError(f"objective {name!r} does not support prompts (config.prompt.mode="
                     f"{mode!r}); set config.prompt.mode='none'")
  pad_id = int(prompt.get("pad_id", -1))
  if pad_id >= 0:
    raise ValueError(f"objective {name!r} does not support padded rows "
                     f"(config.prompt.pad_id={pad_id}); set it to -1")


@dataclasses.dataclass(frozen=True)
class Objective(abc.ABC):
  """Base class of the registered objectives (frozen dataclasses: hashable, static under jit).

  Class attributes:
    name: the value of ``config.objective`` that selects it.
    section: the config section holding its hyper-parameters (None: it has none).
    frozen_kind: what :meth:`frozen` returns ("encoder", ...), None when it has no frozen
      tree; the trainer builds it from the initial parameters.
    needs_init_checkpoint: a run must start from a checkpoint (a frozen copy or a teacher
      of random weights would be meaningless).
    metric_temperatures: the labels of metrics shaped [T] (logged one scalar per label).
    section_checks: ``(field, check)`` pairs of its section (``config_checks`` checks:
      type, range, finiteness of one value), applied by :meth:`check_section`.
    label: its name in tables ("TokenDrift", "SDTT"); "" = :attr:`name`.
    round_field: distillation objectives: the (section, field) of the steps per teacher
      round (the teacher refresh), which an experiment sets to spread a budget over its
      rounds; None for objectives without a teacher.
  """
  name: ClassVar[str] = ""
  section: ClassVar[str | None] = None
  frozen_kind: ClassVar[str | None] = None
  needs_init_checkpoint: ClassVar[bool] = False
  section_checks: ClassVar[tuple[tuple[str, config_checks.Check], ...]] = ()
  label: ClassVar[str] = ""
  round_field: ClassVar[tuple[str, str] | None] = None

  def benchmark_fields(self) -> dict:
    """Settings of this objective a benchmark row records beside its time (TokenDrift: its
    queue size ``queue_size``); {} by default."""
    return {}

  @classmethod
  def max_rounds(cls, config) -> int | None:
    """The most teacher rounds ``config`` allows (None: no limit, or no teacher)."""
    del config
    return None

  @classmethod
  def check_section(cls, section) -> None:
    """ValueError naming ``config.<section>.<field>`` for the first value of ``section``
    (the config section, a ConfigDict or dict) that :attr:`section_checks` refuses; fields
    it lacks are skipped. Cheap: the trainer calls it before anything is read or built."""
    if cls.section is None or section is None:
      return
    config_checks.validate(section, cls.section_checks, ValueError,
                           prefix=f"config.{cls.section}.")

  @classmethod
  @abc.abstractmethod
  def from_config(cls, config, model_cfg, process) -> "Objective":
    """The objective of a run config (``ValueError`` naming ``config.<section>.<field>``)."""

  # ---------------------------------------------------------------- state
  def init_aux(self, params) -> Any:
    """The auxiliary state at step 0 for the initial ``params`` (None: none). Called under
    ``jax.eval_shape`` as well, so it must be traceable."""
    del params
    return None

  def aux_shardings(self, aux, mesh, param_shardings) -> Any:
    """Shardings of ``aux`` (abstract): replicated unless the objective says otherwise.
    ``param_shardings`` is the generator parameters' placement (for parameter copies)."""
    del param_shardings
    rep = sharding.replicated(mesh)
    return jax.tree.map(lambda _: rep, aux)

  def frozen(self, params) -> Any:
    """The frozen tree for the initial ``params`` (None: the step gets None)."""
    del params
    return None

  def frozen_shardings(self, param_shardings) -> Any:
    """Shardings of :meth:`frozen`'s tree (it is parameter-shaped when not None)."""
    return None if self.frozen_kind is None else param_shardings

  # ---------------------------------------------------------------- the step
  @abc.abstractmethod
  def microstep(self, ctx, params, frozen, aux, batch, key):
    """One micro-step on the global micro-batch ``batch`` int32 [b, L(+1)].

    Returns ``(loss [], grads like params, new aux, metrics {name: [] or [T]})``.
    """

  def end_step(self, aux, params, step) -> tuple[Any, dict[str, jax.Array]]:
    """After the optimizer update: ``(aux, step metrics)`` for the new ``params`` at the
    new step count ``step`` (int32 []). Default: aux unchanged, no metrics."""
    del params, step
    return aux, {}

  # ---------------------------------------------------------------- bookkeeping
  @property
  def metric_temperatures(self) -> tuple[float, ...]:
    return ()

  def extra_flops(self, fm, cfg, *, length: int, micro_batch: int, n_micro: int,
                  remat_policy: str) -> tuple[dict[str, int], int]:
    """Model FLOPs of one step beyond the generator's forward and backward, by pass, and
    their rematerialisation FLOPs: ``(terms, recompute)``. ``fm`` is the family's FLOP
    model of ``cfg``."""
    del fm, cfg, length, micro_batch, n_micro, remat_policy
    return {}, 0

  def resume_fields(self) -> Mapping[str, Any]:
    """``{dotted config field: value}`` a checkpoint of this run must have been written
    with (beyond the model, process, seed and objective the trainer always checks)."""
    return {}


# ------------------------------------------------------------------ a distillation teacher
# SDTT and DCD carry the same auxiliary state: a copy of the student (the teacher) and the
# round counter; these are its pieces, the refresh rule stays each objective's own.


def teacher_state(params) -> dict[str, Any]:
  """{"teacher": a copy of ``params``, "round": int32 0}: a distillation's state at step 0."""
  return {"teacher": jax.tree.map(jnp.array, params), "round": jnp.zeros((), jnp.int32)}


def teacher_state_shardings(mesh, param_shardings) -> dict[str, Any]:
  """The teacher placed like the parameters, the round replicated."""
  return {"teacher": param_shardings, "round": sharding.replicated(mesh)}


def refreshed_teacher(teacher, params, refresh: jax.Array):
  """``params`` (cast to the teacher's dtypes) where ``refresh`` (bool []), else ``teacher``.

  A ``lax.cond``: the copy happens on refresh steps only, where an elementwise select would
  read both trees at every step.
  """
  return jax.lax.cond(
      refresh, lambda: jax.tree.map(lambda p, q: p.astype(q.dtype), params, teacher),
      lambda: teacher)
