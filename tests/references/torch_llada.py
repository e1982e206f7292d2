"""A PyTorch reference of the LLaDA backbone, and the Hugging Face directory it is released as.

Written from the public ``modeling_llada.py`` / ``configuration_llada.py`` of the LLaDA
release (read in rayendito/dlm_steer@f5cd340a ``llada/`` and, identical for this purpose,
QuentinFitteRey/LLada-Reasoning@4bfec79d ``llada_local/``): ``LLaDAModel`` with
``LLaDALlamaBlock`` blocks, RMSNorm (statistics in float32 under autocast, weight only),
``rotate_half`` rotary with float32 tables, SDPA attention with ``repeat_interleave`` for
grouped-query heads, SiLU(ff_proj) · up_proj -> ff_out, untied (or tied) output layer. The
module tree reproduces the release's state-dict names (``model.transformer.*``), so its
``state_dict()`` is what a release's safetensors hold. Only the configurations the LLaDA-8B
release uses are modelled (no biases, no ALiBi, no QK norm). It shares no code with the
Flax implementation.

For parity the reference runs in float64 (the tables are computed in float32 as the
original computes them, then widened) or under ``torch.autocast("cpu", bfloat16)``.
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def full_hf_config(**fields) -> dict:
  """config.json of a LLaDA release with every ModelConfig field explicit.

  The public ``ModelConfig`` defaults are GPT-2's (no rope, dropout 0.1, tied weights,
  50304 embeddings), not LLaDA's, so nothing is left to them. Defaults below are
  LLaDA-8B-Base's config.json; ``fields`` overrides any of them.
  """
  cfg = {
      "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0,
      "architectures": ["LLaDAModelLM"],
      "attention_dropout": 0.0, "attention_layer_norm": False,
      "attention_layer_norm_with_affine": True,
      "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                   "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                   "AutoModel": "modeling_llada.LLaDAModelLM"},
      "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama",
      "d_model": 4096, "embedding_dropout": 0.0, "embedding_size": 126464,
      "eos_token_id": 126081, "flash_attention": False, "include_bias": False,
      "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
      "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
      "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": 126336,
      "max_sequence_length": 4096, "mlp_hidden_size": 12288, "mlp_ratio": 4,
      "model_type": "llada", "multi_query_attention": None, "n_heads": 32, "n_kv_heads": 32,
      "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
      "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True,
      "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False,
      "transformers_version": "4.46.3", "use_cache": False, "vocab_size": 126464,
      "weight_tying": False,
  }
  unknown = set(fields) - set(cfg)
  if unknown:
    raise KeyError(f"not a LLaDA config.json field: {sorted(unknown)}")
  cfg.update(fields)
  return cfg


class RMSNorm(nn.Module):
  def __init__(self, dim: int, eps: float):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(dim))
    self.eps = eps

  def forward(self, x):
    # The release: autocast off, statistics in (at least) float32, cast back, then weight.
    with torch.autocast("cpu", enabled=False):
      dtype = x.dtype
      xs = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
      xs = xs * torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + self.eps)
      xs = xs.to(dtype)
    return self.weight * xs


def rotary_tables(seq_len: int, head_dim: int, theta: float):
  """sin, cos [seq_len, head_dim] in float32, as the release: inv_freq in float32,
  positions · inv_freq concatenated with itself."""
  inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
  freqs = torch.einsum("i,j->ij", torch.arange(seq_len, dtype=torch.float), inv_freq)
  pos = torch.cat((freqs, freqs), dim=-1)
  return pos.sin(), pos.cos()


def rotate_half(x):
  h = x.shape[-1] // 2
  return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
  """LLaDALlamaBlock (the only block of the release)."""

  def __init__(self, cfg: dict):
    super().__init__()
    d, hid = cfg["d_model"], cfg["mlp_hidden_size"]
    self.n_heads, self.n_kv = cfg["n_heads"], cfg["n_kv_heads"]
    self.head_dim = d // self.n_heads
    self.theta = cfg["rope_theta"]
    self.attn_norm = RMSNorm(d, cfg["rms_norm_eps"])
    self.ff_norm = RMSNorm(d, cfg["rms_norm_eps"])
    self.q_proj = nn.Linear(d, d, bias=False)
    self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
    self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
    self.attn_out = nn.Linear(d, d, bias=False)
    self.ff_proj = nn.Linear(d, hid, bias=False)
    self.up_proj = nn.Linear(d, hid, bias=False)
    self.ff_out = nn.Linear(hid, d, bias=False)

  def attention(self, q, k, v):
    b, t, c = q.shape
    q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
    k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
    v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
    # rope_full_precision: rotate in (at least) float32, outside autocast, cast back.
    wide = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.autocast("cpu", enabled=False):
      sin, cos = rotary_tables(t, self.head_dim, self.theta)
      sin, cos = sin.to(wide), cos.to(wide)
      q_, k_ = q.to(wide), k.to(wide)
      q_ = q_ * cos + rotate_half(q_) * sin
      k_ = k_ * cos + rotate_half(k_) * sin
    q, k = q_.to(q.dtype), k_.to(k.dtype)
    if self.n_kv != self.n_heads:
      rep = self.n_heads // self.n_kv
      k = k.repeat_interleave(rep, dim=1)
      v = v.repeat_interleave(rep, dim=1)
    att = F.scaled_dot_product_attention(q, k, v, is_causal=False)
    return self.attn_out(att.transpose(1, 2).contiguous().view(b, t, c))

  def forward(self, x):
    h = self.attn_norm(x)
    x = x + self.attention(self.q_proj(h), self.k_proj(h), self.v_proj(h))
    h = self.ff_norm(x)
    return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class _Inner(nn.Module):
  """``LLaDAModel``: holds ``transformer`` so that names read model.transformer.*."""

  def __init__(self, cfg: dict):
    super().__init__()
    d, v = cfg["d_model"], cfg["embedding_size"] or cfg["vocab_size"]
    parts = {"wte": nn.Embedding(v, d), "ln_f": RMSNorm(d, cfg["rms_norm_eps"]),
             "blocks": nn.ModuleList([Block(cfg) for _ in range(cfg["n_layers"])])}
    if not cfg["weight_tying"]:
      parts["ff_out"] = nn.Linear(d, v, bias=False)
    self.transformer = nn.ModuleDict(parts)


class LLaDA(nn.Module):
  """``LLaDAModelLM`` of a config.json dict (:func:`full_hf_config`)."""

  def __init__(self, cfg: dict):
    super().__init__()
    for name, want in (("block_type", "llama"), ("activation_type", "silu"),
                       ("layer_norm_type", "rms"), ("rope", True), ("alibi", False),
                       ("include_bias", False), ("attention_layer_norm", False),
                       ("input_emb_norm", False), ("scale_logits", False)):
      if cfg[name] != want:
        raise ValueError(f"the reference models {name}={want!r} only")
    self.cfg = dict(cfg)
    self.model = _Inner(cfg)

  def forward(self, input_ids=None, inputs_embeds=None, autocast_bf16=False):
    """Returns (logits, block outputs): every block's output, before ln_f."""
    tr = self.model.transformer
    x = tr.wte(input_ids) if inputs_embeds is None else inputs_embeds
    hidden = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
      for blk in tr.blocks:
        x = blk(x)
        hidden.append(x)
      x = tr.ln_f(x)
      logits = F.linear(x, tr.wte.weight) if self.cfg["weight_tying"] else tr.ff_out(x)
    return logits, hidden


def randomize_(model: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
  """Every parameter random and non-zero; norm weights around 1 but not 1; matrices
  scaled by 1/sqrt(fan_in) so activations stay O(1) through the blocks."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "ln_f" in name:
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      elif p.ndim == 2 and "wte" not in name:
        p.copy_(scale * 3.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
      else:
        p.copy_(torch.randn(p.shape, generator=g))
  return model


def reference_outputs(model: LLaDA, ids=None, embeds=None, autocast_bf16=False):
  """(logits, block outputs) as float64 NumPy: the model run in float64 (and returned to
  float32 after), or in float32 under CPU autocast(bfloat16)."""
  m = model if autocast_bf16 else model.double()
  dtype = torch.float32 if autocast_bf16 else torch.float64
  with torch.no_grad():
    logits, hidden = m(None if ids is None else torch.from_numpy(ids),
                       None if embeds is None else torch.from_numpy(embeds).to(dtype),
                       autocast_bf16=autocast_bf16)
  if not autocast_bf16:
    model.float()
  return logits.double().numpy(), [h.double().numpy() for h in hidden]


def save_hf_dir(model: LLaDA, path: str, *, n_shards: int = 3, dtype=torch.float32) -> str:
  """Writes ``model`` as the release does: config.json, and ``model.safetensors`` (one
  shard) or ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``.

  Tensors are dealt to the shards round-robin in state-dict order, so every shard holds
  parts of several blocks (as the release's do); stored in ``dtype``.
  """
  from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(model.cfg, f, indent=2)
  state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
  if n_shards == 1:
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return path
  names = list(state)
  files = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]
  weight_map = {name: files[i % n_shards] for i, name in enumerate(names)}
  for fname in files:
    save_file({k: state[k] for k in names if weight_map[k] == fname},
              os.path.join(path, fname), metadata={"format": "pt"})
  total = sum(t.numel() * t.element_size() for t in state.values())
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  return path
