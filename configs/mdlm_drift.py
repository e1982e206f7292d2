"""TokenDrift refinement of the released 170M MDLM (Table 1, "TokenDrift" row)."""

from configs import base


def get_config():
  c = base.get_config()
  c.diffusion.process = "mdlm"
  c.objective = "drift"
  c.init_checkpoint = "kuleshov-group/mdlm-owt"
  return c
