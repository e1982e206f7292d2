"""Table 4, "w/" rows: the mirror_kl drift objective plus MDLM's own NELBO (weight 1)."""

from configs import mdlm_drift


def get_config():
  c = mdlm_drift.get_config()
  c.drift.objective = "mirror_kl"
  c.drift.base_loss_weight = 1.0
  return c
