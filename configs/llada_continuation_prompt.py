"""Continuation baseline of the prompt-conditioned setting: LLaDA's SFT loss, the prompt
never masked and the loss over the response, Σ_b Σ_masked CE / (p_mask · A_b) / B with A_b
the response length (``diffusion/llada.py``), same prompts and budget as
configs/llada_drift_prompt.py."""

from configs import llada_drift_prompt


def get_config():
  c = llada_drift_prompt.get_config()
  c.objective = "continuation"
  return c
