"""Table 5: real and generated queues of 64 features (default 1024), compared at step 5k as in the paper."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.drift.queue_size = 64
  c.train.steps = 5000
  return c
