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
