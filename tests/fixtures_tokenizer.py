"""A tiny GPT-2-like tokenizer built offline, for tests.

Byte-level BPE (GPT-2's pre-tokenizer and decoder) trained with the `tokenizers`
library on a fixed synthetic corpus, saved as an HF tokenizer directory that
``transformers.AutoTokenizer`` loads as ``GPT2TokenizerFast``. As in GPT-2, the
single special token ``<|endoftext|>`` is the last id (``vocab_size - 1``) and
serves as BOS, EOS and UNK.
"""

from __future__ import annotations

import os

import numpy as np
import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _training_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
  """Deterministic pseudo-English lines: enough distinct pairs for a few hundred merges."""
  rng = np.random.default_rng(seed)
  syllables = ["".join(rng.choice(list(_LETTERS), size=rng.integers(1, 4))) for _ in range(300)]
  lines = []
  for _ in range(n_lines):
    words = ["".join(rng.choice(syllables, size=rng.integers(1, 4)))
             for _ in range(rng.integers(4, 12))]
    lines.append(" ".join(words) + rng.choice([".", ",", "!", "?"]))
  return lines


def build_tiny_tokenizer(directory: str | os.PathLike, vocab_size: int = 512) -> str:
  """Trains and saves the tokenizer; returns ``directory`` as a string.

  Args:
    directory: created if missing; receives tokenizer.json and the HF configs.
    vocab_size: total ids including ``<|endoftext|>`` (= vocab_size - 1); at least
      258 (the 256 byte symbols, one merge, the special token).
  """
  if vocab_size < 258:
    raise ValueError(f"vocab_size must be >= 258 (256 bytes + 1 merge + EOS), got {vocab_size}")
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=1,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                special_tokens=[], show_progress=False)
  tok.train_from_iterator(_training_corpus(), trainer=trainer)
  if tok.get_vocab_size() != vocab_size - 1:
    raise RuntimeError(f"BPE training produced {tok.get_vocab_size()} ids, wanted "
                       f"{vocab_size - 1}; the synthetic corpus is too small for this size")
  # Added after training so that, as in GPT-2, it takes the last id.
  tok.add_special_tokens([ENDOFTEXT])
  fast = transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token=ENDOFTEXT,
                                        eos_token=ENDOFTEXT, unk_token=ENDOFTEXT)
  os.makedirs(directory, exist_ok=True)
  fast.save_pretrained(str(directory))
  return str(directory)
