"""Continuation baseline for Dream-v0-Base-7B: the same budget with the ``dream`` process's
masked-diffusion loss, Σ_masked CE / p_mask / (B·L) over the aligned logits
(``diffusion/dream.py``; Dream's own CART weighting is not public)."""

from configs import dream_drift


def get_config():
  c = dream_drift.get_config()
  c.objective = "continuation"
  return c
