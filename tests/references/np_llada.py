"""Independent float64 NumPy references of LLaDA's losses and sampler.

Written from the public ML-GSAI/LLaDA sources (GUIDELINES.md: ``forward_process``, the
pre-training and SFT losses; generate.py: ``add_gumbel_noise``, ``get_num_transfer_tokens``,
``generate``), step by step in their order, with the random draws passed in: the caller
takes them from the documented key use of the code under test, so both consume identical
uniforms.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


# --- losses (GUIDELINES.md) -----------------------------------------------------------


def forward_process(x0, t, u, mask_id, eps=1e-3, prompt_lengths=None):
  """LLaDA's forward_process: (noisy, p_mask [B, L]); SFT restores the prompt after it.

  Args:
    x0: int[B, L]; t: float[B] (``torch.rand(b)``); u: float[B, L] (``torch.rand((b, l))``).
    prompt_lengths: optional int[B] (SFT): the first prompt_lengths[b] tokens keep x0.
  """
  x0 = np.asarray(x0)
  b, l = x0.shape
  p_mask = np.repeat(((1 - eps) * np.asarray(t, np.float64) + eps)[:, None], l, axis=1)
  noisy = np.where(np.asarray(u, np.float64) < p_mask, mask_id, x0)
  if prompt_lengths is not None:
    prompt = np.arange(l)[None, :] < np.asarray(prompt_lengths)[:, None]
    noisy[prompt] = x0[prompt]
  return noisy, p_mask


def _cross_entropy(logits, target):
  """F.cross_entropy(reduction='none') over the last axis (every id, the mask included)."""
  z = np.asarray(logits, np.float64)
  m = z.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
  return lse - np.take_along_axis(z, np.asarray(target)[..., None], -1)[..., 0]


def pretrain_loss(logits, x0, noisy, p_mask, mask_id):
  """Σ_masked CE / p_mask over B·L (pre-training); returns (loss, Σ CE / p_mask)."""
  masked = noisy == mask_id
  token_loss = _cross_entropy(logits[masked], x0[masked]) / p_mask[masked]
  return token_loss.sum() / (x0.shape[0] * x0.shape[1]), token_loss.sum()


def sft_loss(logits, x0, noisy, p_mask, prompt_lengths, mask_id):
  """Σ_b Σ_masked CE / (p_mask · answer length) / B (SFT)."""
  b, l = x0.shape
  prompt = np.arange(l)[None, :] < np.asarray(prompt_lengths)[:, None]
  answer = np.repeat((1 - prompt.astype(np.int64)).sum(-1, keepdims=True), l, axis=1)
  masked = noisy == mask_id
  token_loss = _cross_entropy(logits[masked], x0[masked]) / p_mask[masked]
  return np.sum(token_loss / answer[masked]) / b


# --- sampler (generate.py) ------------------------------------------------------------


def add_gumbel_noise(logits, u, temperature):
  """exp(logits) / (−log u)^τ in float64; the logits themselves at τ = 0."""
  if temperature == 0:
    return logits
  logits = np.asarray(logits, np.float64)
  return np.exp(logits) / (-np.log(np.asarray(u, np.float64))) ** temperature


def get_num_transfer_tokens(mask_num, steps):
  """int[B, steps]: mask_num // steps each, +1 for the first mask_num % steps steps."""
  mask_num = np.asarray(mask_num, np.int64)
  out = np.zeros((mask_num.shape[0], steps), np.int64) + (mask_num // steps)[:, None]
  for i, r in enumerate(mask_num % steps):
    out[i, :r] += 1
  return out


def _softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def generate(denoiser: Callable[[np.ndarray], np.ndarray], prompt, *, steps, gen_length,
             block_length, temperature, cfg_scale, remasking, mask_id,
             gumbel_u: Callable[[int], np.ndarray] | None = None,
             remask_u: Callable[[int], np.ndarray] | None = None):
  """generate.py in float64 NumPy.

  Args:
    denoiser: int[R, T] -> float[R, T, V] logits (R = B, or 2B with guidance, the
      prompted rows first and the un-prompted after, as generate.py concatenates them).
    gumbel_u(i), remask_u(i): the uniforms of global step i ([B, T, V] and [B, T]).

  Returns:
    dict with ``tokens`` [B, T]; ``states``: x before every step; ``calls``: the row count
    of every denoiser call; ``margin``: the smallest gap between a selected and an
    unselected eligible confidence, and between the winning and the runner-up
    perturbed logit in log space at masked positions (so a caller can tell that float32
    rounding cannot flip a choice).
  """
  prompt = np.asarray(prompt, np.int64)
  b, p_len = prompt.shape
  x = np.full((b, p_len + gen_length), mask_id, np.int64)
  x[:, :p_len] = prompt
  prompt_index = x != mask_id
  assert gen_length % block_length == 0
  num_blocks = gen_length // block_length
  assert steps % num_blocks == 0
  steps_per_block = steps // num_blocks
  states, calls = [], []
  conf_margin, arg_margin = np.inf, np.inf
  step = 0
  for nb in range(num_blocks):
    lo = p_len + nb * block_length
    hi = lo + block_length
    num_transfer = get_num_transfer_tokens((x[:, lo:hi] == mask_id).sum(1), steps_per_block)
    for i in range(steps_per_block):
      states.append(x.copy())
      mask_index = x == mask_id
      if cfg_scale > 0:
        un_x = x.copy()
        un_x[prompt_index] = mask_id
        both = np.asarray(denoiser(np.concatenate([x, un_x], 0)), np.float64)
        calls.append(2 * b)
        logits, un_logits = both[:b], both[b:]
        logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
      else:
        logits = np.asarray(denoiser(x), np.float64)
        calls.append(b)
      noisy = add_gumbel_noise(logits, None if temperature == 0 else gumbel_u(step),
                               temperature)
      x0 = noisy.argmax(-1)
      # The winner's lead over the runner-up in log space (log of the perturbed values),
      # over the masked positions up to the block's end (those that can be committed).
      log_noisy = np.log(noisy) if temperature else noisy
      top2 = np.sort(log_noisy[:, :hi][mask_index[:, :hi]], -1)[..., -2:]
      if top2.size:
        arg_margin = min(arg_margin, np.min(top2[..., 1] - top2[..., 0]))
      if remasking == "low_confidence":
        x0_p = np.take_along_axis(_softmax(logits), x0[..., None], -1)[..., 0]
      elif remasking == "random":
        x0_p = np.asarray(remask_u(step), np.float64)
      else:
        raise NotImplementedError(remasking)
      x0_p[:, hi:] = -np.inf
      x0 = np.where(mask_index, x0, x)
      conf = np.where(mask_index, x0_p, -np.inf)
      transfer = np.zeros_like(mask_index)
      for j in range(b):
        k = num_transfer[j, i]
        order = np.argsort(-conf[j], kind="stable")
        transfer[j, order[:k]] = True
        chosen, rest = conf[j, order[:k]], conf[j, order[k:]]
        rest = rest[np.isfinite(rest)]
        if k and rest.size:
          conf_margin = min(conf_margin, chosen.min() - rest.max())
      x[transfer] = x0[transfer]
      step += 1
  return {"tokens": x, "states": states, "calls": calls,
          "margin": {"confidence": conf_margin, "argmax": arg_margin}}
