"""DUO's discrete consistency distillation as the public recipe runs it (the DCD baseline).

s-sahoo/duo ``scripts/distil_owt.sh`` with ``configs/algo/distillation.yaml`` (read at
7c9b498): from the released DUO (``training.finetune_path``), ``algo.T=512``,
``trainer.max_steps=50000``, ``loader.global_batch_size=128``, ``optim.lr=6e-5`` with
``lr_scheduler.num_warmup_steps=500`` (``constant_warmup``), ``training.ema=0.999``,
``algo.update_teacher_every=10000``, ``algo.teacher_ema=False``, ``algo.linear_growth_dt=false``,
``loss_type: kl-bwd``, γ ∈ [−4, −1]; gradient clipping 1.0 and AdamW(0.9, 0.999, 1e-8, no
weight decay) from ``configs/config.yaml``. dt = 2^(step // 10⁴)/512 reaches 16/512 in the
last round (steps 40k–50k).

Evaluation: the paper samples distilled DUO models with the greedy-tail sampler
(``sampling.noise_removal=greedy``); ``sample_eval.noise_removal`` is set here and the eval CLI
should be given the same. The repository evaluates its EMA weights (``_eval_mode`` swaps the
EMA in), hence ``ema.evaluate = "ema"``.
"""

from configs import duo_drift
from tokendrift_jax.objectives import dcd


def get_config():
  c = duo_drift.get_config()        # the released DUO, its data and architecture
  c.objective = "dcd"
  c.dcd.update(dcd.default_config())  # T 512, refresh every 10k, kl-bwd, γ (−4, −1)
  c.train.steps = 50_000
  c.batch.global_batch = 128
  c.optim.lr = 6e-5
  c.optim.warmup_steps = 500
  c.optim.schedule = "constant"
  c.optim.grad_clip = 1.0
  c.ema.decay = 0.999
  c.ema.warmup = True
  c.ema.evaluate = "ema"
  c.sample_eval.noise_removal = "greedy"
  return c
