"""Table 6: attraction : repulsion = 0 : 1 (b+ and b- scaled; default 1 : 1), compared at step 5k as in the paper."""

from configs import mdlm_drift
from tokendrift_jax.experiments import ablations


def get_config():
  return ablations.paper_config(mdlm_drift.get_config(), "ratio_0_1")
