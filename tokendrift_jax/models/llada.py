"""The LLaDA backbone (LLaDA-8B Base / Instruct), in Flax NNX.

The same function as ``LLaDAModel.forward`` of the public ``modeling_llada.py`` (the
Hugging Face release of GSAI-ML/LLaDA-8B-Base; ``LLaDALlamaBlock``, no KV cache) for the
configurations that release uses:

  x = E[ids]                                    (or soft embeddings, [B, L, d])
  for each block (pre-norm, "llama" block):
    h = RMSNorm(x)
    q, k, v = h Wq, h Wk, h Wv                  (k, v with n_kv_heads heads: GQA)
    x = x + Wo attn(rope(q), rope(k), v)        (bidirectional, scale 1/sqrt(head_dim))
    h = RMSNorm(x)
    x = x + W_ff_out (silu(h W_ff_proj) * (h W_up_proj))
  logits = RMSNorm(x) W_out                     (W_out = Eᵀ when weight_tying)

RMSNorm(x) = w · x / sqrt(mean(x²) + eps), statistics in float32 (``RMSLayerNorm``).
Rotary acts on the two halves of each head (``rotate_half``), inv_freq =
rope_theta^(−2i/head_dim), in float32 when ``rope_full_precision`` (as the release). There
is no time conditioning: σ is ignored.

Mixed precision follows PyTorch ``autocast(bfloat16)`` (the release's ``precision:
amp_bf16``): with ``dtype=bfloat16`` every matmul and the attention run in bfloat16, the
RMSNorm statistics, the rotary and the residual stream stay float32, parameters are
float32. Logits are returned in float32.

Dropout (``dropout`` = the release's ``residual_dropout`` on both residual branches, and
``embedding_dropout``) is explicit (``dropout_rng``); the release sets both to 0.

Padding (``attention_mask`` bool [B, L], True = real token), as the release's
``LLaDAModel.forward``: the mask becomes an additive bias of float min on the padded *keys*
([B, 1, 1, L], every query of the row), here jax.nn.dot_product_attention's ``mask``.
Rotary positions stay 0..L−1 of the padded row: the release's ``RotaryEmbedding`` takes no
position ids (its generate.py left-pads prompts and passes only ``attention_mask``). Rotary
attention scores depend on position differences only, so a left-padded row's real
positions see the logits of the unpadded row up to float rounding.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from tokendrift_jax import sharding
from tokendrift_jax.models import base
from tokendrift_jax.models.common import (HEADS, KV_HEADS, LOGITS, MLP, RESIDUAL,
                                          apply_rotary, check_attention_impl,
                                          check_attention_mask, key_mask, mask_for_impl,
                                          remat_policy_fn, resolve_attention_impl)
from tokendrift_jax.models.common import dropout as _dropout


@dataclasses.dataclass(frozen=True)
class LLaDAConfig(base.ConfigFields):
  """Architecture of a LLaDA backbone (what a checkpoint must agree with).

  Defaults are LLaDA-8B-Base's ``config.json``. Field names follow that file, except
  ``length`` (its ``max_sequence_length``) and ``dropout`` (its ``residual_dropout``), the
  names of the backbone contract.

  Attributes:
    vocab_size: rows of the embedding table and columns of the logits (the release's
      ``vocab_size`` = ``embedding_size``; padded tables are not supported).
    d_model: width of the residual stream.
    n_layers: number of blocks.
    n_heads: query heads; head_dim = d_model / n_heads.
    n_kv_heads: key/value heads (grouped-query attention); divides n_heads.
    mlp_hidden_size: width of the gated MLP.
    length: maximum sequence length.
    rope_theta: rotary base.
    rms_norm_eps: RMSNorm epsilon.
    mask_token_id: the id of the mask token of LLaDA's masked diffusion.
    weight_tying: logits use the embedding table (no separate output layer).
    rope_full_precision: rotary in float32 (True) or in the compute dtype.
    dropout: residual dropout rate (training only).
    embedding_dropout: dropout rate on the input embeddings (training only).
  """
  vocab_size: int = 126464
  d_model: int = 4096
  n_layers: int = 32
  n_heads: int = 32
  n_kv_heads: int = 32
  mlp_hidden_size: int = 12288
  length: int = 4096
  rope_theta: float = 500000.0
  rms_norm_eps: float = 1e-5
  mask_token_id: int = 126336
  weight_tying: bool = False
  rope_full_precision: bool = True
  dropout: float = 0.0
  embedding_dropout: float = 0.0

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                 "mlp_hidden_size", "length"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"LLaDAConfig.{name} must be a positive int, got {value!r}")
    if self.d_model % self.n_heads:
      raise ValueError(f"LLaDAConfig.d_model={self.d_model} is not divisible by "
                       f"n_heads={self.n_heads}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"LLaDAConfig.n_heads={self.n_heads} is not a multiple of "
                       f"n_kv_heads={self.n_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head dim {self.head_dim} must be even for rotary")
    for name in ("rope_theta", "rms_norm_eps"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"LLaDAConfig.{name} must be a positive number, got {value!r}")
    for name in ("weight_tying", "rope_full_precision"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"LLaDAConfig.{name} must be a bool, got {getattr(self, name)!r}")
    for name in ("dropout", "embedding_dropout"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"LLaDAConfig.{name} must be in [0, 1), got {value!r}")
    m = self.mask_token_id
    if not isinstance(m, int) or isinstance(m, bool) or not 0 <= m < self.vocab_size:
      raise ValueError(f"LLaDAConfig.mask_token_id must be an id in [0, {self.vocab_size}), "
                       f"got {m!r}")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads

  @property
  def kv_dim(self) -> int:
    """Width of the key and value projections, n_kv_heads · head_dim."""
    return self.n_kv_heads * self.head_dim

  @property
  def feature_dim(self) -> int:
    """TokenDrift feature size: [mean H^(L-1), mean H^(L)] = 2·d_model."""
    return 2 * self.d_model

  @property
  def mask_id(self) -> int:
    return self.mask_token_id

  @property
  def time_conditioned(self) -> bool:
    return False

  def num_params(self) -> int:
    """Parameter count of the PyTorch ``LLaDAModel`` (no biases; rotary has no parameter)."""
    d, h, v = self.d_model, self.mlp_hidden_size, self.vocab_size
    block = 2 * d + d * d + 2 * d * self.kv_dim + d * d + 3 * d * h
    return v * d + self.n_layers * block + d + (0 if self.weight_tying else d * v)


# ----------------------------------------------------------------------------- init
# The release's init_fn "mitchell": truncated normal (±3 std) with std = 1/sqrt(fan_in),
# divided by sqrt(2 (layer + 1)) for the two residual outputs (attn_out, ff_out) of a
# block; norms start at one. Only training from scratch sees it.


def _mitchell(fan_in: int, layer: int | None = None):
  std = 1.0 / math.sqrt(fan_in)
  if layer is not None:
    std /= math.sqrt(2 * (layer + 1))

  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.truncated_normal(key, -3.0, 3.0, shape, dtype)
  return init


def _linear(din: int, dout: int, *, dtype, rngs: nnx.Rngs, layer: int | None = None):
  return nnx.Linear(din, dout, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=_mitchell(din, layer), rngs=rngs)


# ----------------------------------------------------------------------------- math


def rms_norm(x, weight, eps: float):
  """RMSNorm of x [..., d]: weight · x / sqrt(mean(x², -1) + eps) (``RMSLayerNorm``).

  The statistics are taken in float32 and the normalised x is cast back to x's dtype
  before the weight multiplies it, as the original does.
  """
  x32 = x.astype(jnp.float32)
  var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
  return weight * (x32 * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def rotary_cos_sin(length: int, head_dim: int, theta: float):
  """cos, sin float32 [L, head_dim/2] of angles l · theta^(−2i/head_dim) (float32 inv_freq,
  as ``RotaryEmbedding.get_rotary_embedding``)."""
  exponent = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  inv_freq = 1.0 / jnp.power(jnp.float32(theta), exponent)
  angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
  return jnp.cos(angles), jnp.sin(angles)


def rotary_cos_sin_at(positions, head_dim: int, theta: float):
  """cos, sin float32 [B, L, head_dim/2] at per-row integer positions int[B, L] (the same
  angles as :func:`rotary_cos_sin` at equal positions: position · inv_freq in float32)."""
  exponent = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  inv_freq = 1.0 / jnp.power(jnp.float32(theta), exponent)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.cos(angles), jnp.sin(angles)




# ----------------------------------------------------------------------------- layers


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, eps: float):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.eps = float(eps)

  def __call__(self, x):
    return rms_norm(x, self.weight[...], self.eps)


class Embedding(nnx.Module):
  def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
    self.embedding = nnx.Param(_mitchell(dim)(rngs.params(), (vocab_size, dim)))

  def __call__(self, ids):
    return jnp.take(self.embedding[...], ids, axis=0)


class LLaDABlock(nnx.Module):
  """``LLaDALlamaBlock``: pre-norm attention and gated-SiLU MLP, both residual."""

  def __init__(self, cfg: LLaDAConfig, layer: int, *, dtype, attention_impl,
               rngs: nnx.Rngs):
    d, h = cfg.d_model, cfg.mlp_hidden_size
    self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    self.dropout = float(cfg.dropout)
    self.rope_dtype = jnp.float32 if cfg.rope_full_precision else dtype
    self.attention_impl = check_attention_impl(attention_impl)
    self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
    self.q_proj = _linear(d, d, dtype=dtype, rngs=rngs)
    self.k_proj = _linear(d, cfg.kv_dim, dtype=dtype, rngs=rngs)
    self.v_proj = _linear(d, cfg.kv_dim, dtype=dtype, rngs=rngs)
    self.attn_out = _linear(d, d, dtype=dtype, rngs=rngs, layer=layer)
    self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
    self.ff_proj = _linear(d, h, dtype=dtype, rngs=rngs)
    self.up_proj = _linear(d, h, dtype=dtype, rngs=rngs)
    self.ff_out = _linear(h, d, dtype=dtype, rngs=rngs, layer=layer)

  def __call__(self, x, cos, sin, dropout_rng=None, mask=None):
    """x float32 [B, L, d] -> float32 [B, L, d]; cos/sin [L, head_dim/2]; mask: None or
    bool [B, 1, 1, L], the keys attended (``common.key_mask``)."""
    b, length, d = x.shape
    rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
    # Activation layout (identity without a sharding.activation_mesh): rows over the batch
    # axes, heads and MLP hidden units over tensor.
    x = sharding.constrain(x, *RESIDUAL)

    h = self.attn_norm(x)
    q = sharding.constrain(self.q_proj(h).reshape(b, length, self.n_heads, self.head_dim),
                           *HEADS)
    k = sharding.constrain(self.k_proj(h).reshape(b, length, self.n_kv_heads, self.head_dim),
                           *KV_HEADS)
    v = sharding.constrain(self.v_proj(h).reshape(b, length, self.n_kv_heads, self.head_dim),
                           *KV_HEADS)
    # The release rotates in float32 (rope_full_precision) and casts back to q's dtype.
    q = apply_rotary(q.astype(self.rope_dtype), cos, sin).astype(v.dtype)
    k = apply_rotary(k.astype(self.rope_dtype), cos, sin).astype(v.dtype)
    # GQA: query head n reads kv head n // (n_heads / n_kv_heads), as repeat_interleave.
    impl = resolve_attention_impl(self.attention_impl, q.dtype, self.head_dim)
    attn = jax.nn.dot_product_attention(
        q, k, v, mask=mask_for_impl(mask, impl, length), is_causal=False,
        implementation=impl)
    attn = sharding.constrain(attn, *HEADS)
    x = x + _dropout(self.attn_out(attn.reshape(b, length, d)), self.dropout, rngs[0])
    x = sharding.constrain(x, *RESIDUAL)

    h = self.ff_norm(x)
    hidden = sharding.constrain(jax.nn.silu(self.ff_proj(h)) * self.up_proj(h), *MLP)
    out = self.ff_out(hidden)
    return sharding.constrain(x + _dropout(out, self.dropout, rngs[1]), *RESIDUAL)


class LLaDA(nnx.Module):
  """The LLaDA backbone.

  Args:
    config: architecture.
    dtype: compute dtype of matmuls and attention (float32 or bfloat16). Parameters are
      float32 either way.
    attention_impl: passed to ``jax.nn.dot_product_attention`` (see
      ``models.common.ATTENTION_IMPLS``; "auto" picks cuDNN on a GPU in bfloat16).
    remat: rematerialise each block in the backward pass.
    remat_policy: a ``jax.checkpoint_policies`` name (``models.common.REMAT_POLICIES``);
      ignored when ``remat`` is False. The values computed are the same.
    scan_layers: run the blocks with ``lax.scan`` over their stacked parameters (one
      compiled block); the parameter tree keeps one entry per block, so checkpoints do not
      depend on it, and the function is the same.
  """

  def __init__(self, config: LLaDAConfig, *, dtype=jnp.float32,
               attention_impl: str | None = None, remat: bool = False,
               remat_policy: str = "", scan_layers: bool = False, rngs: nnx.Rngs):
    self.config = config
    self.dtype = jnp.dtype(dtype)
    if self.dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
      raise ValueError(f"LLaDA compute dtype must be float32 or bfloat16, got {self.dtype}")
    self.remat = bool(remat)
    self.remat_policy = str(remat_policy or "")
    remat_policy_fn(self.remat_policy)  # validates the name at construction
    self.scan_layers = bool(scan_layers)
    self.wte = Embedding(config.vocab_size, config.d_model, rngs=rngs)
    self.blocks = nnx.List([
        LLaDABlock(config, i, dtype=self.dtype, attention_impl=attention_impl, rngs=rngs)
        for i in range(config.n_layers)
    ])
    self.ln_f = RMSNorm(config.d_model, config.rms_norm_eps)
    if not config.weight_tying:
      self.ff_out = _linear(config.d_model, config.vocab_size, dtype=self.dtype, rngs=rngs)

  def embed(self, input_ids):
    """int[B, L] -> float32[B, L, d] token embeddings."""
    return self.wte(input_ids)

  def embedding_table(self):
    """The token-embedding matrix E, float32 [V, d]."""
    return self.wte.embedding[...]

  def output_layer(self, x):
    """float32 [B, L, d] (the last block's output) -> float32 logits [B, L, V]."""
    x = self.ln_f(x)
    if self.config.weight_tying:
      table = self.wte.embedding[...].astype(self.dtype)
      logits = jnp.einsum("bld,vd->blv", x.astype(self.dtype), table)
    else:
      logits = self.ff_out(x)
    return sharding.constrain(logits.astype(jnp.float32), *LOGITS)

  def __call__(self, input_ids=None, sigma=None, *, embeds=None, dropout_rng=None,
               return_hidden: bool | int = False, attention_mask=None, head: bool = True):
    """Raw backbone output (LLaDA's logits, before any softmax).

    Args:
      input_ids: int[B, L] token ids, or None when ``embeds`` is given.
      sigma: ignored (LLaDA is not time-conditioned); accepted for the contract.
      embeds: float[B, L, d] input embeddings used instead of the lookup (soft tokens; the
        release's ``input_embeddings``).
      dropout_rng: PRNG key enabling dropout (training); None = deterministic.
      return_hidden: also return block outputs, each float32 [B, L, d]: True = all
        n_layers, an int k = the last k.
      attention_mask: optional bool [B, L], True at real tokens: padded keys are attended
        by no query (see the module doc); outputs at padded positions are meaningless.
        None = every position is real (the same program as without the argument).
      head: False (with ``return_hidden``) skips the output layer: logits are None and
        its parameters are never read (``FAMILY.head_keys``).

    Returns:
      float32[B, L, V] logits, or (logits, hidden) when ``return_hidden``.
    """
    del sigma
    cfg = self.config
    if not head and not return_hidden:
      raise ValueError("head=False returns only hidden states: pass return_hidden")
    if embeds is None:
      if input_ids is None:
        raise ValueError("LLaDA needs input_ids or embeds")
      if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
      x = self.embed(input_ids)
    else:
      if input_ids is not None:
        raise ValueError("pass either input_ids or embeds, not both")
      if embeds.ndim != 3 or embeds.shape[-1] != cfg.d_model:
        raise ValueError(f"embeds must be [B, L, {cfg.d_model}], got {tuple(embeds.shape)}")
      x = embeds.astype(jnp.float32)
    length = x.shape[1]
    if length > cfg.length:
      raise ValueError(f"sequence length {length} exceeds the model length {cfg.length}")
    mask = key_mask(check_attention_mask(attention_mask, x.shape[0], length))
    n_keep = 0 if not return_hidden else (cfg.n_layers if return_hidden is True
                                          else int(return_hidden))
    if not 0 <= n_keep <= cfg.n_layers:
      raise ValueError(f"return_hidden={return_hidden!r} must be a bool or 0..{cfg.n_layers}")

    keys = [None] * cfg.n_layers
    if dropout_rng is not None:
      emb_key, block_key = jax.random.split(dropout_rng)
      x = _dropout(x, float(cfg.embedding_dropout), emb_key)
      if cfg.dropout > 0:
        keys = list(jax.random.split(block_key, cfg.n_layers))
    cos, sin = rotary_cos_sin(length, cfg.head_dim, cfg.rope_theta)

    # The mask rides along only when given, so an unpadded call traces what it did before.
    extra = () if mask is None else (mask,)

    def run_block(block, x, key):
      if self.remat:
        gdef, state = nnx.split(block)
        return _remat_block(gdef, self.remat_policy)(state, x, cos, sin, key, *extra)
      return block(x, cos, sin, key, *extra)

    # Blocks before the ones whose outputs are returned may be scanned.
    n_scan = cfg.n_layers - max(n_keep, 1) if self.scan_layers else 0
    if n_scan > 1:
      x = self._scan_blocks(x, cos, sin, keys[:n_scan], n_scan, extra)
    else:
      n_scan = 0
    hidden = []
    for i in range(n_scan, cfg.n_layers):
      x = run_block(self.blocks[i], x, keys[i])
      if i >= cfg.n_layers - n_keep:
        hidden.append(x)
    if not head:
      return None, hidden
    logits = self.output_layer(x)
    return (logits, hidden) if return_hidden else logits

  def _scan_blocks(self, x, cos, sin, keys, n, extra=()):
    """x through blocks[0:n] with lax.scan over their stacked parameters (``extra``: the
    key mask, when given, closed over as every block's)."""
    gdef, first = nnx.split(self.blocks[0])
    states = [nnx.split(self.blocks[i])[1] for i in range(n)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), first, *states[1:])
    use_keys = keys[0] is not None
    key_arr = jnp.stack(keys) if use_keys else jnp.zeros((n,), jnp.uint32)

    def body(h, inp):
      state, key = inp
      key = key if use_keys else None
      if self.remat:
        return _remat_block(gdef, self.remat_policy)(state, h, cos, sin, key, *extra), None
      return nnx.merge(gdef, state)(h, cos, sin, key, *extra), None

    x, _ = jax.lax.scan(body, x, (stacked, key_arr))
    return x


def _remat_block(gdef, policy: str):
  """jax.checkpoint of a block as a pure function of its state (rebuilt inside, so nothing
  is written back to Variables of another trace level; see models/dit.py)."""
  return jax.checkpoint(lambda state, *args: nnx.merge(gdef, state)(*args),
                        policy=remat_policy_fn(policy))


# ----------------------------------------------------------------------------- sharding

# Logical axis names of the kernels of one block ([in, out] for nnx.Linear).
_BLOCK_AXES = {
    "attn_norm": ("embed",), "ff_norm": ("embed",),
    "q_proj": ("embed", "heads"), "k_proj": ("embed", "kv_heads"),
    "v_proj": ("embed", "kv_heads"), "attn_out": ("heads", "embed"),
    "ff_proj": ("embed", "mlp"), "up_proj": ("embed", "mlp"), "ff_out": ("mlp", "embed"),
}
_TOP_AXES = {("wte", "embedding"): ("vocab", "embed"), ("ln_f", "weight"): ("embed",),
             ("ff_out", "kernel"): ("embed", "vocab")}


def logical_axes(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[str | None, ...]:
  """One logical axis name per dimension of the parameter at ``path`` (its pure-dict keys).

  Names: "vocab", "embed" (d_model), "heads" (n_heads · head_dim), "kv_heads" (n_kv_heads
  · head_dim), "mlp" (mlp_hidden_size). No "layers" axis: the parameter tree keeps one
  entry per block even with ``scan_layers``. Raises ValueError for a path that is not a
  LLaDA parameter or a shape of the wrong rank.
  """
  keys = tuple(str(k) for k in path)
  if len(keys) == 4 and keys[0] == "blocks" and keys[1].isdigit() and keys[2] in _BLOCK_AXES:
    axes = _BLOCK_AXES[keys[2]]
    leaf = "weight" if keys[2].endswith("_norm") else "kernel"
    if keys[3] != leaf:
      axes = None
  else:
    axes = _TOP_AXES.get(keys)
  if axes is None:
    raise ValueError(f"{'/'.join(keys)} is not a parameter of the LLaDA backbone")
  if len(shape) != len(axes):
    raise ValueError(f"{'/'.join(keys)}: expected a rank-{len(axes)} parameter {axes}, got "
                     f"shape {tuple(shape)}")
  return axes


# ----------------------------------------------------------------------------- FLOPs


@dataclasses.dataclass(frozen=True)
class LLaDAFlops:
  """Analytic matmul FLOPs of LLaDA (:class:`models.base.FlopModel`), 2 per multiply-add.

  d = d_model, k = n_kv_heads · head_dim, h = mlp_hidden_size, n = n_layers, V =
  vocab_size. Forward, per token (every Linear is x·W)::

    block linears   2·(2d² + 2dk + 3dh)   q, attn_out; k, v; ff_proj, up_proj, ff_out
    attention       2·2·L·d               QKᵀ and P·V over all n_heads (GQA shares k, v
                                          but not the products)
    output layer    2·d·V                 (ff_out, or Eᵀ when tied)

  No conditioning path. The embedding lookup is a gather (0 FLOPs). Backward: 2× the
  forward (weight and input gradient of every product; the first block's input gradient
  feeds the embedding's scatter-add). Input-only backward: 1× the block linears and 2×
  attention (both operands of QKᵀ and P·V are activations).
  """
  cfg: LLaDAConfig

  def block_linear_per_token(self) -> int:
    c = self.cfg
    d, k, h = c.d_model, c.kv_dim, c.mlp_hidden_size
    return 2 * (2 * d * d + 2 * d * k + 3 * d * h)

  def attention_per_token(self, length: int) -> int:
    return 4 * length * self.cfg.d_model

  def forward(self, length: int, *, output_layer: bool) -> int:
    cfg = self.cfg
    per_token = cfg.n_layers * (self.block_linear_per_token()
                                + self.attention_per_token(length))
    if output_layer:
      per_token += 2 * cfg.d_model * cfg.vocab_size
    return length * per_token

  def backward(self, length: int) -> int:
    return 2 * self.forward(length, output_layer=True)

  def input_backward(self, length: int) -> int:
    n = self.cfg.n_layers
    return n * length * (self.block_linear_per_token() + 2 * self.attention_per_token(length))

  def shared_forward(self, length: int) -> int:
    del length
    return 0

  def recompute(self, length: int, policy: str, *, weight_grads: bool) -> int:
    """Extra forward products of one differentiated block stack under remat ``policy``.

    Only what the backward pass reads is recomputed (XLA removes the rest):

    * ``nothing_saveable``: every product of the block but the MLP's output Linear
      (ff_out), with or without weight gradients: its result only forms the block output
      through the residual sum, whose backward needs no values (the DiT's differs: there
      the result is also multiplied by the adaLN gate). attn_out's result is recomputed:
      it forms the residual stream that ff_norm and the MLP read.
    * ``dots_with_no_batch_dims_saveable``: the attention products (Linear outputs are
      saved); without weight gradients only QKᵀ (P·V's result only feeds attn_out, whose
      input is needed for its weight gradient alone).
    * ``dots_saveable`` / ``everything_saveable`` / "": none.
    """
    remat_policy_fn(policy)  # validates the name
    cfg = self.cfg
    attn = cfg.n_layers * length * self.attention_per_token(length)
    if policy == "nothing_saveable":
      linear = cfg.n_layers * length * (self.block_linear_per_token()
                                        - 2 * cfg.mlp_hidden_size * cfg.d_model)
      return linear + attn
    if policy == "dots_with_no_batch_dims_saveable":
      return attn if weight_grads else attn // 2
    return 0

  def lift(self, length: int) -> int:
    return 2 * length * self.cfg.vocab_size * self.cfg.d_model


FAMILY = base.Family(
    name="llada", config_cls=LLaDAConfig, module_cls=LLaDA, flops=LLaDAFlops,
    compatible_fields=("dropout", "embedding_dropout"),
    hub_names={"llada": "GSAI-ML/LLaDA-8B-Base"},
    logical_axes=logical_axes,
    tokenizer="GSAI-ML/LLaDA-8B-Base", skip_special_tokens=True,
    head_keys=("ln_f", "ff_out"),   # ff_out is absent when weight_tying
    # tiny: head dim 64 (cuDNN flash attention needs a multiple of 8, at most 128), GQA
    # 4 -> 2, the mask id inside the vocabulary but not its last id (as the 8B's). 8b:
    # LLaDA-8B-Base's config.json.
    sizes={"tiny": dict(vocab_size=1024, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2,
                        mlp_hidden_size=688, rope_theta=500000.0, rms_norm_eps=1e-5,
                        mask_token_id=1000, weight_tying=False, rope_full_precision=True),
           "8b": dict(vocab_size=126464, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                      mlp_hidden_size=12288, length=4096, rope_theta=500000.0,
                      rms_norm_eps=1e-5, mask_token_id=126336, weight_tying=False,
                      rope_full_precision=True)})
