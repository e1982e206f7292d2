"""Log-linear noise schedule and training-time sampling shared by MDLM and DUO.

Both backbones use the same schedule with ε = 1e-3 (MDLM ``noise_schedule.LogLinearNoise``,
DUO ``trainer_base.LogLinear``):

  α_t = 1 − (1 − ε) t                      (probability that a token is still clean)
  σ(t) = −log α_t = −log1p(−(1 − ε) t)     (total noise; what a time-conditioned DiT is fed)
  dσ/dt = (1 − ε) / (1 − (1 − ε) t)
  dα/dt = −(1 − ε)

Every function is elementwise and computes in the floating dtype of ``t``, so the same code
serves float32 training and float64 sampling/reference checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _float(t: jax.Array) -> jax.Array:
  t = jnp.asarray(t)
  if not jnp.issubdtype(t.dtype, jnp.floating):
    raise TypeError(f"time t must be a floating array, got dtype {t.dtype}")
  return t


def alpha(t: jax.Array, eps: float) -> jax.Array:
  """α_t = 1 − (1 − ε) t, the clean-token probability (DUO ``LogLinear.forward``)."""
  t = _float(t)
  return 1 - (1 - eps) * t


def dalpha(t: jax.Array, eps: float) -> jax.Array:
  """dα_t/dt = −(1 − ε), broadcast to the shape of ``t``."""
  t = _float(t)
  return jnp.full_like(t, -(1 - eps))


def corruption_prob(t: jax.Array, eps: float) -> jax.Array:
  """1 − α_t = 1 − e^{−σ(t)} = (1 − ε) t.

  Written as (1 − ε) t rather than 1 − α_t or 1 − exp(−σ): the two are equal in exact
  arithmetic, but the subtraction loses the low bits of small t in float32.
  """
  t = _float(t)
  return (1 - eps) * t


def sigma(t: jax.Array, eps: float) -> jax.Array:
  """σ(t) = −log1p(−(1 − ε) t) (MDLM ``LogLinearNoise.total_noise``)."""
  t = _float(t)
  return -jnp.log1p(-(1 - eps) * t)


def dsigma(t: jax.Array, eps: float) -> jax.Array:
  """dσ/dt = (1 − ε) / (1 − (1 − ε) t) (MDLM ``LogLinearNoise.rate_noise``)."""
  t = _float(t)
  return (1 - eps) / (1 - (1 - eps) * t)


def sample_t(key: jax.Array, batch: int, *, sampling_eps: float, antithetic: bool) -> jax.Array:
  """Training times t ∈ [sampling_eps, 1], float32[batch] (MDLM/DUO ``_sample_t``).

  With ``antithetic`` the n draws are stratified: u_k = (U_k / n + k / n) mod 1 puts exactly
  one draw in each interval [k/n, (k+1)/n), which lowers the variance of the batch-mean
  loss. Then t = (1 − sampling_eps) u + sampling_eps.

  DUO draws the strata over the *global* batch and hands each device / accumulation step a
  slice; calling this with the global batch size and slicing would reproduce that. The
  training step (train/losses.py) stratifies each global micro-batch instead, for both
  backbones (MDLM's per-forward batch): the same expectation, slightly different variance.
  """
  if batch < 1:
    raise ValueError(f"sample_t needs batch >= 1, got {batch}")
  u = jax.random.uniform(key, (batch,), dtype=jnp.float32)
  if antithetic:
    offset = jnp.arange(batch, dtype=jnp.float32) / batch
    u = jnp.mod(u / batch + offset, 1.0)
  return (1 - sampling_eps) * u + sampling_eps


def grid_dt(steps: jax.Array, dtype, t_min: float) -> jax.Array:
  """Spacing of the sampler grid ``linspace(1, t_min, steps + 1)``: (1 − t_min) / steps."""
  return (1 - jnp.asarray(t_min, dtype)) / jnp.asarray(steps).astype(dtype)


def grid_time(i: jax.Array, steps: jax.Array, dtype, t_min: float) -> jax.Array:
  """t_i = 1 − i (1 − t_min) / steps, the i-th point of the sampler grid.

  Equivalent to ``torch.linspace(1, t_min, steps + 1)[i]`` in the reference samplers (up to
  the last bit); computed from i so that the step count can be a traced value and one
  compilation serves every NFE. Scalar of ``dtype``.
  """
  return 1 - jnp.asarray(i).astype(dtype) * grid_dt(steps, dtype, t_min)
