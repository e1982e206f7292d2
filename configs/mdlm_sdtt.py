"""SDTT baseline at TokenDrift's training compute (Table 1, "SDTT" row).

The public SDTT recipe (configs/mdlm_sdtt_public.py: lr 3e-4, batch 128, EMA 0.9999, 7
rounds of 2-step self-distillation from a 1024-step grid to 8 steps) from the same
checkpoint and data as configs/mdlm_drift.py, with the step count set so that the run's
compute matches the TokenDrift run's.

Matched unit: analytic **model FLOPs** of training (``tokendrift_jax.perf.flops.step_flops``:
matrix products, 2 per multiply-add, no rematerialisation), summed over the run. For
TokenDrift that is the generator's forward and backward, the frozen encoder's two forwards
and input backward, the lift and the drift, per step of configs/mdlm_drift.py times its
``train.steps``; for SDTT the generator's forward and backward plus the teacher's 2
forwards per sequence (``SDTT.extra_flops``). The step count is
``floor(TokenDrift total / SDTT per step)``, rounded down to a multiple of the 7 rounds
(``round_steps = that // 7``), computed by ``tokendrift_jax.perf.budget.matched_steps``, never by hand.
"""

from configs import mdlm_drift
from configs import mdlm_sdtt_public


def get_config():
  c = mdlm_sdtt_public.get_config()
  # from_config checks train.steps against the rounds: one round while counting.
  c.train.steps = c.sdtt.round_steps
  # pylint: disable-next=import-outside-toplevel
  from tokendrift_jax.perf import budget
  steps = budget.matched_steps(mdlm_drift.get_config(), c, multiple=mdlm_sdtt_public.ROUNDS)
  c.sdtt.round_steps = steps // mdlm_sdtt_public.ROUNDS
  c.train.steps = steps
  return c
