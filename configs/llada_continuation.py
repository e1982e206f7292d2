"""Continuation baseline for LLaDA-8B-Base: the same budget with LLaDA's own pretraining
loss, Σ_masked CE / p_mask / (B·L) (``diffusion/llada.py``)."""

from configs import llada_drift


def get_config():
  c = llada_drift.get_config()
  c.objective = "continuation"
  return c
