"""The progressive-vs-transient study's testbed, DUO (issue "science", items 2-4).

``python launch/train.py --config=configs/study_small_duo.py``   (runs/study_small_duo)

configs/study_small_mdlm.py's language, corpus, model size and budget with the
uniform-state backbone (time-conditioned, the language's 500 ids without a mask) and DCD at
TokenDrift's model FLOPs as its distillation baseline; its refinement curves as MDLM's
(``refine.curve_every=25``, ``curve_samples=128``, inherited).
"""

from configs import study_small_mdlm


def get_config():
  c = study_small_mdlm.get_config()
  c.workdir = "runs/study_small_duo"
  c.diffusion.process = "duo"
  c.model.vocab_size = 500
  c.model.time_conditioning = True
  c.refine.update(dict(baselines=("dcd",), baseline_rounds={"dcd": 5}))
  return c
