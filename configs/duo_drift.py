"""TokenDrift refinement of the released DUO (Table 2): uniform state, time-conditioned,
GPT-2 vocabulary without a mask token."""

from configs import base


def get_config():
  c = base.get_config()
  c.backbone = "duo"
  c.objective = "drift"
  c.init_checkpoint = "s-sahoo/duo"
  c.model.vocab_size = 50257
  c.model.time_conditioning = True
  return c
