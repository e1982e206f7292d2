"""What every objective's micro-step shares: the step context, the generator, batch checks.

A micro-step sees one global micro-batch x0 [b, L] (sharded over the mesh's batch axes) and
the current parameters; what it computes is its objective's
(:mod:`tokendrift_jax.objectives`). :mod:`tokendrift_jax.train.step` accumulates the
gradients over the micro-batches of a step.

Prompt-conditioned refinement (``StepContext.prompt``, :mod:`tokendrift_jax.train.prompt`):
the micro-batch carries a prompt (a fixed prefix, or per-row lengths in an extra column)
that the forward process never corrupts; each objective says what it does with it. Padded
rows (``PromptSpec.pad_id``) give the backbone its ``attention_mask`` through
:func:`generator` and are excluded by the same masks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.train import prompt as prompt_lib


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Static pieces of a step, whatever the objective (hashable closures for jit).

  Attributes:
    graphdef: NNX graph of the generator (and of any frozen copy of it, the same network),
      a backbone of any registered family (:mod:`tokendrift_jax.models`).
    process: the diffusion process (MDLM, DUO or LLaDA) of the backbone.
    mesh: the (data, fsdp[, tensor]) mesh, or None for an unsharded step.
    dropout: apply the backbone's dropout in the generator (training mode).
    compute_dtype: the model's compute dtype (e.g. of TokenDrift's soft-token lift product).
    prompt: where each row's never-corrupted prompt is (default: none, unconditional).
  """
  graphdef: Any
  process: Any
  mesh: Mesh | None
  dropout: bool = True
  compute_dtype: Any = jnp.float32
  prompt: prompt_lib.PromptSpec = prompt_lib.PromptSpec()

  def constrain_batch(self, x):
    return sharding.constrain_batch(x, self.mesh)


def generator(ctx: StepContext, params, dropout_key, attention_mask=None):
  """The generator as a denoiser ``(x, sigma) -> logits`` (dropout on in training);
  ``attention_mask`` bool [b, L] (padded rows, ``prompt.real_positions``) is passed to the
  backbone, None calls it exactly as before padding existed."""
  model = models.merge(ctx.graphdef, params)
  key = dropout_key if ctx.dropout else None
  if attention_mask is None:
    return lambda x, sigma: model(x, sigma, dropout_rng=key)
  return lambda x, sigma: model(x, sigma, dropout_rng=key, attention_mask=attention_mask)


def check_batch(batch) -> None:
  """Trace-time contract of a micro-batch: int32 [b, L] token ids (+ the prompt column)."""
  chex.assert_rank(batch, 2)
  chex.assert_type(batch, jnp.int32)


def row_mean_count(mask: jax.Array) -> jax.Array:
  """Mean over rows of the number of True positions of a bool [b, L] mask (float32 [])."""
  return jnp.mean(jnp.sum(mask, axis=1, dtype=jnp.float32))
