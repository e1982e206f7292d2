"""The default TokenDrift run stopped at step 5k: the reference row of Tables 5 and 6."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.train.steps = 5000
  return c
