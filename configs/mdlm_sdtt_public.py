"""SDTT baseline, the public recipe: multi-round self-distillation of the released MDLM.

Values of ``jdeschena/sdtt`` (``src/sdtt/configs/config.yaml``,
``parameterization/multi-round-sdtt.yaml``, ``lr_scheduler/constant_warmup.yaml`` and the
README's distillation command): AdamW lr 3e-4 (betas 0.9/0.999, eps 1e-8, weight decay 0),
constant schedule after 2500 warmup steps, gradient clipping 1.0, global batch 128, EMA
0.9999 (with the (1 + n) / (10 + n) warm-up of their ``models/ema.py``), training times in
[1e-5, 1] (``training.sampling_eps``), reverse KL (``distill_mode: kl-bwd``), 2 teacher steps
per student step, a 1024-step grid at round 0, a new round every 10k steps
(``grow_dt_every``), down to 8 teacher steps (``min_num_sampling_steps``); no EMA swap and
no optimizer reset at a round. 7 rounds (70k steps) take the student from 1024 to 8
sampling steps (the released checkpoints are the students at 10k, ..., 70k). The README's
``trainer.max_steps=80000`` would run an 8th round (an 8-step teacher, a 4-step student)
before the released code stops; this config stops after the 7th.

Not taken over: the public forward runs the backbone under a float32 autocast inside a
bf16-mixed trainer; the model here computes in config.model.dtype (bfloat16, as the
TokenDrift run). Evaluation samples from the EMA weights, as the public sampling configs do (``from_ema``).
The teacher time grid is the described one (t, t − dt); ``--config.sdtt.teacher_grid=released``
gives the public code's grid (see tokendrift_jax/objectives/sdtt.py).
"""

from configs import mdlm_drift
from tokendrift_jax.objectives import sdtt

ROUNDS = 7
ROUND_STEPS = 10_000


def get_config():
  c = mdlm_drift.get_config()
  c.objective = "sdtt"
  c.sdtt = sdtt.default_config()
  c.sdtt.round_steps = ROUND_STEPS
  c.diffusion.sampling_eps = 1e-5
  c.optim.lr = 3e-4
  c.optim.warmup_steps = 2500
  c.optim.schedule = "constant"
  c.optim.grad_clip = 1.0
  c.batch.global_batch = 128
  c.ema.enabled = True
  c.ema.decay = 0.9999
  c.ema.warmup = True
  c.ema.evaluate = "ema"
  c.train.steps = ROUNDS * ROUND_STEPS
  return c
