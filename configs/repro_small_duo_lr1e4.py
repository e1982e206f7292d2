"""DUO reproduction, second refinement budget: 20 steps at lr 1e-4 (no ablation rows).

The DUO tuning run (docs/REPRODUCTION.md) improved at every NFE after 10-20 steps at this
learning rate before turning back; this config measures that budget on the reported seeds
next to configs/repro_small_duo.py (10 steps at 3e-4). Its pretraining stage is identical,
so pointing --workdir at a copy of that run's directory reuses it.
"""

import ml_collections

from configs import repro_small_duo


def get_config():
  c = repro_small_duo.get_config()
  c.workdir = "runs/repro_small_duo_lr1e4"
  c.refine.update(dict(steps=20, lr=1e-4))
  c.variants = ml_collections.ConfigDict()
  return c
