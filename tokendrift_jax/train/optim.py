"""Optimizer and parameter EMA, as the MDLM/DUO trainers configure them.

MDLM and DUO train with AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0), a constant
learning rate after a linear warmup (``constant_warmup``), gradient clipping at global
norm 1.0 (Lightning ``gradient_clip_val``) and an EMA of the weights with decay 0.9999 and
the ``(1 + n) / (10 + n)`` warm-up of ``models/ema.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def default_config() -> ml_collections.ConfigDict:
  """The ``optim`` config section.

  Fields:
    lr: peak learning rate (TokenDrift App. F: 3e-5, also 5e-5).
    b1, b2, eps, weight_decay: AdamW (the repositories' values).
    warmup_steps: linear warmup from 0 to lr, then constant (the repositories'
      ``constant_warmup``; they use 2500 when pretraining; the paper does not state one for
      refinement).
    grad_clip: global-norm clipping threshold (<= 0 disables).
    schedule: "constant" (after warmup) or "cosine" (decay to 0 at the last step).
    mu_dtype: storage dtype of Adam's first moment, "float32" or "bfloat16" (halves that
      moment's memory: 16 of the 32 GB it takes for 8B parameters). With "bfloat16" each
      step reads the stored moment back as float32, forms m_t = b1·m_{t-1} + (1 - b1)·g_t
      and the update in float32, and stores m_t rounded to bfloat16 (to nearest, relative
      error <= 2^-9): the first step is exact, later ones see the moment perturbed by that
      rounding (docs/SHARDING.md has the measured effect). The second moment stays
      float32. A resume must use the value its checkpoint was written with.
  """
  c = ml_collections.ConfigDict()
  c.lr = 3e-5
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.weight_decay = 0.0
  c.warmup_steps = 0
  c.grad_clip = 1.0
  c.schedule = "constant"
  c.mu_dtype = "float32"
  return c


MU_DTYPES = ("float32", "bfloat16")


def mu_dtype(cfg: ml_collections.ConfigDict) -> str:
  """``cfg.mu_dtype`` ("float32" when the field is absent: configs written before it)."""
  value = str(cfg.get("mu_dtype", "float32"))
  if value not in MU_DTYPES:
    raise ValueError(f"optim.mu_dtype must be one of {MU_DTYPES}, got {value!r}")
  return value


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  warm = int(cfg.warmup_steps)
  if cfg.schedule == "constant":
    main = optax.constant_schedule(cfg.lr)
  elif cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(cfg.lr, max(1, total_steps - warm))
  else:
    raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {cfg.schedule!r}")
  if warm <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm), main], [warm])


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping and AdamW; with ``cfg.mu_dtype="bfloat16"`` the first moment is
  stored in bfloat16 (:func:`stored_first_moment`). The state's structure is the same for
  either dtype: (clip state, (ScaleByAdamState, weight decay, learning rate))."""
  parts = []
  if cfg.grad_clip and cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  parts.append(optax.adamw(learning_rate_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2,
                           eps=cfg.eps, weight_decay=cfg.weight_decay))
  tx = optax.chain(*parts)
  # float32: the optimizer of every run before the option, bit for bit.
  return tx if mu_dtype(cfg) == "float32" else stored_first_moment(tx, jnp.bfloat16)


def _cast_first_moment(state, dtype):
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  return jax.tree.map(
      lambda s: s._replace(mu=jax.tree.map(lambda m: m.astype(dtype), s.mu)) if is_adam(s)
      else s, state, is_leaf=is_adam)


def stored_first_moment(tx: optax.GradientTransformation, dtype) -> optax.GradientTransformation:
  """``tx`` (holding a ``scale_by_adam``) with Adam's first moment kept in ``dtype``
  between steps; the update itself runs in float32.

  Not optax's own ``mu_dtype``: its moment update multiplies the stored bfloat16 moment
  by the weakly typed b1 in bfloat16, i.e. by bfloat16(0.9) = 0.8984375, so the moment
  decays faster than its bias correction assumes and settles ~1.5% below the gradient
  average (tests/train/test_step.py measures it). Here the stored moment is read back as
  float32 (exact), ``tx`` runs in float32 and only the new moment is rounded.
  """
  def init(params):
    return _cast_first_moment(tx.init(params), dtype)

  def update(updates, state, params=None):
    updates, state = tx.update(updates, _cast_first_moment(state, jnp.float32), params)
    return updates, _cast_first_moment(state, dtype)

  return optax.GradientTransformation(init, update)


def ema_decay(decay: float, num_updates: jax.Array, warmup: bool = True) -> jax.Array:
  """models/ema.py: min(decay, (1 + n) / (10 + n)) with n counted after the increment.

  ``warmup=False`` gives the constant ``decay`` (an EMA continued from a long run, whose
  n is already large).
  """
  if not warmup:
    return jnp.float32(decay)
  n = num_updates.astype(jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))


def ema_update(ema_params, params, decay: float, num_updates: jax.Array, warmup: bool = True):
  """shadow <- shadow - (1 - d) (shadow - param), d = ema_decay(decay, num_updates, warmup)."""
  d = ema_decay(decay, num_updates, warmup)
  return optax.incremental_update(params, ema_params, step_size=1.0 - d)
