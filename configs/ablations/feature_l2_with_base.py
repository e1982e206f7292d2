"""Table 4, "w/" rows: the fixed_point drift objective plus MDLM's own NELBO (weight 1)."""

from configs import mdlm_drift
from tokendrift_jax.experiments import ablations


def get_config():
  return ablations.paper_config(mdlm_drift.get_config(), "feature_l2_with_base")
