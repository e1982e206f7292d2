"""TokenDrift against continuation and SDTT at matched entropy, MDLM on the synthetic language
(issue "objectives and baselines", item 6; "science", item 1).

``python launch/train.py --config=configs/frontier_small_mdlm.py``

configs/repro_small_mdlm.py's testbed and refinement budget (25 steps at 1e-4, seeds 1, 2, 3),
with the earlier demo's pretraining (1500 steps: configs/demo.py until 2026-12-07 had
the same stage digest, so a workdir holding that pretraining reuses it), without the
ablations, plus:

* SDTT (tokendrift_jax/objectives/sdtt.py) from the same pretrained weights and data, at
  the TokenDrift stage's model FLOPs (tokendrift_jax/perf/budget.py), its 7 rounds (a
  1024-step teacher grid halved each round down to 8 steps) spread evenly over the steps,
  at the refinement learning rate (the public recipe's 3e-4 and 70k steps do not fit a
  25-step budget: the comparison is at equal compute, not at each method's own recipe);
* every model sampled at temperatures 0.85 ... 1.3 (MDLM: each step draws from p_x0^(1/τ)),
  so each method is also read at the pretrained model's entropy (eval/frontier.py) and
  the frontier is plotted (WORKDIR/frontier.png).
"""

from configs import repro_small_mdlm


def get_config():
  c = repro_small_mdlm.get_config()
  c.workdir = "runs/frontier_small_mdlm"
  c.variants = {}
  # The earlier demo's pretraining (configs/demo.py had 1500 steps until 2026-12-07).
  c.pretrain.steps = 1500
  c.refine.baselines = ("sdtt",)
  c.refine.baseline_rounds = {"sdtt": 7}
  c.evaluation.temperatures = (0.85, 1.0, 1.15, 1.3)
  c.evaluation.num_samples = 256  # per (NFE, seed, temperature)
  return c
