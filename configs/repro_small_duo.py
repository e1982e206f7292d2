"""Small-scale reproduction of the controlled comparison, DUO (Table 2 and ablations).

``python launch/train.py --config=configs/repro_small_duo.py --workdir=runs/repro_duo``

As configs/repro_small_mdlm.py with the uniform-state backbone: time-conditioned, the
language's vocabulary without a mask token, the soft lift on every position.
"""

from configs import repro_small_mdlm


def get_config():
  c = repro_small_mdlm.get_config()
  c.workdir = "runs/repro_small_duo"
  c.backbone = "duo"
  c.model.vocab_size = 250
  c.model.time_conditioning = True
  return c
