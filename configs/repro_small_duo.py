"""Small-scale reproduction of the controlled comparison, DUO (Table 2 and ablations).

``python launch/train.py --config=configs/repro_small_duo.py --workdir=runs/repro_duo``

As configs/repro_small_mdlm.py with the uniform-state backbone: time-conditioned, the
language's vocabulary without a mask token, the soft lift on every position; its own
refinement budget (learning rate and steps, chosen on a tuning run as for MDLM).
"""

from configs import repro_small_mdlm


def get_config():
  c = repro_small_mdlm.get_config()
  c.workdir = "runs/repro_small_duo"
  c.diffusion.process = "duo"
  c.model.vocab_size = 250
  c.model.time_conditioning = True
  # Chosen like MDLM's (docs/REPRODUCTION.md): DUO moves faster per step at this learning
  # rate in the tuning run, and its Gen-PPL turns back up after ~20 steps at 1e-4.
  c.refine.update(dict(steps=10, lr=3e-4))
  return c
