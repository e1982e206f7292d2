"""The diffusion transformer (DiT) of MDLM and DUO, in Flax NNX.

The same function as ``models/dit.py`` of kuleshov-group/mdlm and s-sahoo/duo (class
``DIT``; the Hugging Face release wraps it as ``backbone``):

  x = E[ids]                                    (or soft embeddings, [B, L, d])
  c = silu(MLP(timestep_embedding(sigma)))      (sigma zeroed if not time-conditioned)
  for each block:
    s1, g1, s2, g2 modulation = Linear(c) -> (shift_msa, scale_msa, gate_msa,
                                              shift_mlp, scale_mlp, gate_mlp)
    x = x + gate_msa * Wo attn(rope(Wqkv (LN(x) * (1 + scale_msa) + shift_msa)))
    x = x + gate_mlp * MLP(LN(x) * (1 + scale_mlp) + shift_mlp)
  logits = Linear(LN(x) * (1 + scale) + shift)  (final adaLN from c)

Mixed precision follows the PyTorch ``autocast(bfloat16)`` region of the original: with
``dtype=bfloat16`` every matmul (and attention) runs in bfloat16, LayerNorm statistics and
the residual stream stay in float32, and parameters are always float32. Logits are
returned in float32.

Dropout is explicit (``dropout_rng``) so the training step stays a pure function.

Padding (``attention_mask`` bool [B, L], True = real token): the released DIT has no
attention mask (MDLM/DUO pack or wrap their text, and their padded variants only drop the
padded positions from the loss). Here the padded keys are masked out of every query's
attention (jax.nn.dot_product_attention's ``mask``), the backbone contract's padding.
Rotary positions stay 0..L−1 of the padded row, as in LLaDA (no position offset): rotary
scores depend on position differences only, so the real positions of a padded row give
the logits of the unpadded row up to float rounding. σ conditions each row as a whole.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from tokendrift_jax import sharding
from tokendrift_jax.models import base
from tokendrift_jax.models.common import (HEADS, MLP, QKV, RESIDUAL, apply_rotary,
                                          check_attention_impl, check_attention_mask,
                                          key_mask, mask_for_impl, remat_policy_fn,
                                          resolve_attention_impl)
from tokendrift_jax.models.common import dropout as _dropout

FREQ_EMBED_DIM = 256     # TimestepEmbedder.frequency_embedding_size
ROPE_BASE = 10_000.0
LN_EPS = 1e-5            # torch.nn.functional.layer_norm default


@dataclasses.dataclass(frozen=True)
class DiTConfig(base.ConfigFields):
  """Architecture of a DiT backbone (what a checkpoint must agree with).

  Field names follow the MDLM/DUO hydra configs (``model.hidden_size`` etc.); the
  Hugging Face ``config.json`` names (``hidden_dim``, ``model_length``) are mapped by the
  converter.
  """
  vocab_size: int = 50258
  hidden_size: int = 768
  cond_dim: int = 128
  n_blocks: int = 12
  n_heads: int = 12
  length: int = 1024
  dropout: float = 0.1
  time_conditioning: bool = False
  mlp_ratio: int = 4

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "cond_dim", "n_blocks", "n_heads", "length",
                 "mlp_ratio"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"DiTConfig.{name} must be a positive int, got {value!r}")
    if self.hidden_size % self.n_heads:
      raise ValueError(f"DiTConfig.hidden_size={self.hidden_size} is not divisible by "
                       f"n_heads={self.n_heads}")
    if (self.hidden_size // self.n_heads) % 2:
      raise ValueError(f"head dim {self.hidden_size // self.n_heads} must be even for rotary")
    if not 0.0 <= float(self.dropout) < 1.0:
      raise ValueError(f"DiTConfig.dropout must be in [0, 1), got {self.dropout!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.n_heads

  @property
  def feature_dim(self) -> int:
    """TokenDrift feature size: [mean H^(L-1), mean H^(L)] = 2·hidden_size."""
    return 2 * self.hidden_size

  @property
  def mask_id(self) -> int:
    """MDLM appends the mask to the tokenizer: the last id, V − 1."""
    return self.vocab_size - 1

  @property
  def time_conditioned(self) -> bool:
    return bool(self.time_conditioning)

  def num_params(self) -> int:
    """Parameter count of the PyTorch ``DIT`` (the rotary buffer is not a parameter)."""
    d, c, v, f = self.hidden_size, self.cond_dim, self.vocab_size, FREQ_EMBED_DIM
    h = self.mlp_ratio * d
    sigma_map = f * c + c + c * c + c
    block = d + 3 * d * d + d * d + d + (d * h + h) + (h * d + d) + (c * 6 * d + 6 * d)
    final = d + (d * v + v) + (c * 2 * d + 2 * d)
    return v * d + sigma_map + self.n_blocks * block + final


def mdlm_small() -> DiTConfig:
  """The released 170M MDLM (kuleshov-group/mdlm-owt): GPT-2 vocab + mask token."""
  return DiTConfig(vocab_size=50258, hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12,
                   length=1024, dropout=0.1, time_conditioning=False)


def duo_small() -> DiTConfig:
  """The released DUO OWT model, time-conditioned: len(tokenizer) = GPT-2's 50257 plus the
  [PAD] token that DUO's ``get_tokenizer`` adds (uniform state, no mask)."""
  return DiTConfig(vocab_size=50258, hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12,
                   length=1024, dropout=0.1, time_conditioning=True)


# ----------------------------------------------------------------------------- init
# PyTorch defaults of the original modules, so a from-scratch model starts where the
# PyTorch one would: nn.Linear weight and bias ~ U(+-1/sqrt(fan_in)); the embedding is
# kaiming_uniform(a=sqrt(5)) on [V, d] -> U(+-1/sqrt(d)); adaLN and the output layer 0.


def _torch_uniform(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _linear(din: int, dout: int, *, bias: bool, dtype, rngs: nnx.Rngs, zero: bool = False):
  init = nnx.initializers.zeros if zero else _torch_uniform(din)
  return nnx.Linear(din, dout, use_bias=bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=init, bias_init=init, rngs=rngs)


# ----------------------------------------------------------------------------- layers


class LayerNorm(nnx.Module):
  """Bias-free LayerNorm, statistics and output in float32 (as the original)."""

  def __init__(self, dim: int):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))

  def __call__(self, x):
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * self.weight[...]


def modulate(x, shift, scale):
  """x [B, L, d] (float32), shift/scale [B, d] -> x * (1 + scale) + shift (float32)."""
  # (1 + scale) is formed in scale's dtype before the float32 product, as under autocast.
  return x * (1 + scale[:, None, :]).astype(jnp.float32) + shift[:, None, :].astype(jnp.float32)


def timestep_embedding(t, dim: int = FREQ_EMBED_DIM, max_period: float = 10_000.0):
  """Sinusoidal embedding [cos, sin] of t [B] -> [B, dim] float32 (GLIDE/DiT form)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def rotary_cos_sin(length: int, head_dim: int):
  """cos, sin of shape [L, head_dim/2] in float32 (Rotary buffer inv_freq, base 1e4)."""
  inv_freq = 1.0 / (ROPE_BASE ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
  return jnp.cos(freqs), jnp.sin(freqs)




class TimestepEmbedder(nnx.Module):
  def __init__(self, cond_dim: int, *, rngs: nnx.Rngs):
    self.mlp = nnx.List([
        _linear(FREQ_EMBED_DIM, cond_dim, bias=True, dtype=jnp.float32, rngs=rngs),
        _linear(cond_dim, cond_dim, bias=True, dtype=jnp.float32, rngs=rngs),
    ])

  def __call__(self, sigma):
    h = self.mlp[0](timestep_embedding(sigma))
    return self.mlp[1](jax.nn.silu(h))


class Embedding(nnx.Module):
  def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
    self.embedding = nnx.Param(_torch_uniform(dim)(rngs.params(), (vocab_size, dim)))

  def __call__(self, ids):
    return jnp.take(self.embedding[...], ids, axis=0)


class DiTBlock(nnx.Module):
  """DDiTBlock with adaLN (the non-causal block of both repositories)."""

  def __init__(self, cfg: DiTConfig, *, dtype, attention_impl, rngs: nnx.Rngs):
    d, h = cfg.hidden_size, cfg.mlp_ratio * cfg.hidden_size
    self.n_heads = cfg.n_heads
    self.dropout = float(cfg.dropout)
    self.dtype = dtype
    self.attention_impl = check_attention_impl(attention_impl)
    self.norm1 = LayerNorm(d)
    self.attn_qkv = _linear(d, 3 * d, bias=False, dtype=dtype, rngs=rngs)
    self.attn_out = _linear(d, d, bias=False, dtype=dtype, rngs=rngs)
    self.norm2 = LayerNorm(d)
    self.mlp = nnx.List([
        _linear(d, h, bias=True, dtype=dtype, rngs=rngs),
        _linear(h, d, bias=True, dtype=dtype, rngs=rngs),
    ])
    self.adaLN_modulation = _linear(cfg.cond_dim, 6 * d, bias=True, dtype=dtype, rngs=rngs,
                                    zero=True)

  def __call__(self, x, cos, sin, c, dropout_rng=None, mask=None):
    """x float32 [B, L, d], cos/sin [L, Dh/2], c [B, cond_dim] -> [B, L, d]; mask: None
    or bool [B, 1, 1, L], the keys attended (``common.key_mask``)."""
    b, length, d = x.shape
    (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
     gate_mlp) = jnp.split(self.adaLN_modulation(c), 6, axis=-1)
    rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))

    # Activation layout (identity without a sharding.activation_mesh), as LLaDA's.
    x = sharding.constrain(x, *RESIDUAL)
    qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
    qkv = sharding.constrain(qkv.reshape(b, length, 3, self.n_heads, d // self.n_heads), *QKV)
    q = apply_rotary(qkv[:, :, 0], cos, sin)
    k = apply_rotary(qkv[:, :, 1], cos, sin)
    impl = resolve_attention_impl(self.attention_impl, q.dtype, q.shape[-1])
    attn = jax.nn.dot_product_attention(
        q, k, qkv[:, :, 2], mask=mask_for_impl(mask, impl, length), is_causal=False,
        implementation=impl)
    attn = sharding.constrain(attn, *HEADS)
    out = self.attn_out(attn.reshape(b, length, d))
    x = sharding.constrain(x + gate_msa[:, None, :] * _dropout(out, self.dropout, rngs[0]),
                           *RESIDUAL)

    hid = jax.nn.gelu(self.mlp[0](modulate(self.norm2(x), shift_mlp, scale_mlp)),
                      approximate=True)
    out = self.mlp[1](sharding.constrain(hid, *MLP))
    return sharding.constrain(x + gate_mlp[:, None, :] * _dropout(out, self.dropout, rngs[1]),
                              *RESIDUAL)


class FinalLayer(nnx.Module):
  def __init__(self, cfg: DiTConfig, *, dtype, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.norm_final = LayerNorm(d)
    self.linear = _linear(d, cfg.vocab_size, bias=True, dtype=dtype, rngs=rngs, zero=True)
    self.adaLN_modulation = _linear(cfg.cond_dim, 2 * d, bias=True, dtype=dtype, rngs=rngs,
                                    zero=True)

  def __call__(self, x, c):
    shift, scale = jnp.split(self.adaLN_modulation(c), 2, axis=-1)
    return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nnx.Module):
  """The MDLM/DUO backbone.

  Args:
    config: architecture.
    dtype: compute dtype of matmuls and attention (float32 or bfloat16). Parameters are
      float32 either way.
    attention_impl: passed to ``jax.nn.dot_product_attention`` (None lets XLA pick;
      "xla"; "cudnn" for the cuDNN flash kernel on GPU; "auto" = "cudnn" on a GPU when the
      compute dtype is bfloat16/float16 and the head dim suits it, else "xla").
    remat: rematerialise each block in the backward pass (saves activation memory).
    remat_policy: what a rematerialised block keeps from its forward pass, a name in
      ``jax.checkpoint_policies`` (see ``REMAT_POLICIES``): "" = jax's default, i.e. save
      nothing and recompute the whole block (same as "nothing_saveable"); "dots_saveable"
      keeps every matmul output and recomputes only elementwise work;
      "dots_with_no_batch_dims_saveable" keeps the Linear outputs and recomputes
      attention. Ignored when ``remat`` is False. The values computed are the same.
    scan_layers: run the blocks with ``lax.scan`` over their stacked parameters (compiles
      one block instead of n_blocks; the parameter tree keeps one entry per block, and the
      function is the same).
  """

  def __init__(self, config: DiTConfig, *, dtype=jnp.float32, attention_impl: str | None = None,
               remat: bool = False, remat_policy: str = "", scan_layers: bool = False,
               rngs: nnx.Rngs):
    self.config = config
    self.dtype = jnp.dtype(dtype)
    if self.dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
      raise ValueError(f"DiT compute dtype must be float32 or bfloat16, got {self.dtype}")
    self.remat = bool(remat)
    self.remat_policy = str(remat_policy or "")
    remat_policy_fn(self.remat_policy)  # validates the name at construction
    self.scan_layers = bool(scan_layers)
    self.vocab_embed = Embedding(config.vocab_size, config.hidden_size, rngs=rngs)
    self.sigma_map = TimestepEmbedder(config.cond_dim, rngs=rngs)
    self.blocks = nnx.List([
        DiTBlock(config, dtype=self.dtype, attention_impl=attention_impl, rngs=rngs)
        for _ in range(config.n_blocks)
    ])
    self.output_layer = FinalLayer(config, dtype=self.dtype, rngs=rngs)

  def embed(self, input_ids):
    """int[B, L] -> float32[B, L, d] token embeddings."""
    return self.vocab_embed(input_ids)

  def embedding_table(self):
    """The token-embedding matrix E, float32 [V, d]."""
    return self.vocab_embed.embedding[...]

  def __call__(self, input_ids=None, sigma=None, *, embeds=None, dropout_rng=None,
               return_hidden: bool | int = False, attention_mask=None, head: bool = True):
    """Raw backbone output (before SUBS / log-softmax).

    Args:
      input_ids: int[B, L] token ids, or None when ``embeds`` is given.
      sigma: float[B] noise level; zeroed when the config is not time-conditioned (MDLM),
        exactly as the released MDLM backbone does. None means zeros.
      embeds: float[B, L, d] input embeddings used instead of the lookup (soft tokens).
      dropout_rng: PRNG key enabling dropout (training); None = deterministic.
      return_hidden: also return block outputs, each float32 [B, L, d]: True = all
        n_blocks, an int k = the last k (the drift features need the last two).
      attention_mask: optional bool [B, L], True at real tokens: padded keys are attended
        by no query (see the module doc); outputs at padded positions are meaningless.
        None = every position is real (the same program as without the argument).
      head: False (with ``return_hidden``) skips the output layer: logits are None and
        ``output_layer``'s parameters are never read (``FAMILY.head_keys``).

    Returns:
      float32[B, L, V] logits, or (logits, hidden) when ``return_hidden``.
    """
    cfg = self.config
    if not head and not return_hidden:
      raise ValueError("head=False returns only hidden states: pass return_hidden")
    if embeds is None:
      if input_ids is None:
        raise ValueError("DiT needs input_ids or embeds")
      if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
      x = self.embed(input_ids)
    else:
      if input_ids is not None:
        raise ValueError("pass either input_ids or embeds, not both")
      if embeds.ndim != 3 or embeds.shape[-1] != cfg.hidden_size:
        raise ValueError(f"embeds must be [B, L, {cfg.hidden_size}], got {tuple(embeds.shape)}")
      x = embeds.astype(jnp.float32)
    b, length = x.shape[:2]
    if length > cfg.length:
      raise ValueError(f"sequence length {length} exceeds the model length {cfg.length}")
    mask = key_mask(check_attention_mask(attention_mask, b, length))
    if sigma is None or not cfg.time_conditioning:
      sigma = jnp.zeros((b,), jnp.float32)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
    c = jax.nn.silu(self.sigma_map(sigma))
    cos, sin = rotary_cos_sin(length, cfg.head_dim)

    keys = [None] * cfg.n_blocks
    if dropout_rng is not None and cfg.dropout > 0:
      keys = list(jax.random.split(dropout_rng, cfg.n_blocks))
    n_keep = 0 if not return_hidden else (cfg.n_blocks if return_hidden is True
                                          else int(return_hidden))
    if not 0 <= n_keep <= cfg.n_blocks:
      raise ValueError(f"return_hidden={return_hidden!r} must be a bool or 0..{cfg.n_blocks}")

    # The mask rides along only when given, so an unpadded call traces what it did before.
    extra = () if mask is None else (mask,)

    def run_block(block, x, key):
      if self.remat:
        gdef, state = nnx.split(block)
        return _remat_block(gdef, self.remat_policy)(state, x, cos, sin, c, key, *extra)
      return block(x, cos, sin, c, key, *extra)

    # Blocks before the ones whose outputs are returned may be scanned.
    n_scan = cfg.n_blocks - max(n_keep, 1) if self.scan_layers else 0
    if n_scan > 1:
      x = self._scan_blocks(x, cos, sin, c, keys[:n_scan], n_scan, extra)
    else:
      n_scan = 0
    hidden = []
    for i in range(n_scan, cfg.n_blocks):
      x = run_block(self.blocks[i], x, keys[i])
      if i >= cfg.n_blocks - n_keep:
        hidden.append(x)
    if not head:
      return None, hidden
    logits = self.output_layer(x, c).astype(jnp.float32)
    return (logits, hidden) if return_hidden else logits

  def _scan_blocks(self, x, cos, sin, c, keys, n, extra=()):
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
        return _remat_block(gdef, self.remat_policy)(state, h, cos, sin, c, key, *extra), None
      return nnx.merge(gdef, state)(h, cos, sin, c, key, *extra), None

    x, _ = jax.lax.scan(body, x, (stacked, key_arr))
    return x


def _remat_block(gdef, policy: str):
  """jax.checkpoint of a block as a pure function of its state.

  The block is rebuilt from (graphdef, state) inside the checkpointed function, so nothing
  is written back to Variables created at another trace level (``nnx.remat`` would: it
  fails for the frozen encoder, whose module is built outside the loss's grad trace).
  """
  return jax.checkpoint(lambda state, *args: nnx.merge(gdef, state)(*args),
                        policy=remat_policy_fn(policy))


# ----------------------------------------------------------------------------- sharding
# Logical names of every parameter dim (models.base.Family.logical_axes), by the path's
# last two or three entries. Megatron-style tensor parallelism: the dims that index heads
# (qkv's output, attn_out's input), MLP hidden units and vocabulary entries are "heads",
# "mlp", "vocab" (split over ``tensor``), so the matmul into such a dim needs no
# communication and the one out of it ends in a single all-reduce. The model width
# d is "embed" (split over ``fsdp``: ZeRO-3 memory, gathered before use). The adaLN
# modulations' 6d (2d) outputs are chunks of d added to the residual stream, which every
# tensor shard holds whole: "embed", not "heads". The timestep MLP (256·c + c² weights),
# the conditioning width c, biases of d and LayerNorm scales are small and stay whole.
# The fused qkv's output dim is [3, H, Dh] flattened (the PyTorch layout the checkpoints
# keep): an even split of it gives a shard q of some heads and k, v of others, so XLA
# regroups the qkv activations by head (a collective) before attention. The values are
# the same; separate q, k, v projections would make the head split communication-free.
_BLOCK = ("blocks", "*")  # any block index
_LOGICAL = {
    ("vocab_embed", "embedding"): ("vocab", "embed"),
    ("sigma_map", "mlp", "0", "kernel"): (None, None),
    ("sigma_map", "mlp", "0", "bias"): (None,),
    ("sigma_map", "mlp", "1", "kernel"): (None, None),
    ("sigma_map", "mlp", "1", "bias"): (None,),
    _BLOCK + ("norm1", "weight"): (None,),
    _BLOCK + ("attn_qkv", "kernel"): ("embed", "heads"),
    _BLOCK + ("attn_out", "kernel"): ("heads", "embed"),
    _BLOCK + ("norm2", "weight"): (None,),
    _BLOCK + ("mlp", "0", "kernel"): ("embed", "mlp"),
    _BLOCK + ("mlp", "0", "bias"): ("mlp",),
    _BLOCK + ("mlp", "1", "kernel"): ("mlp", "embed"),
    _BLOCK + ("mlp", "1", "bias"): (None,),
    _BLOCK + ("adaLN_modulation", "kernel"): (None, "embed"),
    _BLOCK + ("adaLN_modulation", "bias"): (None,),
    ("output_layer", "norm_final", "weight"): (None,),
    ("output_layer", "linear", "kernel"): ("embed", "vocab"),
    ("output_layer", "linear", "bias"): ("vocab",),
    ("output_layer", "adaLN_modulation", "kernel"): (None, "embed"),
    ("output_layer", "adaLN_modulation", "bias"): (None,),
}


def logical_axes(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[str | None, ...]:
  """One logical name per dim of the DiT parameter at ``path`` (pure-dict keys as strings).

  E.g. ``("blocks", "3", "attn_qkv", "kernel")``, shape [d, 3d] -> ("embed", "heads").
  ValueError naming the path for a parameter the DiT does not have or a wrong rank.
  """
  path = tuple(str(p) for p in path)
  key = path
  if len(path) > 1 and path[0] == "blocks" and path[1].isdigit():
    key = _BLOCK + path[2:]
  names = _LOGICAL.get(key)
  if names is None:
    raise ValueError(f"DiT has no parameter {'/'.join(path)} (shape {tuple(shape)})")
  if len(names) != len(shape):
    raise ValueError(f"DiT parameter {'/'.join(path)} has shape {tuple(shape)}, expected "
                     f"rank {len(names)}")
  return names


# ----------------------------------------------------------------------------- FLOPs


@dataclasses.dataclass(frozen=True)
class DiTFlops:
  """Analytic matmul FLOPs of the DiT (:class:`models.base.FlopModel`), 2 per multiply-add.

  d = hidden_size, r = mlp_ratio, n = n_blocks, c = cond_dim, V = vocab_size, f = 256 (the
  timestep frequency embedding). Forward, per token (every Linear is x·W)::

    block linears   2·(3d² + d² + 2·r·d²)   qkv, attn_out, mlp in + out  (= 2·their params)
    attention       2·2·L·d                 QKᵀ (L keys × d) and P·V (L values × d)
    output layer    2·d·V                   (with the output layer only)

  Per sequence (the conditioning path, independent of L)::

    sigma map       2·(f·c + c²)            TimestepEmbedder's two Linears
    adaLN           n·2·c·6d                one per block
    final adaLN     2·c·2d                  (with the output layer only)

  The embedding lookup is a gather (0 FLOPs). Backward: 2× the forward, less the first
  σ-map Linear's input gradient (2·f·c; the sinusoid of σ needs none); the embedding's
  gradient is a scatter-add. Input-only backward (frozen encoder): 1× the block linears
  (x̄ = ȳ·Wᵀ) and 2× attention (both operands of QKᵀ and P·V are activations); the
  conditioning path is constant.
  """
  cfg: DiTConfig

  def block_linear_per_token(self) -> int:
    d, r = self.cfg.hidden_size, self.cfg.mlp_ratio
    return 2 * (3 * d * d + d * d + 2 * r * d * d)

  def attention_per_token(self, length: int) -> int:
    return 4 * length * self.cfg.hidden_size

  def conditioning(self, *, final: bool) -> int:
    c, d = self.cfg.cond_dim, self.cfg.hidden_size
    total = 2 * (FREQ_EMBED_DIM * c + c * c) + self.cfg.n_blocks * 2 * c * 6 * d
    return total + (2 * c * 2 * d if final else 0)

  def forward(self, length: int, *, output_layer: bool) -> int:
    cfg = self.cfg
    per_token = cfg.n_blocks * (self.block_linear_per_token() + self.attention_per_token(length))
    if output_layer:
      per_token += 2 * cfg.hidden_size * cfg.vocab_size
    return length * per_token + self.conditioning(final=output_layer)

  def backward(self, length: int) -> int:
    # Twice the forward, less the input gradient of the σ map's first Linear (its input,
    # the sinusoidal embedding, is not differentiated).
    return 2 * self.forward(length, output_layer=True) - 2 * FREQ_EMBED_DIM * self.cfg.cond_dim

  def input_backward(self, length: int) -> int:
    # Input gradients only: one product per Linear, two per attention product.
    n = self.cfg.n_blocks
    return n * length * (self.block_linear_per_token() + 2 * self.attention_per_token(length))

  def shared_forward(self, length: int) -> int:
    del length
    return self.conditioning(final=False)

  def recompute(self, length: int, policy: str, *, weight_grads: bool) -> int:
    """Extra forward products of one differentiated block stack under remat ``policy``.

    Only what the backward pass reads is recomputed (XLA removes the rest):

    * ``nothing_saveable``: every product of the block, except, when the stack has no
      weight gradients (the frozen encoder), the MLP's output Linear: its result only
      forms the block output, and the next block's input is saved. The adaLN products
      depend on the conditioning only and are not recomputed.
    * ``dots_with_no_batch_dims_saveable``: the attention products (they have batch
      dimensions; Linear outputs are saved); without weight gradients only QKᵀ (P·V's
      result only feeds attn_out, whose input is needed for its weight gradient alone).
    * ``dots_saveable`` / ``everything_saveable`` / "": none.
    """
    remat_policy_fn(policy)  # validates the name
    cfg = self.cfg
    d, r = cfg.hidden_size, cfg.mlp_ratio
    attn = cfg.n_blocks * length * self.attention_per_token(length)
    if policy == "nothing_saveable":
      linear = cfg.n_blocks * length * self.block_linear_per_token()
      if not weight_grads:
        linear -= cfg.n_blocks * length * 2 * r * d * d
      return linear + attn
    if policy == "dots_with_no_batch_dims_saveable":
      return attn if weight_grads else attn // 2
    return 0

  def lift(self, length: int) -> int:
    return 2 * length * self.cfg.vocab_size * self.cfg.hidden_size


FAMILY = base.Family(
    name="dit", config_cls=DiTConfig, module_cls=DiT, flops=DiTFlops,
    compatible_fields=("dropout",), logical_axes=logical_axes,
    hub_names={"mdlm": "kuleshov-group/mdlm-owt", "duo": "s-sahoo/duo"},
    # Both releases use GPT-2's tokenizer (DUO's get_tokenizer adds [PAD] to it).
    tokenizer="gpt2", skip_special_tokens=False, head_keys=("output_layer",),
    # tiny: head dim 64 (cuDNN flash attention needs a multiple of 8, at most 128). 170m:
    # the releases; its 50258 ids are GPT-2 + mask for MDLM, GPT-2 + [PAD] for DUO.
    sizes={"tiny": dict(vocab_size=1024, hidden_size=256, cond_dim=64, n_blocks=2, n_heads=4),
           "170m": dict(vocab_size=50258, hidden_size=768, cond_dim=128, n_blocks=12,
                        n_heads=12, mlp_ratio=4)})
