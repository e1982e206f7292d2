"""DCD at the TokenDrift run's training compute (the matched-budget DCD baseline).

Same checkpoint, data and architecture as configs/duo_drift.py (the released DUO, OWT,
L = 1024) and the public DCD recipe's hyper-parameters (configs/duo_dcd_public.py: T = 512,
batch 128, lr 6e-5 after 500 warmup steps, EMA 0.999, teacher refresh every 10k steps,
KL(student ‖ teacher)); only the number of steps changes.

Budget unit: analytic **model FLOPs** of a training step (tokendrift_jax/perf/flops.py
``step_flops``: matmul FLOPs, 2 per multiply-add, no rematerialisation), each objective's own
passes included (``Objective.extra_flops``): for DCD the student's forward and backward and
the teacher's forward (with its output layer).

The step count is ``floor(TokenDrift total / DCD per step)``, computed by
``tokendrift_jax.perf.budget.matched_steps`` (tests/objectives/test_dcd.py recomputes it);
at the shipped configs it is about 76k steps of 128 sequences (≈ 4 forwards each).

With the recipe's refresh every 10k steps the run has 8 rounds (dt up to 2⁷/512 = 1/4;
the public run stops after 5, dt 16/512). To keep the recipe's 5 rounds instead, set
``--config.dcd.update_teacher_every`` to about a fifth of the step count. Evaluate with the
greedy-tail sampler (``noise_removal = "greedy"``) and the EMA weights, as the public
evaluation does.
"""

from configs import duo_dcd_public
from configs import duo_drift


def get_config():
  c = duo_dcd_public.get_config()
  # pylint: disable-next=import-outside-toplevel
  from tokendrift_jax.perf import budget
  c.train.steps = budget.matched_steps(duo_drift.get_config(), c)
  return c
