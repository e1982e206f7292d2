"""A PyTorch reference of Dream's ``diffusion_generate`` (``generation_utils.py``, ``_sample``).

Written from the public ``generation_utils.py`` of Dream-org/Dream-v0-Base-7B (read in
copies vendored by public repositories), step for step: ``F.pad`` with the mask id,
``torch.linspace(1, eps, steps + 1)``, the re-alignment ``torch.cat([logits[:, :1],
logits[:, :-1]], dim=1)``, ``mask_logits = logits[mask_index]``, ``sample_tokens`` with
``top_p_logits`` / ``top_k_logits`` (float min fill), the 'origin' transfer with
p = 1 − s/t, the confidence orders with k = int(n̄ (1 − s/t)) and ``torch.topk`` /
softmax(confidence / alg_temp) without replacement. It shares no code with the JAX sampler.

The randomness is injected, so that a fixed noise gives a fixed trajectory: ``u_token(i)``
float32 [B, T, V] replaces ``Categorical(probs).sample()`` by its Gumbel-max realisation
argmax(log probs − log(−log u)); ``u_order(i)`` float32 [B, T] replaces ``torch.rand`` of
'origin' (u < p) and ``torch.multinomial`` without replacement by its Gumbel-top-k
realisation (the k largest of log w − log(−log u)). The logits and probabilities are
float64 (the denoiser is float64); the times, n̄ and k are float32 torch tensors as in the
public code (``count``: how close n̄ (1 − s/t) came to an integer). Every choice's margin
is recorded so that a test can check that float32 rounding of the JAX side cannot have
flipped it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _top_p_logits(logits, top_p, margins):
  sorted_logits, sorted_indices = torch.sort(logits, descending=True)
  cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
  margins["top_p"] = min(margins["top_p"], float((cumulative_probs - top_p).abs().min()))
  sorted_indices_to_remove = cumulative_probs > top_p
  sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
  sorted_indices_to_remove[..., 0] = 0
  mask = torch.zeros_like(logits, dtype=torch.bool)
  mask = mask.scatter_(-1, sorted_indices, sorted_indices_to_remove)
  return logits.masked_fill(mask, torch.finfo(torch.float32).min)


def _top_k_logits(logits, top_k):
  top_k = min(top_k, logits.size(-1))
  indices_to_remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
  return logits.masked_fill(indices_to_remove, torch.finfo(torch.float32).min)


def _gap(scores):
  """Smallest gap between the best and the second best of each row (inf for one column)."""
  if scores.shape[-1] < 2 or scores.numel() == 0:
    return float("inf")
  top2 = torch.topk(scores, 2, dim=-1)[0]
  return float((top2[..., 0] - top2[..., 1]).min())


def sample_tokens(logits, u, margins, *, temperature, top_p, top_k, margin_confidence=False,
                  neg_entropy=False):
  """``sample_tokens`` with the Categorical draw realised by Gumbel-max on ``u``."""
  if temperature > 0:
    logits = logits / temperature
  if top_p is not None and top_p < 1:
    logits = _top_p_logits(logits, top_p, margins)
  if top_k is not None:
    logits = _top_k_logits(logits, top_k)
  probs = torch.softmax(logits, dim=-1)
  if temperature > 0:
    scores = torch.log(probs) - torch.log(-torch.log(u))
    x0 = scores.argmax(dim=-1)
    confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
  else:
    scores = probs
    confidence, x0 = probs.max(dim=-1)
  margins["argmax"] = min(margins["argmax"], _gap(scores))
  if margin_confidence:
    sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
    confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
  if neg_entropy:
    confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
  return confidence, x0


def diffusion_generate(raw_logits_fn, prompt, *, mask_id, gen_length, steps, alg="origin",
                       temperature=0.0, top_p=None, top_k=None, alg_temp=None, eps=1e-3,
                       u_token=None, u_order=None):
  """The public ``_sample`` loop.

  Args:
    raw_logits_fn: int64 torch [B, T] -> float64 torch [B, T, V], the *raw* (unaligned)
      logits of the denoiser.
    prompt: int [B, P] NumPy.
    u_token, u_order: i -> float32 NumPy uniforms (see the module doc).

  Returns:
    dict with ``tokens`` (int64 [B, P + G]), ``states`` (the state before every step),
    ``calls`` (denoiser calls) and ``margin`` (the smallest margin of each kind of choice).
  """
  input_ids = torch.from_numpy(np.asarray(prompt, np.int64))
  x = F.pad(input_ids, (0, gen_length), value=mask_id)
  timesteps = torch.linspace(1, eps, steps + 1)
  margins = {"argmax": float("inf"), "order": float("inf"), "origin": float("inf"),
             "top_p": float("inf"), "count": float("inf")}
  states, calls = [], 0
  for i in range(steps):
    states.append(x.numpy().copy())
    mask_index = x == mask_id
    logits = raw_logits_fn(x)
    calls += 1
    logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    mask_logits = logits[mask_index]
    ut = None if u_token is None else torch.from_numpy(np.asarray(u_token(i), np.float64))
    uo = None if u_order is None else torch.from_numpy(np.asarray(u_order(i), np.float32))
    t = timesteps[i]
    s = timesteps[i + 1]
    opts = dict(temperature=temperature, top_p=top_p, top_k=top_k)
    if alg == "origin":
      p_transfer = 1 - s / t if i < steps - 1 else 1
      x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_id
      u = uo[mask_index]
      margins["origin"] = min(margins["origin"],
                              float((u.double() - float(p_transfer)).abs().min())
                              if u.numel() else float("inf"))
      transfer_index_t_s = u < p_transfer
      sel = None if ut is None else ut[mask_index][transfer_index_t_s]
      _, x0[transfer_index_t_s] = sample_tokens(mask_logits[transfer_index_t_s], sel,
                                                margins, **opts)
      x[mask_index] = x0.clone()
    else:
      sel = None if ut is None else ut[mask_index]
      confidence, x0 = sample_tokens(mask_logits, sel, margins, **opts,
                                     margin_confidence=alg == "topk_margin",
                                     neg_entropy=alg == "entropy")
      num_mask_token = mask_index.sum() / mask_index.shape[0]
      v = float(num_mask_token * (1 - s / t))
      margins["count"] = min(margins["count"], abs(v - round(v)) if i < steps - 1
                             else float("inf"))
      number_transfer_tokens = (int(num_mask_token * (1 - s / t)) if i < steps - 1
                                else int(num_mask_token))
      full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
      full_confidence[mask_index] = confidence
      if number_transfer_tokens > 0:
        if alg_temp is None or alg_temp == 0:
          keys = full_confidence
        else:
          w = F.softmax(full_confidence / alg_temp, dim=-1)
          keys = torch.log(w) - torch.log(-torch.log(uo.double()))
        ranked = torch.sort(keys, dim=-1, descending=True)[0]
        k = number_transfer_tokens
        if k < ranked.shape[1]:
          gap = ranked[:, k - 1] - ranked[:, k]
          gap = gap[torch.isfinite(gap)]
          if gap.numel():
            margins["order"] = min(margins["order"], float(gap.min()))
        _, transfer_index = torch.topk(keys, k)
        x_ = torch.zeros_like(x, dtype=torch.long) + mask_id
        x_[mask_index] = x0.clone()
        row_indices = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
        x[row_indices, transfer_index] = x_[row_indices, transfer_index]
  return {"tokens": x.numpy(), "states": states, "calls": calls, "margin": margins}
