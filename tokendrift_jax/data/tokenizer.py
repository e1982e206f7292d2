"""Loads a Hugging Face tokenizer by hub name or local directory, never over the network.

``data.tokenizer`` names either a local directory (what ``save_pretrained`` writes)
or a hub id such as ``gpt2``. Hub ids are looked up only in the local Hugging Face
cache (``local_files_only=True``), so a missing tokenizer fails at once with
instructions instead of hanging on a network call.

BOS / EOS follow MDLM's ``get_tokenizer``: ``bos_token`` (else ``cls_token``) and
``eos_token`` (else ``sep_token``). For GPT-2 both are ``<|endoftext|>`` = 50256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  import transformers

TOKENIZER_FIELD = "data.tokenizer"


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Token ids used by the wrap: ``bos`` opens and ``eos`` closes every block."""

  bos: int
  eos: int


def load_tokenizer(name_or_path: str, *, field: str = TOKENIZER_FIELD
                   ) -> transformers.PreTrainedTokenizerBase:
  """Returns the tokenizer at a local directory or in the local HF cache.

  Args:
    name_or_path: a directory holding a saved tokenizer, or a hub id (``gpt2``).
    field: the config field the value came from, named in error messages.

  Raises:
    FileNotFoundError: the value looks like a path that does not exist, or a hub
      id that is not in the local cache (the message says how to download it and
      which field to point at the local copy).
  """
  # Imported here so that errors found before any tokenizer is needed (a bad data
  # source, say) do not first pay for importing transformers.
  import transformers  # pylint: disable=import-outside-toplevel

  if not name_or_path:
    raise ValueError(f"{field} is empty; set it to a tokenizer directory or a hub id like 'gpt2'")
  path = os.path.expanduser(name_or_path)
  if os.path.isdir(path):
    try:
      return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
      raise ValueError(
          f"{field}={name_or_path!r} is a directory but holds no loadable tokenizer "
          f"(expected tokenizer.json or vocab/merges files written by save_pretrained): {e}"
      ) from e
  if os.path.exists(path):
    raise ValueError(f"{field}={name_or_path!r}: {path!r} is a file; give the directory "
                     f"that holds the tokenizer files")
  if os.path.isabs(path) or name_or_path.startswith((".", "~")):
    raise FileNotFoundError(f"{field}={name_or_path!r}: tokenizer directory {path!r} "
                            f"does not exist")
  try:
    return transformers.AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
  except OSError as e:
    raise FileNotFoundError(
        f"{field}={name_or_path!r} is not a local directory and is not in the local Hugging "
        f"Face cache, and this code does not download: on a machine with network run "
        f"python -c \"import transformers; transformers.AutoTokenizer.from_pretrained("
        f"'{name_or_path}').save_pretrained('/some/dir/{name_or_path.replace('/', '_')}')\", "
        f"copy the directory here and set {field}=/some/dir/{name_or_path.replace('/', '_')}"
    ) from e


def add_pad_token(tokenizer: transformers.PreTrainedTokenizerBase, pad_token: str
                  ) -> transformers.PreTrainedTokenizerBase:
  """MDLM's and DUO's ``get_tokenizer``: a tokenizer without a pad token (GPT-2) gets
  ``pad_token`` as an added *special* token, in place; "" leaves it unchanged.

  Both released backbones tokenized OpenWebText after this, so a literal "[PAD]" in a
  document is one id (50257 for GPT-2) rather than its text pieces ([58, 47, 2885, 60]).
  A tokenizer that has a pad token is left as it is, as they do.
  """
  if pad_token and tokenizer.pad_token is None:
    tokenizer.add_special_tokens({"pad_token": pad_token})
  return tokenizer


def special_ids(tokenizer: transformers.PreTrainedTokenizerBase) -> SpecialIds:
  """BOS and EOS ids with MDLM's fallbacks (cls for bos, sep for eos).

  MDLM reads them as ``tokenizer.encode(token)[0]`` after installing a
  ``BertProcessing`` post-processor on GPT-2 tokenizers, which puts the EOS first,
  so its BOS and EOS are both the EOS id; for GPT-2 that is 50256 = ``bos_token_id``
  = ``eos_token_id``, the ids returned here. (For BERT-style tokenizers MDLM's
  trick yields [CLS] for both; that quirk is not reproduced.)
  """
  bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
  eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
  name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
  if bos is None:
    raise ValueError(f"tokenizer {name!r} has neither a bos_token nor a cls_token")
  if eos is None:
    raise ValueError(f"tokenizer {name!r} has neither an eos_token nor a sep_token")
  return SpecialIds(bos=int(bos), eos=int(eos))


def tokenizer_fingerprint(tokenizer: transformers.PreTrainedTokenizerBase) -> str:
  """sha256 of what decides the token ids: the full fast-tokenizer JSON, or the vocab.

  Two tokenizers with the same fingerprint map every text to the same ids, so the
  data cache is shared between a hub id and a local copy of the same tokenizer.
  """
  h = hashlib.sha256()
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:
    h.update(backend.to_str().encode("utf-8"))
  else:
    vocab: dict[str, Any] = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items())).encode("utf-8"))
    h.update(type(tokenizer).__name__.encode("utf-8"))
  ids = special_ids(tokenizer)
  h.update(f"bos={ids.bos};eos={ids.eos}".encode("utf-8"))
  return h.hexdigest()


def encode_batch(tokenizer: transformers.PreTrainedTokenizerBase, texts: list[str]
                 ) -> list[list[int]]:
  """Token ids of each text, without special tokens (MDLM's wrap tokenization).

  ``verbose=False`` silences the "longer than model_max_length" warning: documents
  are cut into blocks afterwards, so long documents are expected.
  """
  out = tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                  return_token_type_ids=False, verbose=False)
  return out["input_ids"]
