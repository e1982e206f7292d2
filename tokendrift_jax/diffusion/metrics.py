"""Token-weighted NELBO reduction and the validation NLL / BPD / PPL metric.

Both reference repositories reduce the per-token NELBO the same way (MDLM
``Diffusion._loss``, DUO ``TrainerBase._loss``): sum over valid tokens divided by the number
of valid tokens. Validation accumulates the two sums over the whole set (torchmetrics
``MeanMetric`` in float64) and reports

  nll = Σ nelbo / Σ tokens   (nats per token),   bpd = nll / log 2,   ppl = exp(nll).
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def reduce_nelbo(per_token: jax.Array, valid: jax.Array | None = None
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-weighted mean of a per-token NELBO.

  Args:
    per_token: float[B, L] NELBO of every token.
    valid: optional bool/float[B, L], 1 for tokens that count (``attention_mask``).

  Returns:
    (loss, metrics): loss is Σ nelbo·valid / Σ valid (float32 scalar); metrics has
    ``nll_sum`` and ``num_tokens`` (the two sums validation accumulates) and ``loss``.
  """
  if per_token.ndim != 2:
    raise ValueError(f"per-token NELBO must be [B, L], got shape {per_token.shape}")
  if valid is None:
    weights = jnp.ones(per_token.shape, per_token.dtype)
  else:
    if valid.shape != per_token.shape:
      raise ValueError(
          f"valid mask shape {valid.shape} does not match per-token NELBO {per_token.shape}")
    weights = valid.astype(per_token.dtype)
  nll_sum = jnp.sum(per_token * weights)
  num_tokens = jnp.sum(weights)
  loss = (nll_sum / num_tokens).astype(jnp.float32)
  return loss, {"loss": loss, "nll_sum": nll_sum, "num_tokens": num_tokens}


def nll_metrics(nll_sum: float, num_tokens: float) -> dict[str, float]:
  """nll (nats/token), bpd (bits/token) and ppl from accumulated sums (host float64)."""
  nll_sum = float(nll_sum)
  num_tokens = float(num_tokens)
  if not num_tokens > 0:
    raise ValueError(f"no tokens accumulated (num_tokens={num_tokens})")
  nll = nll_sum / num_tokens
  return {"nll": nll, "bpd": nll / math.log(2), "ppl": math.exp(nll)}


class NLLMeter:
  """Host-side float64 accumulator of validation NELBO sums (torchmetrics ``MeanMetric``).

  Feed it the ``metrics`` dict that a process's ``loss`` returns for each validation batch,
  then read ``compute()``.
  """

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self._nll_sum = np.float64(0.0)
    self._num_tokens = np.float64(0.0)

  def update(self, metrics: Mapping[str, jax.Array]) -> None:
    for k in ("nll_sum", "num_tokens"):
      if k not in metrics:
        raise KeyError(f"NLLMeter.update needs key {k!r}; got keys {sorted(metrics)}")
    self._nll_sum += np.float64(jax.device_get(metrics["nll_sum"]))
    self._num_tokens += np.float64(jax.device_get(metrics["num_tokens"]))

  def compute(self) -> dict[str, float]:
    return nll_metrics(self._nll_sum, self._num_tokens)
