"""Matched training budgets: a run's model FLOPs, and the step count that spends another
run's.

The unit is analytic **model FLOPs** (:func:`tokendrift_jax.perf.flops.step_flops`: matrix
products, 2 per multiply-add, no rematerialisation), each objective's own passes included
(``Objective.extra_flops``: TokenDrift's encoder passes, lift and drift; a distillation's
teacher forwards). Chosen over counting generator passes because the objectives differ in
what else they run per sequence (TokenDrift ≈ 2 extra encoder passes, SDTT 2 teacher
forwards, DCD 1), and over wall time because it does not depend on the machine.
"""

from __future__ import annotations

from tokendrift_jax.perf import flops
from tokendrift_jax.train import builder


def model_flops_per_step(config) -> int:
  """Analytic model FLOPs of one training step of ``config`` (its objective's passes)."""
  model_cfg = builder.model_config(config)
  process = builder.process_for(config, model_cfg)
  objective = builder.objective_for(config, model_cfg, process)
  micro = int(config.batch.micro_batch)
  return flops.step_flops(model_cfg, objective=objective, length=int(model_cfg.length),
                          micro_batch=micro,
                          n_micro=int(config.batch.global_batch) // micro).model


def matched_steps(reference, config, multiple: int = 1) -> int:
  """The most steps of ``config``, a multiple of ``multiple``, whose model FLOPs do not
  exceed ``reference``'s whole run (``reference.train.steps`` steps)."""
  budget = model_flops_per_step(reference) * int(reference.train.steps)
  per_step = model_flops_per_step(config)
  steps = (budget // per_step) // multiple * multiple
  if steps < 1:
    raise ValueError(f"the reference budget ({budget:.3e} model FLOPs) is less than "
                     f"{multiple} step(s) of {per_step:.3e}")
  return int(steps)
