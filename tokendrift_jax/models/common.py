"""Building blocks shared by backbone families: remat policies, attention kernels, the padding
mask of attention, rotary embeddings on halves, explicit dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# "" (jax's default: save nothing) and the jax.checkpoint_policies that take no arguments
# and suit a transformer block.
REMAT_POLICIES = ("", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")


def remat_policy_fn(name: str):
  """The ``jax.checkpoint_policies`` function called ``name`` (None for "")."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat policy must be one of {REMAT_POLICIES}, got {name!r}")
  return getattr(jax.checkpoint_policies, name) if name else None


# Logical names of a block's activations, one per dim, for sharding.constrain (the mesh axes
# they map to: sharding.ACTIVATION_RULES).
RESIDUAL = ("batch", "residual_length", "embed")
HEADS = ("batch", "length", "heads", "head_dim")
KV_HEADS = ("batch", "length", "kv_heads", "head_dim")
QKV = ("batch", "length", None, "heads", "head_dim")
MLP = ("batch", "length", "mlp")
LOGITS = ("batch", "length", "vocab")


ATTENTION_IMPLS = (None, "xla", "cudnn", "auto")


def check_attention_impl(impl):
  impl = impl or None
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS} ('' = None), got "
                     f"{impl!r}")
  return impl


def resolve_attention_impl(impl, dtype, head_dim: int):
  """The ``implementation=`` for jax.nn.dot_product_attention; resolves "auto".

  "auto" picks the cuDNN flash kernel where it applies (a GPU backend, 16-bit inputs, head
  dim a multiple of 8 up to 128) and XLA's otherwise, so one config serves CPU tests and
  GPU runs.
  """
  if impl != "auto":
    return impl
  ok = (jax.default_backend() == "gpu"
        and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        and head_dim % 8 == 0 and head_dim <= 128)
  return "cudnn" if ok else "xla"


def check_attention_mask(attention_mask, batch: int, length: int):
  """The backbone contract's ``attention_mask`` (bool [B, L], True = real token) checked
  against the input's [B, L]; None passes through. One-line ValueError otherwise."""
  if attention_mask is None:
    return None
  shape = tuple(getattr(attention_mask, "shape", ()))
  dtype = getattr(attention_mask, "dtype", None)
  if shape != (batch, length) or dtype != jnp.bool_:
    raise ValueError(f"attention_mask must be bool [B, L] = [{batch}, {length}], got "
                     f"{dtype}{list(shape)}")
  return attention_mask


def key_mask(attention_mask):
  """bool [B, L] -> bool [B, 1, 1, L], jax.nn.dot_product_attention's ``mask`` that drops
  the padded keys from every query (heads and queries broadcast); None stays None, so an
  unpadded call builds exactly the program it built before padding existed.

  Only keys are masked: a padded query still attends to the real keys, so its output is
  finite (a query with every key masked would average nothing), and it is ignored
  downstream (losses, features and samplers read real positions only).
  """
  if attention_mask is None:
    return None
  return attention_mask[:, None, None, :]


def mask_for_impl(mask, implementation, q_len: int):
  """The key mask as ``implementation`` takes it: [B, 1, 1, L] for XLA (broadcast inside
  its softmax), [B, 1, q_len, L] for cuDNN, whose fused kernel receives the mask as an
  additive bias that must have the query length (jax's ``check_layout``: "Bias must have
  same seq length as QKV"). None stays None."""
  if mask is None or implementation != "cudnn":
    return mask
  return jnp.broadcast_to(mask, (mask.shape[0], 1, q_len, mask.shape[-1]))


def apply_rotary(x, cos, sin):
  """Non-interleaved rotary (halves) on x [B, L, H, Dh]; cos/sin [L, Dh/2] (positions
  shared by the rows) or [B, L, Dh/2] (per-row positions, e.g. Dream's left padding).

  out = [x1 cos - x2 sin, x2 cos + x1 sin] with x1, x2 the two halves (flash-attn's
  ``apply_rotary_emb(interleaved=False)``, the DiT's; ``apply_rotary_pos_emb`` with
  ``rotate_half``, LLaDA's). Computed in x's dtype: both originals cast cos/sin to it.
  """
  if cos.ndim == 3:
    cos = cos.astype(x.dtype)[:, :, None, :]
    sin = sin.astype(x.dtype)[:, :, None, :]
  else:
    cos = cos.astype(x.dtype)[None, :, None, :]
    sin = sin.astype(x.dtype)[None, :, None, :]
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def dropout(x, rate: float, rng):
  """Inverted dropout with an explicit key (None or rate 0: the identity), so that a
  training step stays a pure function of its keys."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
