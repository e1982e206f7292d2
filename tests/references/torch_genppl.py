"""Independent float64 PyTorch reference of the MDLM/DUO generative-perplexity protocol.

Written from MDLM ``Diffusion.compute_generative_perplexity`` / ``eval_retokenize`` and DUO
``Metrics.record_generative_perplexity``: one tokenizer call per group (pad = EOS,
truncation, padding=True, max_length), ``torch.split`` into judge-context chunks,
``GPT2LMHeadModel(chunk, attention_mask=...)``, ``F.cross_entropy`` of tokens[1:] from
logits[:-1], weights ``first_eos[1:] + token_mask[1:]``, exp(sum nll*w / sum w).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import transformers


def torch_protocol(pt_dir, texts, max_length, context, group_size=None):
  """float64 PyTorch Gen-PPL following the public code; returns per-sample sums."""
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(pt_dir))
  if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.pad_token_id = tokenizer.eos_token_id
  eos = tokenizer.eos_token_id
  model = transformers.GPT2LMHeadModel.from_pretrained(str(pt_dir)).double().eval()
  group_size = group_size or len(texts)
  nll_sums, w_sums = [], []
  for start in range(0, len(texts), group_size):
    enc = tokenizer(texts[start:start + group_size], return_tensors="pt",
                    return_token_type_ids=False, return_attention_mask=True,
                    truncation=True, padding=True, max_length=max_length)
    ids, attn = enc["input_ids"], enc["attention_mask"]
    nll_row = torch.zeros(ids.shape[0], dtype=torch.float64)
    w_row = torch.zeros(ids.shape[0], dtype=torch.float64)
    for chunk, chunk_mask in zip(torch.split(ids, context, dim=-1),
                                 torch.split(attn, context, dim=-1)):
      with torch.no_grad():
        logits = model(chunk, attention_mask=chunk_mask)[0]
      nlls = F.cross_entropy(logits.transpose(-1, -2)[..., :-1], chunk[..., 1:], reduction="none")
      first_eos = (chunk == eos).cumsum(-1) == 1
      token_mask = chunk != eos
      valid = (first_eos[..., 1:] + token_mask[..., 1:]).double()
      nll_row += (nlls * valid).sum(-1)
      w_row += valid.sum(-1)
    nll_sums.append(nll_row.numpy())
    w_sums.append(w_row.numpy())
  nll, w = np.concatenate(nll_sums), np.concatenate(w_sums)
  return math.exp(nll.sum() / w.sum()), nll, w


def torch_conditional(pt_dir, prompts, completions, max_length, context, group_size=None):
  """float64 PyTorch Gen-PPL of completions given prompts (conditional judging).

  The definition (docs/EVALUATION.md, "Conditional judging"): per group of ``group_size``
  pairs, the completion is tokenized with ``truncation=True, max_length``, the prompt on its
  own; only the prompt's last ``context - len(completion)`` ids are kept; row = prompt +
  completion, right-padded with EOS to the group's longest row (attention 0 on padding).
  Targets are the ids at positions >= len(prompt) (and >= 1), weighted 1 unless they are
  an EOS after the first EOS of that region. Returns (Gen-PPL, per-pair NLL sums, per-pair
  weight sums).
  """
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(pt_dir))
  eos = tokenizer.eos_token_id
  model = transformers.GPT2LMHeadModel.from_pretrained(str(pt_dir)).double().eval()
  group_size = group_size or len(prompts)
  nll_all, w_all = [], []
  for start in range(0, len(prompts), group_size):
    rows, starts = [], []
    for p_text, c_text in zip(prompts[start:start + group_size],
                              completions[start:start + group_size]):
      c = tokenizer(c_text, truncation=True, max_length=max_length)["input_ids"]
      p = tokenizer(p_text)["input_ids"]
      keep = context - len(c)
      p = p[len(p) - keep:] if len(p) > keep else p
      rows.append(p + c)
      starts.append(len(p))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), eos, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
      ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
      attn[i, :len(r)] = 1
    with torch.no_grad():
      logits = model(ids, attention_mask=attn)[0]
    nlls = F.cross_entropy(logits.transpose(-1, -2)[..., :-1], ids[..., 1:], reduction="none")
    for i, s in enumerate(starts):
      target = ids[i, 1:]
      position = torch.arange(1, width)
      region = position >= s
      eos_seen = torch.cumsum(((target == eos) & region).long(), 0)
      weight = (region & ((target != eos) | (eos_seen == 1))).double()
      nll_all.append(float((nlls[i] * weight).sum()))
      w_all.append(float(weight.sum()))
  nll, w = np.asarray(nll_all), np.asarray(w_all)
  return math.exp(nll.sum() / w.sum()), nll, w
