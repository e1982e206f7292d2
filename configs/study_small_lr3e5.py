"""The study's main comparison at the paper's learning rate, MDLM (issue "science", item 3).

``python launch/train.py --config=configs/study_small_lr3e5.py``   (runs/study_small_lr3e5)

Chosen from the factor runs on tuning seed 0 (configs/study_small_factors.py, ``f3_lr_3e-5``:
at lr 3e-5 TokenDrift's refinement curve trended down through the 200 steps without the
entropy collapse and return that lr 1e-4 shows; docs/REPRODUCTION.md, "The factor runs"),
and fixed before any reported seed of it ran: configs/study_small_mdlm.py's comparison
(continuation, TokenDrift and SDTT at TokenDrift's model FLOPs; 200 steps at global batch
64; curves every 25 steps; the temperature sweeps) with every refinement stage at lr 3e-5,
on the reported seeds 1, 2, 3. It starts from the main study's pretraining
(``pretrain.workdir``; run configs/study_small_mdlm.py first).
"""

from configs import study_small_mdlm


def get_config():
  c = study_small_mdlm.get_config()
  c.workdir = "runs/study_small_lr3e5"
  c.pretrain.workdir = "runs/study_small_mdlm"
  c.refine.lr = 3e-5
  return c
