"""The Dream backbone (Dream-org/Dream-v0-Base-7B / -Instruct-7B), in Flax NNX.

The same function as ``DreamModel.forward`` of the public ``modeling_dream.py`` published
with the Dream-v0 checkpoints (no KV cache), whose blocks are Qwen2's:

  x = E[ids]                                    (or soft embeddings, [B, L, d])
  for each block (``DreamDecoderLayer``, pre-norm):
    h = RMSNorm(x)                               (input_layernorm)
    q, k, v = h Wq + bq, h Wk + bk, h Wv + bv    (k, v with n_kv_heads heads: GQA)
    x = x + Wo attn(rope(q), rope(k), v)         (bidirectional: ``is_causal = False``; no o bias)
    h = RMSNorm(x)                               (post_attention_layernorm)
    x = x + W_down (silu(h W_gate) * (h W_up))
  raw = RMSNorm(x) W_lm_head                     (W_lm_head = Eᵀ when tie_word_embeddings)

RMSNorm(x) = w · x / sqrt(mean(x²) + eps) with eps = ``rms_norm_eps``, statistics in
float32 (``DreamRMSNorm``). Rotary acts on the halves of each head (``rotate_half``),
inv_freq = rope_theta^(−2i/head_dim) in float32, positions 0..L−1 (``position_ids =
arange``); only the default rope type (``rope_scaling`` null) is built.

**Shifted prediction.** Dream keeps the autoregressive alignment of the Qwen2.5 model it
was initialised from: the raw logit at position i predicts token i + 1. Its sampler
(``generation_utils.py``, ``_sample``) re-aligns them before reading them at the masked
positions::

    logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)

so the prediction used for position i is the raw logit at i − 1, and position 0 uses its
own raw logit. :meth:`Dream.__call__` returns the logits **so aligned** (``align=True``,
the default), the backbone contract's "logit at i is the prediction of token i" that the
processes, the TokenDrift lift and its features read; ``align=False`` returns the raw
``DreamModel`` logits. The alignment is applied to the final hidden state before the
position-wise output layer (the same values as shifting the logits, without a second
[B, L, V] array). Hidden states (``return_hidden``) are the block outputs, not shifted.

There is no time conditioning: σ is ignored. Mixed precision as LLaDA's
(:mod:`tokendrift_jax.models.llada`): with ``dtype=bfloat16`` the matmuls and attention run
in bfloat16, RMSNorm statistics, rotary and the residual stream stay float32; parameters
are float32; logits are returned in float32. Dream's only dropout is ``attention_dropout``
(0.0 in the releases); it is not built (the config's ``dropout`` must be 0).

Padding (``attention_mask`` bool [B, L], True = real token), as the public
``generation_utils.py`` batches left-padded prompts: rotary positions are each row's
``tok_idx`` = cumsum(mask) − 1 (the first real token at 0; padded positions get 1, the
release's ``masked_fill_(attention_mask == 0, 1)``), so a row's real positions see exactly
the positions of the unpadded row; the padded keys are masked out of every query's
attention. The release's mask is [B, 1, L, L] = real(query) ∧ real(key), which also
empties the padded queries' rows; here only keys are masked (``common.key_mask``), which
gives the same values at real positions and finite ones at padded positions (ignored
downstream). The alignment reads the raw logit at i − 1 where that position is real and
position i's own raw logit at each row's first real token (:func:`align_shift`), as the
unpadded row's position 0 does. (The release shifts blindly, so its first real token
reads a padded position; its sampler never reads that logit, the position being prompt,
so every value it uses is the same.)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from tokendrift_jax import sharding
from tokendrift_jax.models import base
from tokendrift_jax.models.common import (HEADS, KV_HEADS, LOGITS, MLP, RESIDUAL,
                                          apply_rotary, check_attention_impl,
                                          check_attention_mask, key_mask, mask_for_impl,
                                          remat_policy_fn, resolve_attention_impl)
from tokendrift_jax.models.llada import (LLaDAConfig, LLaDAFlops, RMSNorm, rotary_cos_sin,
                                         rotary_cos_sin_at)


@dataclasses.dataclass(frozen=True)
class DreamConfig(base.ConfigFields):
  """Architecture of a Dream backbone (what a checkpoint must agree with).

  Defaults are Dream-v0-Base-7B's ``config.json``. Field names follow that file (the
  public ``DreamConfig``), except ``length`` (its ``max_position_embeddings``) and
  ``dropout`` (the backbone contract's; Dream has none but attention dropout, which is 0).

  Attributes:
    vocab_size: rows of the embedding table and columns of the logits.
    hidden_size: width of the residual stream d.
    intermediate_size: width of the gated MLP.
    num_hidden_layers: number of blocks.
    num_attention_heads: query heads; head_dim = hidden_size / num_attention_heads.
    num_key_value_heads: key/value heads (grouped-query attention); divides the heads.
    length: maximum sequence length (``max_position_embeddings``).
    rope_theta: rotary base.
    rms_norm_eps: RMSNorm epsilon.
    mask_token_id: the id of the mask token of Dream's masked diffusion.
    tie_word_embeddings: the output layer is the embedding table (no ``lm_head``).
    dropout: must be 0.0 (kept for the backbone contract).
  """
  vocab_size: int = 152064
  hidden_size: int = 3584
  intermediate_size: int = 18944
  num_hidden_layers: int = 28
  num_attention_heads: int = 28
  num_key_value_heads: int = 4
  length: int = 131072
  rope_theta: float = 1000000.0
  rms_norm_eps: float = 1e-6
  mask_token_id: int = 151666
  tie_word_embeddings: bool = False
  dropout: float = 0.0

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "length"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"DreamConfig.{name} must be a positive int, got {value!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"DreamConfig.hidden_size={self.hidden_size} is not divisible by "
                       f"num_attention_heads={self.num_attention_heads}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"DreamConfig.num_attention_heads={self.num_attention_heads} is not a "
                       f"multiple of num_key_value_heads={self.num_key_value_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head dim {self.head_dim} must be even for rotary")
    for name in ("rope_theta", "rms_norm_eps"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"DreamConfig.{name} must be a positive number, got {value!r}")
    if not isinstance(self.tie_word_embeddings, bool):
      raise ValueError(f"DreamConfig.tie_word_embeddings must be a bool, got "
                       f"{self.tie_word_embeddings!r}")
    if isinstance(self.dropout, bool) or self.dropout != 0:
      raise ValueError(f"DreamConfig.dropout must be 0.0 (Dream has no residual dropout and "
                       f"its attention dropout is not built), got {self.dropout!r}")
    m = self.mask_token_id
    if not isinstance(m, int) or isinstance(m, bool) or not 0 <= m < self.vocab_size:
      raise ValueError(f"DreamConfig.mask_token_id must be an id in [0, {self.vocab_size}), "
                       f"got {m!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def kv_dim(self) -> int:
    """Width of the key and value projections, num_key_value_heads · head_dim."""
    return self.num_key_value_heads * self.head_dim

  @property
  def feature_dim(self) -> int:
    """TokenDrift feature size: [mean H^(L-1), mean H^(L)] = 2·hidden_size."""
    return 2 * self.hidden_size

  @property
  def mask_id(self) -> int:
    return self.mask_token_id

  @property
  def time_conditioned(self) -> bool:
    return False

  def num_params(self) -> int:
    """Parameter count of the PyTorch ``DreamModel`` (q/k/v biases; rotary has none)."""
    d, h, v, k = self.hidden_size, self.intermediate_size, self.vocab_size, self.kv_dim
    block = 2 * d + (d * d + d) + 2 * (d * k + k) + d * d + 3 * d * h
    return v * d + self.num_hidden_layers * block + d + (0 if self.tie_word_embeddings
                                                         else d * v)

  def llada_shape(self) -> LLaDAConfig:
    """The LLaDA architecture with the same matmul shapes (for :class:`LLaDAFlops`: Dream's
    blocks do the same products; its q/k/v biases add no multiply)."""
    return LLaDAConfig(vocab_size=self.vocab_size, d_model=self.hidden_size,
                       n_layers=self.num_hidden_layers, n_heads=self.num_attention_heads,
                       n_kv_heads=self.num_key_value_heads,
                       mlp_hidden_size=self.intermediate_size, length=self.length,
                       rope_theta=float(self.rope_theta), rms_norm_eps=float(self.rms_norm_eps),
                       mask_token_id=self.mask_token_id,
                       weight_tying=self.tie_word_embeddings)


# ----------------------------------------------------------------------------- init
# As ``DreamPreTrainedModel._init_weights``: normal(0, initializer_range = 0.02) for Linear
# and Embedding weights, zero biases, norms at one (its zeroed padding row is not
# reproduced). Only training from scratch sees it.
_STD = 0.02


def _normal(key, shape, dtype=jnp.float32):
  return _STD * jax.random.normal(key, shape, dtype)


def _linear(din: int, dout: int, *, bias: bool, dtype, rngs: nnx.Rngs):
  return nnx.Linear(din, dout, use_bias=bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=_normal, bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class Embedding(nnx.Module):
  def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
    self.embedding = nnx.Param(_normal(rngs.params(), (vocab_size, dim)))

  def __call__(self, ids):
    return jnp.take(self.embedding[...], ids, axis=0)


class DreamBlock(nnx.Module):
  """``DreamDecoderLayer``: pre-norm biased-qkv attention and gated-SiLU MLP, residual."""

  def __init__(self, cfg: DreamConfig, *, dtype, attention_impl, rngs: nnx.Rngs):
    d, h = cfg.hidden_size, cfg.intermediate_size
    self.n_heads, self.n_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    self.head_dim = cfg.head_dim
    self.attention_impl = check_attention_impl(attention_impl)
    self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
    self.q_proj = _linear(d, d, bias=True, dtype=dtype, rngs=rngs)
    self.k_proj = _linear(d, cfg.kv_dim, bias=True, dtype=dtype, rngs=rngs)
    self.v_proj = _linear(d, cfg.kv_dim, bias=True, dtype=dtype, rngs=rngs)
    self.o_proj = _linear(d, d, bias=False, dtype=dtype, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
    self.gate_proj = _linear(d, h, bias=False, dtype=dtype, rngs=rngs)
    self.up_proj = _linear(d, h, bias=False, dtype=dtype, rngs=rngs)
    self.down_proj = _linear(h, d, bias=False, dtype=dtype, rngs=rngs)

  def __call__(self, x, cos, sin, mask=None):
    """x float32 [B, L, d] -> float32 [B, L, d]; cos/sin float32 [L, head_dim/2] or
    [B, L, head_dim/2] (per-row positions); mask: None or bool [B, 1, 1, L], the keys
    attended (``common.key_mask``)."""
    b, length, d = x.shape
    # Activation layout (identity without a sharding.activation_mesh), as LLaDA's.
    x = sharding.constrain(x, *RESIDUAL)
    h = self.input_layernorm(x)
    q = sharding.constrain(self.q_proj(h).reshape(b, length, self.n_heads, self.head_dim),
                           *HEADS)
    k = sharding.constrain(self.k_proj(h).reshape(b, length, self.n_kv_heads, self.head_dim),
                           *KV_HEADS)
    v = sharding.constrain(self.v_proj(h).reshape(b, length, self.n_kv_heads, self.head_dim),
                           *KV_HEADS)
    # The release's tables are float32 (autocast off) cast to the activations' dtype; the
    # rotation itself runs in that dtype (apply_rotary casts cos/sin to q's).
    q = apply_rotary(q, cos, sin)
    k = apply_rotary(k, cos, sin)
    # GQA: query head n reads kv head n // (n_heads / n_kv_heads), as repeat_kv.
    impl = resolve_attention_impl(self.attention_impl, q.dtype, self.head_dim)
    attn = jax.nn.dot_product_attention(
        q, k, v, mask=mask_for_impl(mask, impl, length), is_causal=False,
        implementation=impl)
    attn = sharding.constrain(attn, *HEADS)
    x = sharding.constrain(x + self.o_proj(attn.reshape(b, length, d)), *RESIDUAL)
    h = self.post_attention_layernorm(x)
    hidden = sharding.constrain(jax.nn.silu(self.gate_proj(h)) * self.up_proj(h), *MLP)
    return sharding.constrain(x + self.down_proj(hidden), *RESIDUAL)


def padded_positions(attention_mask):
  """generation_utils.py's ``tok_idx`` of a bool [B, L] padding mask, int32 [B, L]: the rank
  of each real token among its row's real tokens (cumsum − 1, so the first real token is
  at 0), and 1 at padded positions (``masked_fill_(attention_mask == 0, 1)``)."""
  rank = jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1
  return jnp.where(attention_mask, rank, 1).astype(jnp.int32)


def align_shift(a, attention_mask=None):
  """generation_utils.py's re-alignment on axis 1: [a[:, :1], a[:, :-1]] (position i gets
  what the raw output held at i − 1; position 0 keeps its own). a: [B, L, ...].

  With a padding mask (bool [B, L]), position i takes a[:, i − 1] only where i − 1 is a
  real position and keeps its own value otherwise (each row's first real token, as
  position 0 of the unpadded row)."""
  shifted = jnp.concatenate([a[:, :1], a[:, :-1]], axis=1)
  if attention_mask is None:
    return shifted
  prev_real = jnp.concatenate([jnp.zeros_like(attention_mask[:, :1]),
                               attention_mask[:, :-1]], axis=1)
  prev_real = prev_real.reshape(prev_real.shape + (1,) * (a.ndim - 2))
  return jnp.where(prev_real, shifted, a)


class Dream(nnx.Module):
  """The Dream backbone.

  Args:
    config: architecture.
    dtype: compute dtype of matmuls and attention (float32 or bfloat16). Parameters are
      float32 either way.
    attention_impl: passed to ``jax.nn.dot_product_attention`` (``models.common``).
    remat: rematerialise each block in the backward pass.
    remat_policy: a ``jax.checkpoint_policies`` name; ignored when ``remat`` is False.
    scan_layers: run the blocks with ``lax.scan`` over their stacked parameters; the
      parameter tree keeps one entry per block, and the function is the same.
  """

  def __init__(self, config: DreamConfig, *, dtype=jnp.float32,
               attention_impl: str | None = None, remat: bool = False,
               remat_policy: str = "", scan_layers: bool = False, rngs: nnx.Rngs):
    self.config = config
    self.dtype = jnp.dtype(dtype)
    if self.dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
      raise ValueError(f"Dream compute dtype must be float32 or bfloat16, got {self.dtype}")
    self.remat = bool(remat)
    self.remat_policy = str(remat_policy or "")
    remat_policy_fn(self.remat_policy)
    self.scan_layers = bool(scan_layers)
    self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, rngs=rngs)
    self.layers = nnx.List([
        DreamBlock(config, dtype=self.dtype, attention_impl=attention_impl, rngs=rngs)
        for _ in range(config.num_hidden_layers)
    ])
    self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
    if not config.tie_word_embeddings:
      self.lm_head = _linear(config.hidden_size, config.vocab_size, bias=False,
                             dtype=self.dtype, rngs=rngs)

  def embed(self, input_ids):
    """int[B, L] -> float32[B, L, d] token embeddings."""
    return self.embed_tokens(input_ids)

  def embedding_table(self):
    """The token-embedding matrix E, float32 [V, d]."""
    return self.embed_tokens.embedding[...]

  def output_layer(self, x):
    """float32 [B, L, d] (the last block's output) -> float32 logits [B, L, V] at the same
    positions (no alignment here)."""
    x = self.norm(x)
    if self.config.tie_word_embeddings:
      table = self.embed_tokens.embedding[...].astype(self.dtype)
      logits = jnp.einsum("bld,vd->blv", x.astype(self.dtype), table)
    else:
      logits = self.lm_head(x)
    return sharding.constrain(logits.astype(jnp.float32), *LOGITS)

  def __call__(self, input_ids=None, sigma=None, *, embeds=None, dropout_rng=None,
               return_hidden: bool | int = False, align: bool = True, attention_mask=None,
               head: bool = True):
    """Dream's logits, aligned as its sampler reads them (see the module doc).

    Args:
      input_ids: int[B, L] token ids, or None when ``embeds`` is given.
      sigma: ignored (Dream is not time-conditioned); accepted for the contract.
      embeds: float[B, L, d] input embeddings used instead of the lookup (soft tokens;
        the release's ``inputs_embeds``).
      dropout_rng: accepted for the contract; Dream has no dropout, so it is unused.
      return_hidden: also return block outputs, each float32 [B, L, d] (unshifted):
        True = all, an int k = the last k.
      align: True (default): float32 [B, L, V] with out[:, i] = raw[:, i − 1] for i ≥ 1
        and out[:, 0] = raw[:, 0]; False: the raw ``DreamModel`` logits.
      attention_mask: optional bool [B, L], True at real tokens: rotary positions count
        from each row's first real token and padded keys are attended by no query (see
        the module doc); outputs at padded positions are meaningless. None = every
        position is real (the same program as without the argument).
      head: False (with ``return_hidden``) skips the output layer: logits are None and
        its parameters are never read (``FAMILY.head_keys``).

    Returns:
      float32[B, L, V] logits, or (logits, hidden) when ``return_hidden``.
    """
    del sigma, dropout_rng
    cfg = self.config
    if not head and not return_hidden:
      raise ValueError("head=False returns only hidden states: pass return_hidden")
    if embeds is None:
      if input_ids is None:
        raise ValueError("Dream needs input_ids or embeds")
      if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
      x = self.embed(input_ids)
    else:
      if input_ids is not None:
        raise ValueError("pass either input_ids or embeds, not both")
      if embeds.ndim != 3 or embeds.shape[-1] != cfg.hidden_size:
        raise ValueError(f"embeds must be [B, L, {cfg.hidden_size}], got "
                         f"{tuple(embeds.shape)}")
      x = embeds.astype(jnp.float32)
    length = x.shape[1]
    if length > cfg.length:
      raise ValueError(f"sequence length {length} exceeds the model length {cfg.length}")
    n_layers = cfg.num_hidden_layers
    n_keep = 0 if not return_hidden else (n_layers if return_hidden is True
                                          else int(return_hidden))
    if not 0 <= n_keep <= n_layers:
      raise ValueError(f"return_hidden={return_hidden!r} must be a bool or 0..{n_layers}")
    attention_mask = check_attention_mask(attention_mask, x.shape[0], length)
    if attention_mask is None:
      cos, sin = rotary_cos_sin(length, cfg.head_dim, cfg.rope_theta)
      extra = ()   # the unpadded call traces what it did before padding existed
    else:
      cos, sin = rotary_cos_sin_at(padded_positions(attention_mask), cfg.head_dim,
                                   cfg.rope_theta)
      extra = (key_mask(attention_mask),)

    def run_block(block, x):
      if self.remat:
        gdef, state = nnx.split(block)
        return _remat_block(gdef, self.remat_policy)(state, x, cos, sin, *extra)
      return block(x, cos, sin, *extra)

    n_scan = n_layers - max(n_keep, 1) if self.scan_layers else 0
    if n_scan > 1:
      x = self._scan_blocks(x, cos, sin, n_scan, extra)
    else:
      n_scan = 0
    hidden = []
    for i in range(n_scan, n_layers):
      x = run_block(self.layers[i], x)
      if i >= n_layers - n_keep:
        hidden.append(x)
    if not head:
      return None, hidden
    # The output layer is position-wise, so aligning its input aligns the logits.
    logits = self.output_layer(align_shift(x, attention_mask) if align else x)
    return (logits, hidden) if return_hidden else logits

  def _scan_blocks(self, x, cos, sin, n, extra=()):
    """x through layers[0:n] with lax.scan over their stacked parameters (``extra``: the
    key mask, when given, closed over as every block's)."""
    gdef, first = nnx.split(self.layers[0])
    states = [nnx.split(self.layers[i])[1] for i in range(n)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), first, *states[1:])

    def body(h, state):
      if self.remat:
        return _remat_block(gdef, self.remat_policy)(state, h, cos, sin, *extra), None
      return nnx.merge(gdef, state)(h, cos, sin, *extra), None

    x, _ = jax.lax.scan(body, x, stacked)
    return x


def _remat_block(gdef, policy: str):
  """jax.checkpoint of a block as a pure function of its state (see models/llada.py)."""
  return jax.checkpoint(lambda state, *args: nnx.merge(gdef, state)(*args),
                        policy=remat_policy_fn(policy))


# ----------------------------------------------------------------------------- sharding

_BLOCK_AXES = {
    ("input_layernorm", "weight"): ("embed",),
    ("post_attention_layernorm", "weight"): ("embed",),
    ("q_proj", "kernel"): ("embed", "heads"), ("q_proj", "bias"): ("heads",),
    ("k_proj", "kernel"): ("embed", "kv_heads"), ("k_proj", "bias"): ("kv_heads",),
    ("v_proj", "kernel"): ("embed", "kv_heads"), ("v_proj", "bias"): ("kv_heads",),
    ("o_proj", "kernel"): ("heads", "embed"),
    ("gate_proj", "kernel"): ("embed", "mlp"), ("up_proj", "kernel"): ("embed", "mlp"),
    ("down_proj", "kernel"): ("mlp", "embed"),
}
_TOP_AXES = {("embed_tokens", "embedding"): ("vocab", "embed"), ("norm", "weight"): ("embed",),
             ("lm_head", "kernel"): ("embed", "vocab")}


def logical_axes(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[str | None, ...]:
  """One logical axis name per dimension of the parameter at ``path`` (pure-dict keys).

  Names as LLaDA's: "vocab", "embed" (hidden_size), "heads" (num_attention_heads ·
  head_dim), "kv_heads" (num_key_value_heads · head_dim), "mlp" (intermediate_size); the
  q/k/v biases follow their kernels' output axis. Raises ValueError for a path that is not
  a Dream parameter or a shape of the wrong rank.
  """
  keys = tuple(str(k) for k in path)
  if len(keys) == 4 and keys[0] == "layers" and keys[1].isdigit():
    axes = _BLOCK_AXES.get(keys[2:])
  else:
    axes = _TOP_AXES.get(keys)
  if axes is None:
    raise ValueError(f"{'/'.join(keys)} is not a parameter of the Dream backbone")
  if len(shape) != len(axes):
    raise ValueError(f"{'/'.join(keys)}: expected a rank-{len(axes)} parameter {axes}, got "
                     f"shape {tuple(shape)}")
  return axes


def flops(config: DreamConfig) -> LLaDAFlops:
  """Dream's FLOP model: LLaDA's (:class:`LLaDAFlops`) of the same shapes. The blocks make
  the same products (q, o: d×d; k, v: d×kv; gate, up, down: d×h; attention; output layer);
  the biases are additions, and the alignment a copy, neither counted."""
  return LLaDAFlops(config.llada_shape())


HUB_7B = "Dream-org/Dream-v0-Base-7B"

FAMILY = base.Family(
    name="dream", config_cls=DreamConfig, module_cls=Dream, flops=flops,
    compatible_fields=(),
    hub_names={"dream": HUB_7B},
    logical_axes=logical_axes,
    # demo_completion.py decodes with tokenizer.decode(...) (special tokens kept) and cuts
    # at the EOS text.
    tokenizer=HUB_7B, skip_special_tokens=False, head_keys=("norm", "lm_head"),
    # tiny: head dim 64, GQA 4 -> 2, the mask id inside the vocabulary but not its last id
    # (as the 7B's). 7b: Dream-v0-Base-7B's config.json (docs/MODEL.md).
    sizes={"tiny": dict(vocab_size=1024, hidden_size=256, intermediate_size=688,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        rope_theta=1000000.0, rms_norm_eps=1e-6, mask_token_id=1000,
                        tie_word_embeddings=False),
           "7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                      num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                      length=131072, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      mask_token_id=151666, tie_word_embeddings=False)})
