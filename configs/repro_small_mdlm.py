"""Small-scale reproduction of the controlled comparison, MDLM (Tables 1, 3, 4, 5, 6).

``python launch/train.py --config=configs/repro_small_mdlm.py --workdir=runs/repro_mdlm``

A 4-block, 128-wide MDLM is pretrained on the synthetic language (length 32), then
refined from that checkpoint by continuation and by TokenDrift for the same budget, with
three refinement seeds; the ablations of Table 3 (hard lift), Table 4 (mirror-teacher
objectives, and each objective with MDLM's loss added), Table 5 (queues 4 / 64) and Table 6
(attraction:repulsion) are TokenDrift variants with the same budget. Every stage
is resumable; rerunning the command skips finished stages. How the refinement budget was
chosen is in docs/REPRODUCTION.md.
"""

from configs import base
from tokendrift_jax.experiments import ablations
from tokendrift_jax.experiments import synthetic


def get_config():
  c = base.get_config()
  c.update(synthetic.experiment_config())
  c.experiment = "synthetic"
  c.workdir = "runs/repro_small_mdlm"
  c.diffusion.process = "mdlm"
  c.init_checkpoint = ""
  c.model.update(dict(vocab_size=251, hidden_size=128, cond_dim=64, n_blocks=4, n_heads=4,
                      length=32, dropout=0.0, time_conditioning=False))
  c.model.dtype = "float32"
  c.ema.decay = 0.999
  c.train.log_every = 10
  c.train.eval_every = 0
  c.train.checkpoint_every = 500
  c.train.progress = True
  c.corpus.train_sequences = 20_000
  c.pretrain.update(dict(steps=3000, lr=1e-3, warmup_steps=50, global_batch=64,
                         micro_batch=64, weights="raw"))
  c.refine.update(dict(steps=25, lr=1e-4, warmup_steps=0, global_batch=128, micro_batch=8,
                       seeds=(1, 2, 3)))
  c.drift.queue_size = 1024
  c.evaluation.update(dict(nfe=(4, 8, 16), num_samples=512, batch=64))
  # Ablations (Tables 3-6, tokendrift_jax/experiments/ablations.py): TokenDrift with these
  # config sections changed, at the same budget and seeds.
  c.variants = ablations.variants()
  return c
