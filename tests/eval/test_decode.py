"""Decoding sampled ids as the released MDLM/DUO evaluations did (issue 17): transformers
4.38's default space cleanup, on the real GPT-2 BPE."""

from __future__ import annotations

import numpy as np
import pytest
import transformers

from tokendrift_jax.diffusion import DUOProcess
from tokendrift_jax.eval import judges


def cleanup_4_38(text: str) -> str:
  """transformers 4.38 ``PreTrainedTokenizerBase.clean_up_tokenization``, applied by
  ``decode``/``batch_decode`` when ``clean_up_tokenization_spaces`` is True, the default of
  that version (``kwargs.pop("clean_up_tokenization_spaces", True)`` in ``__init__``).
  Written from that version's rule: ten literal replacements, in this order."""
  for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                   (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                   (" 're", "'re")):
    text = text.replace(old, new)
  return text


# Texts where the cleanup changes something (and one where it must not).
TEXTS = [
    "Hello , world . Is it ? Yes !",
    "It 's fine , is n't it ? I 'm here ; we 've seen they 're gone .",
    "He said ' ok ' and left.",
    "No spaces to clean here: it's done.",
    "A literal [PAD] and an <|endoftext|> stay , as special tokens .",
]


@pytest.fixture(scope="module")
def duo_tokenizer(gpt2_bpe):
  # DUO's tokenizer (GPT-2 + [PAD] = 50257), what its judge decodes with.
  return DUOProcess(vocab_size=50258).prepare_tokenizer(
      transformers.AutoTokenizer.from_pretrained(gpt2_bpe))


def test_default_decode_is_transformers_4_38s(duo_tokenizer):
  ids = [duo_tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
  width = max(map(len, ids))
  # Samples are fixed-length rows; pad the short ones with EOS (a sample may hold EOS).
  tokens = np.asarray([i + [50256] * (width - len(i)) for i in ids], np.int32)
  raw = [duo_tokenizer.decode(row.tolist(), clean_up_tokenization_spaces=False)
         for row in tokens]
  assert raw[0].startswith("Hello , world .")  # the raw byte-level text keeps the spaces
  assert "[PAD]" in raw[4] and "<|endoftext|>" in raw[4]

  cleaned = judges.decode_texts(duo_tokenizer, tokens, clean_up_tokenization_spaces=True)
  assert cleaned == [cleanup_4_38(t) for t in raw]
  assert [c != r for c, r in zip(cleaned, raw)] == [True, True, True, False, True]
  assert judges.decode_texts(duo_tokenizer, tokens, clean_up_tokenization_spaces=False) == raw
