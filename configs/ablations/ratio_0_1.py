"""Table 6: attraction : repulsion = 0 : 1 (b+ and b- scaled; default 1 : 1), compared at step 5k as in the paper."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.drift.attraction = 0.0
  c.drift.repulsion = 1.0
  c.train.steps = 5000
  return c
