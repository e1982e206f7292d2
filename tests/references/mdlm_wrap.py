"""Independent reference of MDLM's document wrapping (``group_texts``), in plain Python."""

from __future__ import annotations

import numpy as np


# Reference for MDLM's wrap, written from the description (REFERENCE.md, "Data"):
# each document's tokens + EOS, concatenated per group, cut into (length - 2)-token
# pieces (trailing partial piece dropped), each framed [BOS] piece [EOS].
def ref_group_texts(docs: list[list[int]], length: int, bos: int, eos: int) -> list[list[int]]:
  stream: list[int] = []
  for doc in docs:
    stream.extend(doc)
    stream.append(eos)
  piece = length - 2
  rows = []
  start = 0
  while start + piece <= len(stream):
    rows.append([bos] + stream[start:start + piece] + [eos])
    start += piece
  return rows


def ref_wrap(docs: list[list[int]], length: int, bos: int, eos: int,
             group_docs: int | None) -> np.ndarray:
  groups = [docs] if group_docs is None else [docs[i:i + group_docs]
                                              for i in range(0, len(docs), group_docs)]
  rows = [r for g in groups for r in ref_group_texts(g, length, bos, eos)]
  return np.asarray(rows, dtype=np.int64).reshape(len(rows), length)
