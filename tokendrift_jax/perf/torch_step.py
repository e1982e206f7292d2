"""A PyTorch eager port of the DiT training steps, for the CPU comparison of the benchmark.

``launch/benchmark.py --torch`` times the JAX step and this port side by side, alternating
call by call in one process (same weights, same tokens, same threads), and prints the
ratio. The network is the project's PyTorch reference of the public MDLM/DUO ``DIT``,
``tests/references/torch_dit.py`` (written from kuleshov-group/mdlm; SDPA attention),
loaded from that file by path (:data:`REFERENCE`; ``tests/`` is not a package of the
library) and called, not copied. Around it, written here from the public training code:

* continuation (MDLM ``_forward_pass_diffusion``, SUBS, T = 0): t antithetic on
  [sampling_eps, 1], each token masked with probability (1 − ε) t, logits of the masked
  input, SUBS log-probabilities (mask logit −1e6, carry-over at visible tokens), NELBO
  −log p(x0) · σ'(t) / expm1(σ(t)) on masked positions, mean over all tokens;
* TokenDrift (Alg. 1, fixed point): the same corruption and generator, p = softmax(SUBS
  log-probs), the soft lift p·E at masked positions (E[xt] elsewhere), the frozen encoder's
  last two block outputs (its blocks called directly: the unused output layer is not run,
  as XLA removes it from the JAX step), the mean over positions, L2-normalised, for h and
  (no grad) u; the multi-temperature joint drift field against u ∪ Q_real and
  h \\ {h_i} ∪ Q_gen, and L = ‖h − sg(h + αV)‖² / 2B; FIFO queues pushed after;
* the update: global-norm clipping, ``torch.optim.AdamW`` (foreach), EMA
  (shadow ← shadow − (1 − d)(shadow − param), d = min(decay, (1 + n) / (10 + n))).

Differences from the JAX step, all in PyTorch's favour: no dropout (the reference DIT has
none; the JAX step draws it at config.model.dropout), no finiteness check of the new state.
Float32 only (PyTorch's CPU autocast is not what the JAX bf16 config computes).
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = Path(__file__).resolve().parents[2] / "tests" / "references" / "torch_dit.py"
NEG_INF = -1e6


def load_reference(path: str | os.PathLike | None = None):
  """The module of the PyTorch DIT reference (``tests/references/torch_dit.py``)."""
  path = Path(path) if path is not None else REFERENCE
  if not path.is_file():
    raise FileNotFoundError(f"the PyTorch DIT reference {path} is missing (it ships in the "
                            f"repository's tests/references/)")
  name = "tokendrift_torch_dit_reference"
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def _torch():
  import torch  # pylint: disable=import-outside-toplevel
  return torch


def torch_dit(model_cfg, params) -> Any:
  """The reference ``DIT`` (float32, train mode) holding the JAX ``params``."""
  torch = _torch()
  from convert.dit import to_torch_state  # pylint: disable=import-outside-toplevel
  ref = load_reference()
  model = ref.DIT(dict(vocab_size=model_cfg.vocab_size, hidden_size=model_cfg.hidden_size,
                       cond_dim=model_cfg.cond_dim, n_blocks=model_cfg.n_blocks,
                       n_heads=model_cfg.n_heads,
                       time_conditioning=bool(model_cfg.time_conditioning)))
  state = to_torch_state(params, model_cfg)
  model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()},
                        strict=True)
  return model.float()


def block_outputs(model, embeds, sigma, last: int = 2):
  """The DIT's last ``last`` block outputs for input embeddings [B, L, d] (no output layer)."""
  torch = _torch()
  F = torch.nn.functional
  if not model.cfg["time_conditioning"]:
    sigma = torch.zeros_like(sigma)
  c = F.silu(model.sigma_map(sigma))
  cos, sin = model.rotary_emb(embeds.shape[1], embeds.dtype)
  x, out = embeds, []
  for blk in model.blocks:
    x = blk(x, cos, sin, c)
    out.append(x)
  return out[-last:]


def subs_log_probs(logits, xt, mask_id: int):
  """MDLM's SUBS parameterisation: [B, L, V] log-probabilities (float32)."""
  torch = _torch()
  vocab = logits.shape[-1]
  bias = torch.zeros(vocab, dtype=torch.float32)
  bias[mask_id] = NEG_INF
  lp = torch.log_softmax(logits.float() + bias, dim=-1)
  carry = torch.where(torch.arange(vocab) == xt[..., None], 0.0, NEG_INF)
  return torch.where((xt != mask_id)[..., None], carry, lp)


def nelbo_loss(log_probs, x0, xt, t, *, mask_id: int, eps: float):
  """Token-weighted mean of −log p(x0|xt) · σ'(t) / expm1(σ(t)) on masked positions."""
  torch = _torch()
  t = t.float()
  sigma = -torch.log1p(-(1 - eps) * t)
  weight = ((1 - eps) / (1 - (1 - eps) * t)) / torch.expm1(sigma)
  log_p = torch.gather(log_probs, -1, x0[..., None].long())[..., 0]
  nelbo = torch.where(xt == mask_id, -log_p * weight[:, None], 0.0)
  return nelbo.sum() / nelbo.numel()


def pooled_features(hidden):
  """[B, 2d]: the position means of the last two block outputs, L2-normalised."""
  torch = _torch()
  h = torch.cat([hidden[-2].mean(dim=1), hidden[-1].mean(dim=1)], dim=-1)
  sq = (h * h).sum(-1, keepdim=True)
  return h * torch.rsqrt(torch.clamp(sq, min=1e-24))


def drift_field(h, u, q_real, real_count: int, q_gen, gen_count: int, temperatures,
                attraction: float = 1.0, repulsion: float = 1.0, eps: float = 1e-8):
  """V [N, m] of the joint, squared-distance field (drift/field.py's definition) against
  u ∪ Q_real[:real_count] and (h minus self) ∪ Q_gen[:gen_count]."""
  torch = _torch()
  n = h.shape[0]
  pos = torch.cat([u, q_real[:real_count]])
  neg = torch.cat([h, q_gen[:gen_count]])

  def sqd(x, y):
    return torch.clamp((x * x).sum(-1)[:, None] + (y * y).sum(-1)[None] - 2.0 * x @ y.T, min=0)

  dp, dn = sqd(h, pos), sqd(h, neg)
  self_mask = torch.zeros_like(dn, dtype=torch.bool)
  self_mask[:, :n] = torch.eye(n, dtype=torch.bool)
  total = 0.0
  for tau in temperatures:
    s = torch.cat([-dp / tau, (-dn / tau).masked_fill(self_mask, -math.inf)], dim=-1)
    w = torch.softmax(s, dim=-1)
    v = attraction * w[:, :pos.shape[0]] @ pos - repulsion * w[:, pos.shape[0]:] @ neg
    scale = torch.sqrt((v * v).sum(-1).mean() + eps)
    total = total + v / scale
  return total / len(temperatures)


class TorchStep:
  """One training step (forward, backward, clipping, AdamW, EMA) of the PyTorch port.

  Args:
    config: the benchmark case's training config (objective, model, optim, ema, drift,
      diffusion sections are read).
    model_cfg: the DiT architecture; params: the JAX parameter dict (numpy) it starts from.
  """

  def __init__(self, config, model_cfg, params):
    torch = _torch()
    self.torch = torch
    self.objective = str(config.objective)
    if self.objective not in ("continuation", "drift"):
      raise ValueError(f"the PyTorch port has continuation and drift, not {self.objective!r}")
    if str(config.diffusion.process) != "mdlm":
      raise ValueError("the PyTorch port is MDLM's (masked diffusion) step")
    self.mask_id = int(model_cfg.vocab_size) - 1
    self.eps = float(config.diffusion.eps)
    self.sampling_eps = float(config.diffusion.sampling_eps)
    self.antithetic = bool(config.diffusion.antithetic)
    self.model = torch_dit(model_cfg, params).train()
    o = config.optim
    self.clip = float(o.grad_clip)
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=float(o.lr),
                                 betas=(float(o.b1), float(o.b2)), eps=float(o.eps),
                                 weight_decay=float(o.weight_decay), foreach=True)
    self.ema_decay = float(config.ema.decay) if config.ema.enabled else None
    self.ema = ([p.detach().clone() for p in self.model.parameters()]
                if self.ema_decay is not None else None)
    self.num_updates = 0
    self.gen = torch.Generator().manual_seed(int(config.seed))
    if self.objective == "drift":
      d = config.drift
      if (d.objective != "fixed_point" or d.normalization != "joint"
          or d.distance != "squared" or d.lift != "soft" or d.base_loss_weight):
        raise ValueError("the PyTorch port has the default TokenDrift objective only "
                         "(fixed_point, joint, squared, soft lift, no base loss)")
      self.temps = tuple(float(t) for t in d.temperatures)
      self.alpha = float(d.alpha)
      self.encoder = torch_dit(model_cfg, params).eval()
      for p in self.encoder.parameters():
        p.requires_grad_(False)
      q, m = int(d.queue_size), int(model_cfg.feature_dim)
      self.queues = {k: torch.zeros(q, m) for k in ("real", "gen")}
      self.counts = {"real": 0, "gen": 0}
      self.ptrs = {"real": 0, "gen": 0}
      self.enc_sigma = float(d.encoder_sigma)

  # --------------------------------------------------------------------------- pieces

  def draw(self, x0):
    """(t [B], xt [B, L]) as MDLM draws them."""
    torch = self.torch
    b = x0.shape[0]
    u = torch.rand(b, generator=self.gen)
    if self.antithetic:
      u = torch.remainder(u / b + torch.arange(b) / b, 1.0)
    t = (1 - self.sampling_eps) * u + self.sampling_eps
    move = 1 - torch.exp(torch.log1p(-(1 - self.eps) * t))  # 1 − e^{−σ(t)}
    xt = torch.where(torch.rand(x0.shape, generator=self.gen) < move[:, None],
                     self.mask_id, x0)
    return t, xt

  def sigma(self, t):
    return -self.torch.log1p(-(1 - self.eps) * t)

  def continuation_loss(self, x0, t, xt):
    logits = self.model(xt, self.sigma(t))
    return nelbo_loss(subs_log_probs(logits, xt, self.mask_id), x0, xt, t,
                      mask_id=self.mask_id, eps=self.eps)

  def features(self, embeds):
    sigma = self.torch.full((embeds.shape[0],), self.enc_sigma)
    return pooled_features(block_outputs(self.encoder, embeds, sigma))

  def drift_loss(self, x0, t, xt):
    """(loss, h, u, V) of one TokenDrift micro-step (queues read, not pushed)."""
    torch = self.torch
    table = self.encoder.vocab_embed.embedding
    with torch.no_grad():
      u = self.features(table[x0])
    logits = self.model(xt, self.sigma(t))
    p = torch.softmax(subs_log_probs(logits, xt, self.mask_id), dim=-1)
    b, length, vocab = p.shape
    soft = (p.reshape(b * length, vocab) @ table).reshape(b, length, -1)
    embeds = torch.where((xt == self.mask_id)[..., None], soft, table[xt])
    h = self.features(embeds)
    with torch.no_grad():
      v = drift_field(h.detach(), u, self.queues["real"], self.counts["real"],
                      self.queues["gen"], self.counts["gen"], self.temps)
    resid = (h - h.detach()) - self.alpha * v
    return 0.5 * (resid * resid).sum() / b, h.detach(), u, v

  def push(self, name, rows):
    q = self.queues[name]
    slots = (self.ptrs[name] + self.torch.arange(rows.shape[0])) % q.shape[0]
    q[slots] = rows
    self.ptrs[name] = int(slots[-1] + 1) % q.shape[0]
    self.counts[name] = min(self.counts[name] + rows.shape[0], q.shape[0])

  # --------------------------------------------------------------------------- the step

  def __call__(self, tokens, draw=None) -> float:
    """One step on int [B, L] tokens (numpy or tensor); returns the loss. ``draw``: a
    given (t [B], xt [B, L]) instead of drawing them (the tests pass the JAX step's)."""
    torch = self.torch
    x0 = torch.as_tensor(np.array(tokens)).long()
    if draw is None:
      t, xt = self.draw(x0)
    else:
      t = torch.as_tensor(np.array(draw[0], np.float32))
      xt = torch.as_tensor(np.array(draw[1])).long()
    self.opt.zero_grad(set_to_none=True)
    if self.objective == "continuation":
      loss = self.continuation_loss(x0, t, xt)
    else:
      loss, h, u, _ = self.drift_loss(x0, t, xt)
    loss.backward()
    if self.clip > 0:
      self.grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                            self.clip, foreach=True))
    self.opt.step()
    self.num_updates += 1
    if self.ema is not None:
      n = self.num_updates
      d = min(self.ema_decay, (1 + n) / (10 + n))
      with torch.no_grad():
        torch._foreach_lerp_(self.ema, [p.detach() for p in self.model.parameters()], 1 - d)
    if self.objective == "drift":
      self.push("real", u)
      self.push("gen", h)
    return float(loss.detach())


def matmul_rate(n: int = 2048, reps: int = 10) -> dict[str, Any]:
  """PyTorch's median GFLOP/s of an n³ float32 matmul on random data."""
  torch = _torch()
  g = torch.Generator().manual_seed(0)
  a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
  for _ in range(2):
    a @ b
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
  t = statistics.median(times)
  return {"gflops": 2 * n ** 3 / t / 1e9, "n": n, "median_s": t,
          "threads": torch.get_num_threads()}
