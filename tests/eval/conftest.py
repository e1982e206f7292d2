"""Builders of the LLaDA evaluation tests: a tiny LLaDA-like tokenizer and backbone.

The tokenizer is a byte-level BPE (as LLaDA's) trained on the vendored English documents,
with LLaDA's reserved tokens after its text ids: <|endoftext|> (EOS), <|mdm_mask|> (the
mask, one of the tokenizer's own ids as LLaDA's 126336) and <|eot_id|>.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

LLADA_BPE_IDS = 597                 # byte-level BPE ids 0..596
LLADA_SPECIALS = ("<|endoftext|>", "<|mdm_mask|>", "<|eot_id|>")   # ids 597, 598, 599
LLADA_TOKENIZER_SIZE = LLADA_BPE_IDS + len(LLADA_SPECIALS)
LLADA_MASK = LLADA_BPE_IDS + 1
LLADA_EVAL_LENGTH = 16


def _build_llada_tokenizer(directory, docs) -> str:
  # pylint: disable=import-outside-toplevel
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=LLADA_BPE_IDS, min_frequency=1,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                special_tokens=[], show_progress=False)
  tok.train_from_iterator(docs, trainer=trainer)
  assert tok.get_vocab_size() == LLADA_BPE_IDS
  tok.add_special_tokens(list(LLADA_SPECIALS))
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token=LLADA_SPECIALS[0], mask_token=LLADA_SPECIALS[1],
      additional_special_tokens=[LLADA_SPECIALS[2]])
  assert len(fast) == LLADA_TOKENIZER_SIZE and fast.mask_token_id == LLADA_MASK
  fast.save_pretrained(str(directory))
  return str(directory)


@pytest.fixture(scope="session")
def llada_eval_assets(tmp_path_factory, english_docs):
  """``.tokenizer`` (directory, 600 ids, mask 598), ``.ckpt`` (a random tiny LLaDA backbone
  with exactly the tokenizer's 600 ids, length 16), ``.padded`` (the same family with an
  embedding padded to 640 rows, as LLaDA-8B's 126464), ``.prompts`` (an int32 .npy [12, 16]
  of the English documents in the tokenizer's ids, EOS-padded), ``.mask``, ``.size``."""
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("llada_eval")
  tok_dir = _build_llada_tokenizer(root / "tokenizer", english_docs)
  tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
  rows = np.full((len(english_docs), LLADA_EVAL_LENGTH), tok.eos_token_id, np.int32)
  for i, doc in enumerate(english_docs):
    ids = tok.encode(doc)[:LLADA_EVAL_LENGTH]
    rows[i, :len(ids)] = ids
  np.save(root / "prompts.npy", rows)
  ckpt = tiny_run.make_llada_backbone(str(root / "llada"), seed=5,
                                      vocab_size=LLADA_TOKENIZER_SIZE, mask_token_id=LLADA_MASK)
  padded = tiny_run.make_llada_backbone(str(root / "llada_padded"), seed=6, vocab_size=640,
                                        mask_token_id=LLADA_MASK)
  return types.SimpleNamespace(tokenizer=tok_dir, ckpt=ckpt, padded=padded,
                               prompts=str(root / "prompts.npy"), mask=LLADA_MASK,
                               size=LLADA_TOKENIZER_SIZE)
