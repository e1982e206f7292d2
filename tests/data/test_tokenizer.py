"""data/tokenizer: the tiny GPT-2-like tokenizer and clear errors for uncached hub names."""

from __future__ import annotations

import pytest
import transformers

from tokendrift_jax.data import tokenizer as tokenizer_lib


def test_tiny_tokenizer_is_gpt2_like(tok):
  assert isinstance(tok, transformers.GPT2TokenizerFast)
  assert len(tok) == 300
  assert tok.bos_token_id == tok.eos_token_id == 299
  ids = tok.encode("the quick brown fox.", add_special_tokens=False)
  assert tok.decode(ids) == "the quick brown fox."
  assert tokenizer_lib.special_ids(tok) == tokenizer_lib.SpecialIds(bos=299, eos=299)


def test_tokenizer_hub_name_not_cached_is_clear_error():
  with pytest.raises(FileNotFoundError, match=r"data\.tokenizer.*not in the local Hugging Face"
                     ) as e:
    tokenizer_lib.load_tokenizer("no-such-org/no-such-tokenizer-xyz")
  # One line (the launchers print errors as one "error: ..." line), with the command.
  assert "\n" not in str(e.value) and "save_pretrained('/some/dir/" in str(e.value)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tokenizer_lib.load_tokenizer("/nonexistent/tokenizer/dir")
