"""Test fixtures: a tiny random GPT-2 judge written as a Hugging Face PyTorch directory.

The Gen-PPL tests need a causal LM with the GPT-2 architecture and a GPT-2-like
byte-level BPE tokenizer whose EOS is ``<|endoftext|>`` (the last id, as in GPT-2;
built by tests/fixtures_tokenizer.py), small enough to run in seconds on CPU.
Weights are random (not the zero/identity init), so parity tests compare real
computations.
"""

from __future__ import annotations

import pathlib

import torch
import transformers

from tests import fixtures_tokenizer

EOS = fixtures_tokenizer.ENDOFTEXT
VOCAB = 320  # default tiny vocabulary; EOS = VOCAB - 1


def build_tiny_gpt2(path: str | pathlib.Path,
                    vocab_size: int = VOCAB,
                    n_positions: int = 32,
                    n_layer: int = 2,
                    n_embd: int = 32,
                    n_head: int = 4,
                    seed: int = 0,
                    init_std: float = 0.2,
                    safe_serialization: bool = True):
  """Writes a tiny random ``GPT2LMHeadModel`` plus tokenizer to an HF directory.

  Args:
    path: output directory (created).
    vocab_size: tokenizer vocabulary (EOS = vocab_size - 1) and the model's
      vocab_size.
    n_positions: the judge context (GPT-2 large: 1024); tests use a tiny one so
      texts longer than one chunk are cheap.
    init_std: std of the random weights. Larger than GPT-2's 0.02 so the judge's
      predictions are far from uniform and the NLLs differ from token to token.
    safe_serialization: write model.safetensors (True) or pytorch_model.bin.

  Returns:
    (model, tokenizer): the PyTorch model (eval mode, float32) and tokenizer.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  fixtures_tokenizer.build_tiny_tokenizer(path, vocab_size=vocab_size)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  assert len(tokenizer) == vocab_size and tokenizer.eos_token_id == vocab_size - 1
  config = transformers.GPT2Config(
      vocab_size=vocab_size, n_positions=n_positions, n_ctx=n_positions,
      n_embd=n_embd, n_layer=n_layer, n_head=n_head,
      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
      initializer_range=init_std)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    # LayerNorm gains/biases and linear biases start at 1/0; perturb them too so
    # every parameter the conversion maps is exercised by the parity checks.
    for name, p in model.named_parameters():
      if name.endswith(".bias") or ".ln_" in name or name.startswith("transformer.ln_f"):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(path), safe_serialization=safe_serialization)
  return model, tokenizer
