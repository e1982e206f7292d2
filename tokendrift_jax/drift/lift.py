"""Soft-token lift of categorical predictions into encoder embeddings (TokenDrift Sec. 3.1).

  ẽ_{i,t} = p_{i,t} E        for predicted positions t ∈ M_i,
  ẽ_{i,t} = E[x̄_t^{(i)}]    otherwise,

where E [V, d] is the frozen encoder's token embedding, x̄ the corrupted input, M_i the
masked positions (MDLM) or all positions (DUO), and p the backbone's predicted distribution
after its parameterisation (SUBS for MDLM: zero mass on the mask token, one-hot on observed
tokens). The hard ablation (Sec. 4.3, Table 3) feeds y_ST E with
y_ST = onehot(argmax p) − sg(p) + p.

Cost: one [B·L, V] × [V, d] product in the compute dtype; the only [B, L, V] array made here
is the cast of p to that dtype (none when p already has it). The gradient w.r.t. p is
exactly zero outside M_i (``jnp.where`` passes a zero cotangent there).

Padded rows: a pad is never in M_i (the caller's ``predicted_mask`` excludes it, as it
excludes a prompt: ``objectives.tokendrift.drift_draw``), so it enters the encoder as
E[x̄], which the encoder's attention mask then hides from every position.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

LIFT_MODES = ("soft", "hard")


@jax.custom_vjp
def _embed_product(p: jax.Array, table: jax.Array) -> jax.Array:
  """p [N, V] · table [V, d] in p's dtype, accumulated in (at least) float32.

  The same value as ``dot(p, table, preferred_element_type=f32).astype(p.dtype)``, with a
  backward pass whose products also take p's dtype: autodiff of that expression would
  form p̄ = ẽ̄·Eᵀ as a float32 GEMM (the cotangent is float32, so E is upcast), i.e. a TF32
  or FP32 GEMM as large as the generator's output layer. Here ẽ̄ is cast back to p's dtype,
  which is exact (it is the float32 image of a cotangent of p's dtype), so p̄ is the same
  float32 accumulation of the same exact products, rounded to p's dtype as before.
  """
  chex.assert_rank([p, table], 2)
  chex.assert_axis_dimension(p, 1, table.shape[0])
  acc = jnp.promote_types(p.dtype, jnp.float32)
  return jnp.dot(p, table, preferred_element_type=acc).astype(p.dtype)


def _embed_product_fwd(p, table):
  return _embed_product(p, table), (p, table)


def _embed_product_bwd(res, ct):
  p, table = res
  acc = jnp.promote_types(p.dtype, jnp.float32)
  ct = ct.astype(p.dtype)
  p_bar = jnp.dot(ct, table.T, preferred_element_type=acc).astype(p.dtype)
  # The lift stops the table's gradient, so XLA removes this product; kept for a correct
  # vjp if the function is ever used with a trainable table.
  t_bar = jnp.dot(p.T, ct, preferred_element_type=acc).astype(table.dtype)
  return p_bar, t_bar


_embed_product.defvjp(_embed_product_fwd, _embed_product_bwd)


def soft_token_lift(
    input_ids: jax.Array,
    predicted_mask: jax.Array,
    embedding: jax.Array,
    *,
    probs: jax.Array | None = None,
    logits: jax.Array | None = None,
    mode: str = "soft",
    compute_dtype=None,
) -> jax.Array:
  """Encoder input embeddings for the generated sequences.

  Args:
    input_ids: int [B, L], the corrupted input x̄ (its tokens are used outside M_i).
    predicted_mask: bool [B, L], True on M_i.
    embedding: [V, d], the frozen encoder's token embedding E (stop-gradient here).
    probs: [B, L, V] predicted distributions p (give exactly one of probs / logits).
    logits: [B, L, V]; p = softmax(logits) computed in float32.
    mode: ``"soft"`` (p E, the method) or ``"hard"`` (straight-through argmax, the ablation).
    compute_dtype: dtype of the p·E product (default: ``embedding.dtype``); accumulation is
      at least float32.

  Returns:
    [B, L, d] in ``embedding``'s dtype: outside M_i exact rows E[x̄]; on M_i p·E computed in
    ``compute_dtype``. In hard mode its value on M_i is exactly E[argmax p] and its gradient
    w.r.t. p is that of p E.
  """
  if mode not in LIFT_MODES:
    raise ValueError(f"lift mode must be one of {LIFT_MODES}, got {mode!r}")
  if (probs is None) == (logits is None):
    raise ValueError("soft_token_lift needs exactly one of probs= or logits=")
  if embedding.ndim != 2:
    raise ValueError(f"embedding must be [V, d], got shape {embedding.shape}")
  if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
    raise ValueError(f"input_ids must be an int [B, L] array, got {input_ids.dtype} "
                     f"{input_ids.shape}")
  if predicted_mask.shape != input_ids.shape or predicted_mask.dtype != jnp.bool_:
    raise ValueError(f"predicted_mask must be bool {input_ids.shape}, got "
                     f"{predicted_mask.dtype} {predicted_mask.shape}")
  dist = probs if probs is not None else logits
  name = "probs" if probs is not None else "logits"
  b, length = input_ids.shape
  vocab, d = embedding.shape
  if dist.shape != (b, length, vocab):
    raise ValueError(f"{name} must have shape {(b, length, vocab)} (input_ids [B, L], "
                     f"embedding [V, d]), got {dist.shape}")

  cdt = jnp.dtype(compute_dtype) if compute_dtype is not None else embedding.dtype
  exact = jax.lax.stop_gradient(embedding)
  p = probs if probs is not None else jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  soft = _embed_product(p.astype(cdt).reshape(b * length, vocab), exact.astype(cdt))
  soft = soft.reshape(b, length, d).astype(exact.dtype)
  if mode == "hard":
    # E[argmax p] + (pE − sg(pE)): the value is exactly the argmax embedding (x − x = 0) and
    # the derivative is that of (onehot − sg(p) + p) E, i.e. of p E.
    hard = jnp.take(exact, jnp.argmax(p, axis=-1), axis=0)
    soft = hard + (soft - jax.lax.stop_gradient(soft))
  # Observed positions are exact rows of E, as in the clean features u = φ(E[x0]): rounding
  # them to the compute dtype would offset every h from u by a constant.
  observed = jnp.take(exact, input_ids, axis=0)
  chex.assert_equal_shape([soft, observed])  # [B, L, d] both
  return jnp.where(predicted_mask[..., None], soft, observed)
