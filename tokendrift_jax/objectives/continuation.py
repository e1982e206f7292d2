"""Continuation: the backbone's own diffusion loss (the paper's matched baseline).

MDLM NELBO / DUO ELBO / LLaDA's pretraining loss; with a prompt (``ctx.prompt``) the loss
with the prompt kept (LLaDA's SFT loss: prompt never masked, loss over the response). No
auxiliary state, no frozen tree.

Padded rows (``ctx.prompt.pad_id``): the generator gets the rows' ``attention_mask``; with
a prompt the pads are kept with it (never corrupted, no loss, outside the SFT answer
length), without one the loss's mean runs over the real tokens (``valid``), so a pad
contributes nothing and is not counted.
"""

from __future__ import annotations

import dataclasses

import jax

from tokendrift_jax.objectives.base import Objective
from tokendrift_jax.train import losses
from tokendrift_jax.train import prompt as prompt_lib


@dataclasses.dataclass(frozen=True)
class Continuation(Objective):
  """Trains the generator on its process's loss (no hyper-parameters of its own)."""
  name = "continuation"
  label = "Cont. learning"

  @classmethod
  def from_config(cls, config, model_cfg, process) -> "Continuation":
    del config, model_cfg, process
    return cls()

  def microstep(self, ctx, params, frozen, aux, batch, key):
    """``(loss [], grads, aux (None), {"loss"[, "prompt_per_row", "real_per_row"]})`` of
    one micro-batch."""
    del frozen
    losses.check_batch(batch)
    x0, keep = prompt_lib.split_prompt(ctx.prompt, batch)
    k_loss, k_drop = jax.random.split(key)
    x0 = ctx.constrain_batch(x0)
    real = prompt_lib.real_positions(ctx.prompt, x0)

    def loss_fn(p):
      fn = losses.generator(ctx, p, k_drop, real)
      if keep is None and real is None:
        return ctx.process.loss(fn, x0, k_loss)
      if keep is None:
        return ctx.process.loss(fn, x0, k_loss, valid=real)
      return ctx.process.loss(fn, x0, k_loss, keep=prompt_lib.kept_positions(keep, real))

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    metrics = {"loss": loss}
    if keep is not None:
      metrics["prompt_per_row"] = losses.row_mean_count(keep)
    if real is not None:
      metrics["real_per_row"] = losses.row_mean_count(real)
    return loss, grads, aux, metrics


OBJECTIVE = Continuation
