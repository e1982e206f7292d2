"""Continuation baseline for DUO: the same budget with DUO_BASE's ELBO (Table 2)."""

from configs import duo_drift


def get_config():
  c = duo_drift.get_config()
  c.objective = "continuation"
  return c
