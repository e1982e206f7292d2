"""Table 4, "w/" rows: the mirror_mse drift objective plus MDLM's own NELBO (weight 1)."""

from configs import mdlm_drift
from tokendrift_jax.experiments import ablations


def get_config():
  return ablations.paper_config(mdlm_drift.get_config(), "mirror_mse_with_base")
