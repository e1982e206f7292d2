"""Pre-tokenized training data: int32 ``[N, length]`` ``.npy`` arrays (``data.kind='tokens'``).

Each row is one training sequence. The arrays are memory-mapped and batched by the same
grain pipeline as text data (:mod:`tokendrift_jax.data.input_pipeline`), so a run resumes
and shards over processes the same way.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import jax
import numpy as np

from tokendrift_jax.data import input_pipeline

SPLITS = ("train_tokens", "valid_tokens")


def check_token_ids(tokens: np.ndarray, process, what: str) -> None:
  """Refuses clean data the backbone cannot read: ids outside its vocabulary, or the mask.

  ``process`` is the run's diffusion process (its ``vocab_size`` and ``mask_id``).
  """
  lo, hi = int(tokens.min()), int(tokens.max())
  if lo < 0 or hi >= process.vocab_size:
    raise ValueError(f"{what}: token ids span [{lo}, {hi}] but the model vocabulary is "
                     f"{process.vocab_size}; the tokenizer does not match the backbone")
  if process.mask_id is not None and np.any(tokens == process.mask_id):
    raise ValueError(f"{what}: clean data contains the mask id {process.mask_id}")


def load_split(path: str, seq_len: int, process, field: str) -> np.ndarray:
  """The memory-mapped int array at ``path``, checked for shape and token ids."""
  if not os.path.isfile(path):
    raise ValueError(f"{field}={path!r}: no such file")
  arr = np.load(path, mmap_mode="r")
  if arr.ndim != 2 or arr.shape[0] == 0:
    raise ValueError(f"{field}={path!r}: expected a non-empty int [N, length] array, got "
                     f"shape {arr.shape}")
  if arr.shape[1] != seq_len:
    raise ValueError(f"{field}={path!r} has rows of length {arr.shape[1]}, the model trains "
                     f"on config.model.length={seq_len}")
  check_token_ids(arr, process, f"{field}={path!r}")
  return arr


def make_datasets(data_cfg: Any, *, global_batch: int, eval_global_batch: int, seq_len: int,
                  seed: int, process) -> tuple[Iterator, Callable | None]:
  """(train iterator, eval iterator factory or None) over ``data.train_tokens`` /
  ``data.valid_tokens``, each process reading its slice of every global batch.

  The eval factory takes an optional number of batches and has ``num_batches``.
  """
  arrays = {}
  for split in SPLITS:
    path = str(data_cfg.get(split, "") or "")
    if path:
      arrays[split] = load_split(path, seq_len, process, f"config.data.{split}")
  if "train_tokens" not in arrays:
    raise ValueError("config.data.kind='tokens' needs config.data.train_tokens")
  pi, pc = jax.process_index(), jax.process_count()
  train = input_pipeline.train_dataset(arrays["train_tokens"], global_batch=global_batch,
                                       seed=seed, process_index=pi, process_count=pc)
  train_iter = iter(train.to_iter_dataset())
  if "valid_tokens" not in arrays:
    return train_iter, None
  valid = input_pipeline.eval_dataset(arrays["valid_tokens"], global_batch=eval_global_batch,
                                      process_index=pi, process_count=pc)

  def eval_factory(num_batches=None):
    ds = valid if num_batches is None else valid[:int(num_batches)]
    return iter(ds.to_iter_dataset())

  eval_factory.num_batches = len(valid)
  return train_iter, eval_factory
