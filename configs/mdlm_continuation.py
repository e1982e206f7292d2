"""Continuation baseline for MDLM: the same budget with MDLM's own NELBO (Table 1)."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.objective = "continuation"
  return c
