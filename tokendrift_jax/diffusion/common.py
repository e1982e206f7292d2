"""Helpers shared by the MDLM and DUO processes: argument checks, dtypes, the loss estimate."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tokendrift_jax.diffusion import metrics as metrics_lib

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


def compute_dtype(x: jax.Array):
  """float32 for float32/bf16/f16 inputs, float64 for float64 inputs."""
  return jnp.promote_types(x.dtype, jnp.float32)


def check_tokens(x: jax.Array, what: str) -> None:
  if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
    raise ValueError(f"{what} must be an int array [B, L], got {x.dtype}{list(x.shape)}")


def check_time(t: jax.Array, batch: int) -> None:
  if t.shape != (batch,):
    raise ValueError(f"t must have shape [B] = ({batch},), got {t.shape}")


def check_schedule(vocab_size: int, eps: float, sampling_eps: float) -> None:
  if vocab_size < 2:
    raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
  if not 0 < eps < 1:
    raise ValueError(f"eps must be in (0, 1), got {eps}")
  if not 0 <= sampling_eps < 1:
    raise ValueError(f"sampling_eps must be in [0, 1), got {sampling_eps}")


def nelbo_estimate(process, logits_fn: LogitsFn, x0: jax.Array, key: jax.Array,
                   valid: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """One NELBO estimate of ``process``: draw t, corrupt, denoise, token-weighted mean.

  Randomness: ``k_t, k_x = jax.random.split(key)``; t = ``sample_t(k_t, B)``,
  xt = ``corrupt(k_x, x0, t)``.

  Returns:
    (loss float32 scalar, metrics dict with ``loss``, ``nll_sum``, ``num_tokens``).
  """
  check_tokens(x0, "x0")
  k_t, k_x = jax.random.split(key)
  t = process.sample_t(k_t, x0.shape[0])
  xt = process.corrupt(k_x, x0, t)
  log_probs = process.log_probs(logits_fn(xt, process.model_sigma(t)), xt)
  return metrics_lib.reduce_nelbo(process.loss_per_token(log_probs, x0, xt, t), valid)
