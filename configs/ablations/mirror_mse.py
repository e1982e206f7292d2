"""Table 4: mirror-mse in logit space through the mirror teacher, drift only (MDLM)."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.drift.objective = "mirror_mse"
  return c
