"""A PyTorch reference of the Dream backbone, and the Hugging Face directory it ships as.

Written from the public ``modeling_dream.py`` / ``configuration_dream.py`` published with
Dream-org/Dream-v0-Base-7B (read in copies vendored by public repositories; the upstream
GitHub repository DreamLM/Dream does not hold them): ``DreamModel`` = ``DreamBaseModel``
(``embed_tokens``, ``DreamDecoderLayer`` blocks, ``norm``) + ``lm_head``. A block is
Qwen2's: ``input_layernorm`` -> ``DreamAttention`` (q/k/v with bias, o without, rotary on
``rotate_half`` halves with float32 tables, ``repeat_kv`` for grouped-query heads,
``is_causal = False`` and no mask: full bidirectional attention) -> residual ->
``post_attention_layernorm`` -> ``DreamMLP`` (down(silu(gate) · up)) -> residual. With
``tie_word_embeddings`` the output layer is the embedding table (``_tied_weights_keys``;
``save_pretrained`` then writes no ``lm_head.weight``). The module tree reproduces the
release's state-dict names (``model.*``, ``lm_head.weight``). It shares no code with the
Flax implementation.

:func:`aligned` is the re-alignment of ``generation_utils.py`` (``torch.cat([logits[:, :1],
logits[:, :-1]], dim=1)``). For parity the reference runs in float64 (the rotary tables are
computed in float32 as the original computes them, then widened).
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def full_hf_config(**fields) -> dict:
  """config.json of a Dream release with every DreamConfig field explicit; defaults are
  Dream-v0-Base-7B's (docs/MODEL.md), ``fields`` overrides any of them."""
  cfg = {
      "architectures": ["DreamModel"], "attention_dropout": 0.0,
      "auto_map": {"AutoConfig": "configuration_dream.DreamConfig",
                   "AutoModel": "modeling_dream.DreamModel"},
      "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
      "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 18944,
      "mask_token_id": 151666, "max_position_embeddings": 131072, "max_window_layers": 28,
      "model_type": "Dream", "num_attention_heads": 28, "num_hidden_layers": 28,
      "num_key_value_heads": 4, "pad_token_id": 151643, "rms_norm_eps": 1e-06,
      "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None,
      "tie_word_embeddings": False, "torch_dtype": "bfloat16",
      "transformers_version": "4.46.2", "use_cache": False, "use_sliding_window": False,
      "vocab_size": 152064,
  }
  unknown = set(fields) - set(cfg)
  if unknown:
    raise KeyError(f"not a Dream config.json field: {sorted(unknown)}")
  cfg.update(fields)
  return cfg


class RMSNorm(nn.Module):
  """``DreamRMSNorm``: statistics in (at least) float32, cast back, then the weight."""

  def __init__(self, dim: int, eps: float):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(dim))
    self.variance_epsilon = eps

  def forward(self, x):
    dtype = x.dtype
    xs = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
    xs = xs * torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * xs.to(dtype)


def rotary_cos_sin(seq_len: int, head_dim: int, theta: float):
  """cos, sin [seq_len, head_dim] in float32 (``DreamRotaryEmbedding``, default rope):
  inv_freq = 1 / theta^(arange(0, dim, 2) / dim) in float32, positions arange(seq_len),
  freqs concatenated with themselves."""
  inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float()
                              / head_dim))
  freqs = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
  emb = torch.cat((freqs, freqs), dim=-1)
  return emb.cos(), emb.sin()


def rotate_half(x):
  h = x.shape[-1] // 2
  return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
  def __init__(self, cfg: dict):
    super().__init__()
    d = cfg["hidden_size"]
    self.n_heads, self.n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    self.head_dim = d // self.n_heads
    self.theta = cfg["rope_theta"]
    self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=True)
    self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=True)
    self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=True)
    self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

  def forward(self, x):
    b, t, d = x.shape
    q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
    k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
    v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
    cos, sin = rotary_cos_sin(t, self.head_dim, self.theta)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)   # the release: cos.to(dtype=x.dtype)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = self.n_heads // self.n_kv
    k = k[:, :, None].expand(b, self.n_kv, rep, t, self.head_dim).reshape(b, -1, t,
                                                                          self.head_dim)
    v = v[:, :, None].expand(b, self.n_kv, rep, t, self.head_dim).reshape(b, -1, t,
                                                                          self.head_dim)
    # Eager attention of the release: softmax(q kᵀ / sqrt(head_dim)) v, no mask.
    w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
    w = F.softmax(w, dim=-1, dtype=torch.float32 if x.dtype != torch.float64
                  else torch.float64).to(q.dtype)
    out = torch.matmul(w, v).transpose(1, 2).reshape(b, t, d)
    return self.o_proj(out)


class MLP(nn.Module):
  def __init__(self, cfg: dict):
    super().__init__()
    d, h = cfg["hidden_size"], cfg["intermediate_size"]
    self.gate_proj = nn.Linear(d, h, bias=False)
    self.up_proj = nn.Linear(d, h, bias=False)
    self.down_proj = nn.Linear(h, d, bias=False)

  def forward(self, x):
    return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
  """``DreamDecoderLayer``."""

  def __init__(self, cfg: dict):
    super().__init__()
    self.self_attn = Attention(cfg)
    self.mlp = MLP(cfg)
    self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
    self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

  def forward(self, x):
    x = x + self.self_attn(self.input_layernorm(x))
    return x + self.mlp(self.post_attention_layernorm(x))


class _Base(nn.Module):
  """``DreamBaseModel``."""

  def __init__(self, cfg: dict):
    super().__init__()
    self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
    self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg["num_hidden_layers"])])
    self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class Dream(nn.Module):
  """``DreamModel`` of a config.json dict (:func:`full_hf_config`); refuses what the
  reference does not model."""

  def __init__(self, cfg: dict):
    super().__init__()
    for name, want in (("hidden_act", "silu"), ("rope_scaling", None),
                       ("use_sliding_window", False), ("attention_dropout", 0.0),
                       ("model_type", "Dream")):
      if cfg.get(name, want) != want:
        raise ValueError(f"the reference models {name}={want!r} only")
    self.cfg = dict(cfg)
    self.model = _Base(cfg)
    if not cfg["tie_word_embeddings"]:
      self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

  def forward(self, input_ids=None, inputs_embeds=None):
    """Returns (raw logits, block outputs before the final norm)."""
    x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    hidden = []
    for layer in self.model.layers:
      x = layer(x)
      hidden.append(x)
    x = self.model.norm(x)
    w = self.model.embed_tokens.weight if self.cfg["tie_word_embeddings"] else \
        self.lm_head.weight
    return F.linear(x, w), hidden


def aligned(logits):
  """generation_utils.py's re-alignment of the logits to the masked positions."""
  return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def randomize_(model: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
  """Every parameter random and non-zero: norm weights around 1 but not 1, biases
  non-zero, matrices scaled by 1/sqrt(fan_in) so activations stay O(1)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
      elif name.endswith("bias"):
        p.copy_(0.5 * torch.randn(p.shape, generator=g))
      elif p.ndim == 2 and "embed_tokens" not in name:
        p.copy_(scale * 3.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
      else:
        p.copy_(torch.randn(p.shape, generator=g))
  return model


def reference_outputs(model: Dream, ids=None, embeds=None):
  """(raw logits, aligned logits, block outputs) as float64 NumPy, the model run in
  float64 (and returned to float32 after)."""
  model.double()
  with torch.no_grad():
    logits, hidden = model(None if ids is None else torch.from_numpy(ids),
                           None if embeds is None else torch.from_numpy(embeds).double())
  model.float()
  return (logits.numpy(), aligned(logits).numpy(), [h.numpy() for h in hidden])


def save_hf_dir(model: Dream, path: str, *, n_shards: int = 3, dtype=torch.float32) -> str:
  """Writes ``model`` as ``save_pretrained`` does: config.json, and ``model.safetensors``
  or ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``; tensors dealt
  to the shards round-robin in state-dict order, stored in ``dtype``."""
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


def load_hf_dir(path: str) -> tuple[Dream, dict]:
  """An HF Dream directory read as the release code reads it: ``DreamModel`` of
  config.json, weights from model.safetensors or the shards of its index, loaded
  strictly (a missing or unexpected tensor is an error)."""
  from safetensors.torch import load_file  # pylint: disable=import-outside-toplevel
  with open(os.path.join(path, "config.json")) as f:
    cfg = json.load(f)
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  else:
    files = ["model.safetensors"]
  state = {}
  for name in files:
    state.update(load_file(os.path.join(path, name)))
  model = Dream(cfg).eval()
  model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
  return model, cfg
