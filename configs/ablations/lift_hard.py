"""Table 3: hard straight-through lift y_ST E instead of the soft p E (MDLM)."""

from configs import mdlm_drift
from tokendrift_jax.experiments import ablations


def get_config():
  return ablations.paper_config(mdlm_drift.get_config(), "lift_hard")
