"""TokenDrift refinement of the released DUO (Table 2): uniform state, time-conditioned,
no mask token; its 50258 ids are GPT-2's plus the [PAD] that DUO's tokenizer setup adds."""

from configs import base


def get_config():
  c = base.get_config()
  c.diffusion.process = "duo"
  c.objective = "drift"
  c.init_checkpoint = "s-sahoo/duo"
  c.model.vocab_size = 50258
  c.model.time_conditioning = True
  return c
