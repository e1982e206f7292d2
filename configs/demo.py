"""Offline end-to-end demo: pretrain -> continuation vs TokenDrift -> few-step samples.

``python launch/train.py --config=configs/demo.py`` (2 CPU cores, minutes, no downloads):
a synthetic language with an exact likelihood stands in for OpenWebText and its exact
per-token NLL stands in for GPT-2 Large (see docs/SYNTHETIC.md and tokendrift_jax/
experiments/synthetic.py). Prints a Table-1-shaped table.
"""

from configs import base
from tokendrift_jax.experiments import synthetic


def get_config():
  c = base.get_config()
  c.update(synthetic.experiment_config())
  c.experiment = "synthetic"
  c.workdir = "runs/demo"
  c.backbone = "mdlm"
  c.init_checkpoint = ""
  c.model.update(dict(vocab_size=251, hidden_size=64, cond_dim=32, n_blocks=3, n_heads=4,
                      length=32, dropout=0.0, time_conditioning=False))
  c.model.dtype = "float32"
  c.drift.queue_size = 256
  c.ema.decay = 0.999
  c.train.log_every = 25
  c.train.eval_every = 0
  c.train.checkpoint_every = 200
  return c
