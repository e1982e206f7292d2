"""MDLM's "wrap" of tokenized documents into fixed-length BOS ... EOS blocks.

Implements the semantics of ``_group_texts`` and the ``wrap=True`` branch of
``preprocess_and_tokenize`` in MDLM's ``dataloader.py`` (DUO's is the same):

1. every document is tokenized *without* special tokens and one EOS is appended to
   it (BOS is *not* added per document);
2. the token lists of a group of documents are concatenated;
3. the concatenation is cut into pieces of ``length - 2`` tokens, and the last,
   shorter piece is dropped (so a group with fewer than ``length - 2`` tokens gives
   no block at all);
4. every piece is framed as ``[BOS] piece [EOS]``, giving rows of ``length`` tokens.

A document therefore can span several blocks, and a block's closing EOS is added
by the framing even when it falls mid-document. With GPT-2, BOS = EOS = 50256.

Grouping subtlety: MDLM applies ``_group_texts`` through ``datasets.Dataset.map(
batched=True)``, whose default ``batch_size`` is 1000 documents, so the remainder
is dropped once per group of 1000 consecutive documents, not once per dataset.
(With ``num_proc > 1`` the dataset is first cut into ``num_proc`` contiguous
shards and each shard is grouped from its own start; the grouping then depends on
the CPU count of the machine that built the cache. ``group_docs=1000`` reproduces
``num_proc=1``.) ``group_docs=None`` concatenates the whole stream instead and drops
only the final remainder.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

# MDLM's datasets.map(batched=True) default batch size: the unit of concatenation.
MDLM_GROUP_DOCS = 1000


def _check_args(length: int, bos: int, eos: int) -> None:
  if length < 3:
    raise ValueError(f"wrap length must be >= 3 (BOS + >=1 token + EOS), got {length}")
  for name, tok in (("bos", bos), ("eos", eos)):
    if not 0 <= tok < 2 ** 31:
      raise ValueError(f"{name} token id must fit int32 and be >= 0, got {tok}")


def _frame(body: np.ndarray, length: int, bos: int, eos: int) -> np.ndarray:
  """body int32[n * (length-2)] -> int32[n, length] rows [BOS] piece [EOS]."""
  piece = length - 2
  n = body.shape[0] // piece
  out = np.empty((n, length), dtype=np.int32)
  out[:, 0] = bos
  out[:, 1:-1] = body[: n * piece].reshape(n, piece)
  out[:, -1] = eos
  return out


def _with_eos(doc: Sequence[int], eos: int) -> np.ndarray:
  arr = np.asarray(doc, dtype=np.int64)
  if arr.ndim != 1:
    raise ValueError(f"each document must be a 1-D token list, got shape {arr.shape}")
  if arr.size and (arr.min() < 0 or arr.max() >= 2 ** 31):
    raise ValueError(f"token ids must be in [0, 2**31), got range [{arr.min()}, {arr.max()}]")
  return np.append(arr, eos).astype(np.int32)


def wrap_documents(docs: Sequence[Sequence[int]], *, length: int, bos: int,
                   eos: int) -> np.ndarray:
  """One call of MDLM's ``_group_texts`` on one group of documents.

  Args:
    docs: token ids of each document, tokenized without special tokens and
      *without* the trailing EOS (this function appends it, as MDLM's tokenization
      step does).
    length: block length (MDLM: model length 1024); pieces hold ``length - 2``.
    bos: id framing the start of every block.
    eos: id appended to every document and framing the end of every block.

  Returns:
    int32[N, length], N = (sum(len(d) + 1 for d in docs)) // (length - 2); the
    trailing remainder of fewer than ``length - 2`` tokens is dropped.
  """
  _check_args(length, bos, eos)
  if not docs:
    return np.zeros((0, length), dtype=np.int32)
  body = np.concatenate([_with_eos(d, eos) for d in docs])
  return _frame(body, length, bos, eos)


def iter_wrapped_blocks(docs: Iterable[Sequence[int]], *, length: int, bos: int, eos: int,
                        group_docs: int | None = MDLM_GROUP_DOCS,
                        flush_docs: int = MDLM_GROUP_DOCS) -> Iterator[np.ndarray]:
  """Streams :func:`wrap_documents` over an iterable of documents.

  Args:
    docs: token lists (no special tokens, no trailing EOS), in corpus order.
    length, bos, eos: as in :func:`wrap_documents`.
    group_docs: concatenation unit. An int k drops the remainder of every k
      consecutive documents (MDLM: 1000, see the module docstring); ``None``
      concatenates the whole stream and drops only the final remainder.
    flush_docs: with ``group_docs=None``, how many documents are buffered before the
      full pieces found so far are emitted (memory bound only; output unaffected).

  Yields:
    int32[n_i, length] arrays (n_i may be 0); their concatenation is the result.
  """
  _check_args(length, bos, eos)
  if group_docs is not None and group_docs < 1:
    raise ValueError(f"group_docs must be >= 1 or None, got {group_docs}")
  if flush_docs < 1:
    raise ValueError(f"flush_docs must be >= 1, got {flush_docs}")
  piece = length - 2
  if group_docs is not None:
    group: list[Sequence[int]] = []
    for doc in docs:
      group.append(doc)
      if len(group) == group_docs:
        yield wrap_documents(group, length=length, bos=bos, eos=eos)
        group = []
    if group:
      yield wrap_documents(group, length=length, bos=bos, eos=eos)
    return
  carry = np.zeros((0,), dtype=np.int32)
  pending: list[np.ndarray] = []
  for doc in docs:
    pending.append(_with_eos(doc, eos))
    if len(pending) == flush_docs:
      carry = np.concatenate([carry] + pending)
      pending = []
      n = carry.shape[0] // piece
      yield _frame(carry, length, bos, eos)
      carry = carry[n * piece:]
  carry = np.concatenate([carry] + pending)
  yield _frame(carry, length, bos, eos)
