"""Table 4: mirror-kl in logit space through the mirror teacher, drift only (MDLM)."""

from configs import mdlm_drift
from tokendrift_jax.experiments import ablations


def get_config():
  return ablations.paper_config(mdlm_drift.get_config(), "mirror_kl")
