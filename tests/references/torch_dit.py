"""A PyTorch reference of the MDLM/DUO ``DIT`` backbone, for parity tests only.

Written from the public ``models/dit.py`` of kuleshov-group/mdlm and s-sahoo/duo (and the
MDLM Hugging Face ``DITBackbone``) with the released parameter names, but without
flash-attn: attention is ``F.scaled_dot_product_attention`` and rotary uses the
``rotate_half`` form. It never shares code with the Flax implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.weight = nn.Parameter(torch.ones([dim]))
    self.dim = dim

  def forward(self, x):
    with torch.autocast("cpu", enabled=False):
      x = F.layer_norm(x.float() if x.dtype != torch.float64 else x, [self.dim])
    return x * self.weight[None, None, :]


class TimestepEmbedder(nn.Module):
  def __init__(self, hidden_size, frequency_embedding_size=256):
    super().__init__()
    self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size, bias=True),
                             nn.SiLU(), nn.Linear(hidden_size, hidden_size, bias=True))
    self.frequency_embedding_size = frequency_embedding_size

  def forward(self, t):
    half = self.frequency_embedding_size // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None].double() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return self.mlp(emb.to(self.mlp[0].weight.dtype))


class Rotary(nn.Module):
  def __init__(self, dim, base=10_000):
    super().__init__()
    self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

  def forward(self, seq_len, dtype):
    t = torch.arange(seq_len, dtype=torch.float64)
    freqs = torch.einsum("i,j->ij", t, self.inv_freq.double())
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
  x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
  return torch.cat((-x2, x1), dim=-1)


def modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class DDiTBlock(nn.Module):
  def __init__(self, dim, n_heads, cond_dim, mlp_ratio=4, dropout=0.1):
    super().__init__()
    self.n_heads = n_heads
    self.norm1 = LayerNorm(dim)
    self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
    self.attn_out = nn.Linear(dim, dim, bias=False)
    self.norm2 = LayerNorm(dim)
    self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim, bias=True),
                             nn.GELU(approximate="tanh"),
                             nn.Linear(mlp_ratio * dim, dim, bias=True))
    self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim, bias=True)

  def forward(self, x, cos, sin, c):
    b, s, d = x.shape
    (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
     gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=1)
    x_skip = x
    qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
    qkv = qkv.view(b, s, 3, self.n_heads, d // self.n_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    cos_, sin_ = cos.to(qkv.dtype)[None, :, None, :], sin.to(qkv.dtype)[None, :, None, :]
    q = q * cos_ + rotate_half(q) * sin_
    k = k * cos_ + rotate_half(k) * sin_
    att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                         v.transpose(1, 2), is_causal=False)
    x = x_skip + gate_msa[:, None] * self.attn_out(att.transpose(1, 2).reshape(b, s, d))
    return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class EmbeddingLayer(nn.Module):
  def __init__(self, dim, vocab_dim):
    super().__init__()
    self.embedding = nn.Parameter(torch.empty((vocab_dim, dim)))
    torch.nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

  def forward(self, x):
    return self.embedding[x]


class DDitFinalLayer(nn.Module):
  def __init__(self, hidden_size, out_channels, cond_dim):
    super().__init__()
    self.norm_final = LayerNorm(hidden_size)
    self.linear = nn.Linear(hidden_size, out_channels)
    self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size, bias=True)

  def forward(self, x, c):
    shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
    return self.linear(modulate(self.norm_final(x), shift, scale))


class DIT(nn.Module):
  """config: dict with vocab_size, hidden_size, cond_dim, n_blocks, n_heads, time_conditioning."""

  def __init__(self, cfg: dict):
    super().__init__()
    self.cfg = dict(cfg)
    d = cfg["hidden_size"]
    self.vocab_embed = EmbeddingLayer(d, cfg["vocab_size"])
    self.sigma_map = TimestepEmbedder(cfg["cond_dim"])
    self.rotary_emb = Rotary(d // cfg["n_heads"])
    self.blocks = nn.ModuleList([DDiTBlock(d, cfg["n_heads"], cfg["cond_dim"])
                                 for _ in range(cfg["n_blocks"])])
    self.output_layer = DDitFinalLayer(d, cfg["vocab_size"], cfg["cond_dim"])

  def forward(self, indices, sigma, autocast_bf16=False, return_hidden=False):
    if not self.cfg["time_conditioning"]:
      sigma = torch.zeros_like(sigma)
    x = self.vocab_embed(indices)
    c = F.silu(self.sigma_map(sigma))
    cos, sin = self.rotary_emb(indices.shape[1], x.dtype)
    hidden = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
      for blk in self.blocks:
        x = blk(x, cos, sin, c)
        hidden.append(x)
      logits = self.output_layer(x, c)
    return (logits, hidden) if return_hidden else logits


def randomize_(model: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
  """Every parameter random and non-zero (the originals zero adaLN and the output layer).

  Norm weights are drawn around 1; matrices scaled by 1/sqrt(fan_in) so activations stay
  O(1) through the blocks and the test exercises every term.
  """
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      elif p.ndim == 2 and "embedding" not in name:
        p.copy_(scale * 3.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
      else:
        p.copy_(scale * torch.randn(p.shape, generator=g))
  return model


def reference_logits(model: DIT, ids, sigma, autocast_bf16=False):
  """The reference forward as float64 NumPy: run in float64 (the model is returned to
  float32 after), or under PyTorch CPU autocast(bfloat16)."""
  m = model if autocast_bf16 else model.double()
  with torch.no_grad():
    out = m(torch.from_numpy(ids), torch.from_numpy(sigma).to(
        torch.float32 if autocast_bf16 else torch.float64), autocast_bf16=autocast_bf16)
  if not autocast_bf16:
    model.float()
  return out.double().numpy()
