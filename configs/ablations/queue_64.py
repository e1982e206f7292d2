"""Table 5: real and generated queues of 64 features (default 1024), compared at step 5k as in the paper."""

from configs import mdlm_drift
from tokendrift_jax.experiments import ablations


def get_config():
  return ablations.paper_config(mdlm_drift.get_config(), "queue_64")
