"""Continuation: the backbone's own diffusion loss (the paper's matched baseline).

MDLM NELBO / DUO ELBO / LLaDA's pretraining loss; with a prompt (``ctx.prompt``) the loss
with the prompt kept (LLaDA's SFT loss: prompt never masked, loss over the response). No
auxiliary state, no frozen tree.
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
    """``(loss [], grads, aux (None), {"loss"[, "prompt_per_row"]})`` of one micro-batch."""
    del frozen
    losses.check_batch(batch)
    x0, keep = prompt_lib.split_prompt(ctx.prompt, batch)
    k_loss, k_drop = jax.random.split(key)
    x0 = ctx.constrain_batch(x0)

    def loss_fn(p):
      if keep is None:
        return ctx.process.loss(losses.generator(ctx, p, k_drop), x0, k_loss)
      return ctx.process.loss(losses.generator(ctx, p, k_drop), x0, k_loss, keep=keep)

    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    metrics = {"loss": loss}
    if keep is not None:
      metrics["prompt_per_row"] = losses.row_mean_count(keep)
    return loss, grads, aux, metrics


OBJECTIVE = Continuation
