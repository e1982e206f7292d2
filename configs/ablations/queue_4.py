"""Table 5: real and generated queues of 4 features (default 1024), compared at step 5k as in the paper."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.drift.queue_size = 4
  c.train.steps = 5000
  return c
