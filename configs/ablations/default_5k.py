"""The default TokenDrift run stopped at step 5k: the reference row of Tables 5 and 6."""

from configs import mdlm_drift
from tokendrift_jax.experiments import ablations


def get_config():
  return ablations.paper_config(mdlm_drift.get_config(), "default_5k")
