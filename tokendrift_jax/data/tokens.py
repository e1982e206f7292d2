"""Pre-tokenized training data: int32 ``[N, length]`` ``.npy`` arrays (``data.kind='tokens'``).

Each row is one training sequence. The arrays are memory-mapped and batched by the same
grain pipeline as text data (:mod:`tokendrift_jax.data.input_pipeline`), so a run resumes
and shards over processes the same way.

Per-row prompt lengths (prompt-conditioned refinement, ``config.prompt.mode = "data"``,
e.g. SFT pairs prompt + response): an int ``[N]`` ``.npy`` next to each tokens file,
``X.npy`` -> ``X.prompt_lengths.npy`` (:func:`prompt_lengths_path`), value P_i in
[0, length − 1]: row i's first P_i tokens are its prompt, the rest (at least one token)
its completion. Training batches then carry them as one extra column: int32
``[B, length + 1]``, ``[:, :length]`` the tokens and ``[:, length]`` the prompt lengths
(what ``train.losses.split_prompt`` reads), so they are shuffled, sliced per process and
checkpointed with their rows. Validation batches stay the tokens alone (the validation
NLL is the unconditional loss of the whole row).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import jax
import numpy as np

from tokendrift_jax.data import input_pipeline

SPLITS = ("train_tokens", "valid_tokens")
PROMPT_LENGTHS_SUFFIX = ".prompt_lengths.npy"


def prompt_lengths_path(tokens_path: str) -> str:
  """Where the per-row prompt lengths of ``tokens_path`` live: X.npy -> X.prompt_lengths.npy."""
  stem = tokens_path[:-len(".npy")] if tokens_path.endswith(".npy") else tokens_path
  return stem + PROMPT_LENGTHS_SUFFIX


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


def load_npy(path: str, field: str) -> np.ndarray:
  """The memory-mapped array of the .npy at ``path``; ValueError naming ``field`` and the
  file for a missing, empty, truncated or non-.npy file and for a non-integer dtype."""
  if not os.path.isfile(path):
    raise ValueError(f"{field}={path!r}: no such file")
  if os.path.getsize(path) == 0:
    raise ValueError(f"{field}={path!r} is empty (0 bytes), not a .npy array")
  try:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    raise ValueError(f"{field}={path!r} is not a readable .npy array ({reason})") from e
  if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{field}={path!r} must hold integer token ids, got dtype "
                     f"{getattr(arr, 'dtype', type(arr).__name__)}")
  if arr.size == 0:
    raise ValueError(f"{field}={path!r} is empty (shape {arr.shape})")
  return arr


def load_split(path: str, seq_len: int, process, field: str) -> np.ndarray:
  """The memory-mapped int array at ``path``, checked for dtype, shape and token ids."""
  arr = load_npy(path, field)
  if arr.ndim != 2 or arr.shape[0] == 0:
    raise ValueError(f"{field}={path!r}: expected a non-empty int [N, length] array, got "
                     f"shape {arr.shape}")
  if arr.shape[1] != seq_len:
    raise ValueError(f"{field}={path!r} has rows of length {arr.shape[1]}, the model trains "
                     f"on config.model.length={seq_len}")
  check_token_ids(arr, process, f"{field}={path!r}")
  return arr


def load_prompt_lengths(tokens_path: str, rows: int, seq_len: int) -> np.ndarray:
  """The int [N] prompt lengths next to ``tokens_path``, checked against its N rows:
  every value in [0, seq_len − 1] (each row keeps at least one completion token)."""
  path = prompt_lengths_path(tokens_path)
  what = f"prompt lengths {path!r} (config.prompt.mode='data', next to {tokens_path!r})"
  if not os.path.isfile(path):
    raise ValueError(f"{what}: no such file; write the int [N] prompt length of every row")
  arr = load_npy(path, what)
  if arr.shape != (rows,) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{what}: expected an int array of shape ({rows},) (one per row), got "
                     f"{arr.dtype} {arr.shape}")
  lo, hi = int(arr.min()), int(arr.max())
  if lo < 0 or hi > seq_len - 1:
    raise ValueError(f"{what}: values span [{lo}, {hi}] but must lie in [0, {seq_len - 1}] "
                     f"(config.model.length={seq_len}; every row needs a completion token)")
  return arr


class PromptedRows:
  """Rows with their prompt length appended: ``rows[idx]`` -> int32 [n, length + 1].

  Reads only the indexed rows of the memory-mapped arrays (what the grain pipeline asks).
  """

  def __init__(self, tokens: np.ndarray, prompt_lengths: np.ndarray):
    if tokens.ndim != 2 or prompt_lengths.shape != tokens.shape[:1]:
      raise ValueError(f"tokens [N, L] and prompt lengths [N] disagree: {tokens.shape} vs "
                       f"{prompt_lengths.shape}")
    self.tokens, self.prompt_lengths = tokens, prompt_lengths
    self.shape = (tokens.shape[0], tokens.shape[1] + 1)
    self.ndim = 2

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, idx) -> np.ndarray:
    idx = np.asarray(idx)
    rows = np.asarray(self.tokens[idx], np.int32)
    plen = np.asarray(self.prompt_lengths[idx], np.int32)
    return np.concatenate([rows, plen[..., None]], axis=-1)


def make_datasets(data_cfg: Any, *, global_batch: int, eval_global_batch: int, seq_len: int,
                  seed: int, process, prompt_lengths: bool = False
                  ) -> tuple[Iterator, Callable | None]:
  """(train iterator, eval iterator factory or None) over ``data.train_tokens`` /
  ``data.valid_tokens``, each process reading its slice of every global batch.

  The eval factory takes an optional number of batches and has ``num_batches``. With
  ``prompt_lengths`` the train batches are int32 [B/P, seq_len + 1], the last column each
  row's prompt length (read from the companion file, see the module docstring).
  """
  arrays = {}
  for split in SPLITS:
    path = str(data_cfg.get(split, "") or "")
    if path:
      arrays[split] = load_split(path, seq_len, process, f"config.data.{split}")
  if "train_tokens" not in arrays:
    raise ValueError("config.data.kind='tokens' needs config.data.train_tokens")
  train_rows = arrays["train_tokens"]
  if prompt_lengths:
    path = str(data_cfg.train_tokens)
    train_rows = PromptedRows(train_rows, load_prompt_lengths(path, len(train_rows), seq_len))
  pi, pc = jax.process_index(), jax.process_count()
  train = input_pipeline.train_dataset(train_rows, global_batch=global_batch,
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
