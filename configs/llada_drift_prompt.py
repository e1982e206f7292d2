"""Prompt-conditioned TokenDrift on LLaDA-8B-Base (the paper's "future work").

A prompt is never corrupted; the generator completes the rest; the soft lift applies only
at the masked completion positions (the prompt enters the encoder as E[x0]); h is the
encoder feature of prompt + soft completion, u that of the real row (docs/DIFFUSION.md,
"Prompt-conditioned refinement").

Default prompt: the first 256 of the 1024 tokens of every training row (prompt.mode
"prefix"), on the same text data as configs/llada_drift.py. For SFT pairs, pre-tokenize
prompt + response rows into an int32 [N, 1024] .npy and their prompt lengths into the
companion int [N] ``<stem>.prompt_lengths.npy`` next to it, then::

  --config.prompt.mode=data --config.prompt.length=0 --config.data.kind=tokens \\
  --config.data.train_tokens=/data/sft.npy

Features pool every position (drift.pool "all", the paper's choice); "completion" pools
only the non-prompt positions.
"""

from configs import llada_drift

PROMPT_LENGTH = 256


def get_config():
  c = llada_drift.get_config()
  c.prompt.mode = "prefix"
  c.prompt.length = PROMPT_LENGTH
  c.drift.pool = "all"
  return c
