"""Table 3: hard straight-through lift y_ST E instead of the soft p E (MDLM)."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.drift.lift = "hard"
  return c
