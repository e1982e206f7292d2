"""TokenDrift against continuation and DCD at matched entropy, DUO on the synthetic language.

``python launch/train.py --config=configs/frontier_small_duo.py``

configs/repro_small_duo.py's testbed and budget (10 steps at 3e-4, seeds 1, 2, 3) with 1500
pretraining steps (as the MDLM frontier run, whose pretraining is the earlier
demo's), without the ablations, plus DCD (tokendrift_jax/objectives/dcd.py: the public
recipe's T = 512, γ ∈ [−4, −1], KL(student ‖ teacher)) from the same pretrained weights at
the TokenDrift stage's model FLOPs, its 5 teacher rounds spread evenly over the steps, and
every model sampled at
temperatures 0.85 ... 1.3 for the matched-entropy reading (eval/frontier.py). Sampling
keeps DUO's ancestral noise removal for every method, DCD included, so that the methods
differ only in their weights (the public DCD evaluation uses greedy noise removal).
"""

from configs import repro_small_duo


def get_config():
  c = repro_small_duo.get_config()
  c.workdir = "runs/frontier_small_duo"
  c.variants = {}
  # The earlier demo's pretraining (configs/demo.py had 1500 steps until 2026-12-07).
  c.pretrain.steps = 1500
  c.refine.baselines = ("dcd",)
  c.refine.baseline_rounds = {"dcd": 5}
  c.evaluation.temperatures = (0.85, 1.0, 1.15, 1.3)
  c.evaluation.num_samples = 256  # per (NFE, seed, temperature)
  return c
