"""grain input pipeline over the cached MDLM-wrapped blocks.

Train: block indices 0..N-1 -> seeded global shuffle (a new permutation every
epoch) -> repeated forever -> cut into *global* batches -> each process keeps its
contiguous slice ``[p * B/P, (p+1) * B/P)`` of every global batch and reads only
those rows from the memmap. The sequence of global batches therefore depends on
the seed and the global batch size only, never on the number of processes or
devices. Contiguous slices match ``jax.make_array_from_process_local_data`` with
``sharding.batch_sharding`` on a mesh built from ``jax.devices()`` (process p owns
devices, hence rows, in order).

Global batches run across epoch boundaries (the tail of epoch e and the head of
epoch e+1 can share a batch), so every batch has the full shape.

Validation: the blocks of the held-out documents in cache order (not shuffled),
cut into full global eval batches (the trailing partial batch is dropped) and
sliced per process the same way; every call of the factory starts from the top.

Resuming: the train iterator is a grain ``DatasetIterator``; ``get_state()`` is
``{"next_index": k}`` (k = global batches consumed), identical on all processes,
and ``set_state`` on a freshly built iterator continues with batch k. Save it with
orbax through ``grain.checkpoint.CheckpointSave(iterator)`` /
``grain.checkpoint.CheckpointRestore(iterator)`` (one JSON per process), or store
``get_state()`` as JSON yourself, which also restores on another process count.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import grain
import ml_collections
import numpy as np

from tokendrift_jax.data import cache as cache_lib
from tokendrift_jax.data import wrap as wrap_lib

# Fields of the ``data`` config section (see default_config for their meaning).
FIELDS = ("source", "text_field", "hub_split", "valid_docs", "tokenizer", "pad_token",
          "cache_dir", "wrap", "wrap_group_docs", "read_threads", "prefetch_batches",
          "progress")


def default_config() -> ml_collections.ConfigDict:
  """The ``data`` config section, with MDLM's openwebtext-split defaults.

  Fields:
    source: hub dataset name (read via the ``datasets`` library, offline) or local
      .jsonl / .parquet / .arrow / .txt file, directory or glob.
    text_field: JSON field / column holding the document text.
    hub_split: split of a hub dataset to read (MDLM: "train", then held out below).
    valid_docs: the last ``valid_docs`` documents (counted before wrapping) form
      the validation split; 0 = no validation split.
    tokenizer: HF tokenizer hub id (from the local HF cache only) or directory.
    pad_token: added as a special token to a tokenizer that has no pad token, before
      tokenizing, as MDLM's and DUO's ``get_tokenizer`` do ("[PAD]": the released
      checkpoints were trained on data tokenized so; a literal "[PAD]" in a document is
      then one id, 50257 for GPT-2, which is MDLM's mask id); "" = the tokenizer as is.
    cache_dir: where tokenized, wrapped blocks are cached (one directory per split).
    wrap: MDLM's wrap (must be True; see cache.prepare_splits).
    wrap_group_docs: documents per concatenation group; MDLM's 1000 (datasets.map
      batch size) drops each group's remainder; 0 = one group for the whole split.
    read_threads: grain reader threads per process.
    prefetch_batches: batches grain prefetches per process.
    progress: tqdm progress bar while tokenizing.
  """
  cfg = ml_collections.ConfigDict()
  cfg.source = "Skylion007/openwebtext"
  cfg.text_field = "text"
  cfg.hub_split = "train"
  cfg.valid_docs = 100_000
  cfg.tokenizer = "gpt2"
  cfg.pad_token = "[PAD]"
  cfg.cache_dir = "~/.cache/tokendrift_jax/data"
  cfg.wrap = True
  cfg.wrap_group_docs = wrap_lib.MDLM_GROUP_DOCS
  cfg.read_threads = 2
  cfg.prefetch_batches = 8
  cfg.progress = True
  return cfg


def shuffle_seed(seed: int) -> int:
  """Maps the run seed to grain's 32-bit shuffle seed.

  grain shuffles epoch e with ``shuffle_seed + e``; hashing the run seed first keeps
  run seeds s and s+1 from sharing permutations one epoch apart.
  """
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}")
  return int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint32)[0])


def _check_process(global_batch: int, process_index: int, process_count: int,
                   what: str) -> int:
  if global_batch < 1:
    raise ValueError(f"{what} must be >= 1, got {global_batch}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if global_batch % process_count:
    raise ValueError(f"{what} {global_batch} is not divisible by the {process_count} "
                     f"processes; pick a multiple of {process_count}")
  return global_batch // process_count


class _ReadLocalRows:
  """Global batch of block indices -> this process's rows, int32[B/P, length]."""

  def __init__(self, blocks: np.ndarray, lo: int, hi: int):
    self.blocks = blocks
    self.lo = lo
    self.hi = hi

  def __call__(self, indices: np.ndarray) -> np.ndarray:
    return np.asarray(self.blocks[indices[self.lo:self.hi]], dtype=np.int32)


def train_dataset(blocks: np.ndarray, *, global_batch: int, seed: int, process_index: int,
                  process_count: int) -> grain.MapDataset:
  """Infinite MapDataset of this process's slices of shuffled global batches.

  Args:
    blocks: int32[N, length] (memmap or array), N >= 1.
    global_batch: rows per global batch (all processes together).
    seed: run seed (see :func:`shuffle_seed`).
    process_index, process_count: this process and how many share the batch.

  Returns:
    element k = rows ``[p*B/P, (p+1)*B/P)`` of global batch k, int32[B/P, length].
  """
  per_process = _check_process(global_batch, process_index, process_count, "global batch")
  if blocks.ndim != 2 or blocks.shape[0] == 0:
    raise ValueError(f"train blocks must be a non-empty [N, length] array, got {blocks.shape}")
  if blocks.shape[0] < global_batch:
    logging.warning("train split has %d blocks, fewer than one global batch of %d: batches "
                    "repeat blocks", blocks.shape[0], global_batch)
  lo = process_index * per_process
  return (grain.MapDataset.range(blocks.shape[0])
          .shuffle(seed=shuffle_seed(seed))
          .repeat()
          .batch(global_batch, drop_remainder=True)
          .map(_ReadLocalRows(blocks, lo, lo + per_process)))


def eval_dataset(blocks: np.ndarray, *, global_batch: int, process_index: int,
                 process_count: int) -> grain.MapDataset:
  """Finite MapDataset of this process's slices of the in-order eval batches.

  Returns:
    len = N // global_batch elements, each int32[B/P, length].
  """
  per_process = _check_process(global_batch, process_index, process_count, "eval global batch")
  if blocks.ndim != 2 or blocks.shape[0] < global_batch:
    raise ValueError(f"validation split has {blocks.shape[0] if blocks.ndim else 0} blocks, "
                     f"fewer than one eval global batch of {global_batch}; raise "
                     f"data.valid_docs or lower the eval batch")
  lo = process_index * per_process
  return (grain.MapDataset.range(blocks.shape[0])
          .batch(global_batch, drop_remainder=True)
          .map(_ReadLocalRows(blocks, lo, lo + per_process)))


def _field(data_cfg: Any, name: str) -> Any:
  try:
    return getattr(data_cfg, name)
  except (AttributeError, KeyError) as e:
    raise KeyError(f"data config lacks field data.{name}; start from "
                   f"tokendrift_jax.data.default_config() (fields: {FIELDS})") from e


def make_datasets(data_cfg: Any, *, global_batch: int, seq_len: int, seed: int,
                  eval_global_batch: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, max_token_id: int | None = None
                  ) -> tuple[grain.DatasetIterator, Callable[..., Iterator[np.ndarray]] | None]:
  """Builds (or loads from the cache) the splits and returns the iterators.

  Args:
    data_cfg: the ``data`` section, fields as in :func:`default_config`.
    global_batch: train rows per step over all processes.
    seq_len: block length (model length, MDLM 1024).
    seed: run seed for the train shuffle.
    eval_global_batch: validation rows per batch over all processes (default:
      ``global_batch``).
    process_index, process_count: override ``jax.process_index() / process_count()``
      (tests simulate several processes this way).
    max_token_id: the largest id the model accepts as clean text (MDLM: below the mask
      id). Every split is checked before any batch is read, from the whole split rather
      than per batch, so all processes of a multi-host run fail together instead of one
      failing and the others waiting in a collective.

  Returns:
    train_iter: checkpointable iterator of int32[global_batch / P, seq_len].
    eval_iter_factory: ``f(num_batches=None)`` -> a fresh iterator over the first
      ``num_batches`` (default all full) validation batches, each
      int32[eval_global_batch / P, seq_len]; ``None`` when ``valid_docs == 0``. Its
      attribute ``num_batches`` is the number of full validation batches.
  """
  cfg = {name: _field(data_cfg, name) for name in FIELDS}
  if process_index is None or process_count is None:
    shard = grain.sharding.ShardByJaxProcess()
    process_index = shard.shard_index if process_index is None else process_index
    process_count = shard.shard_count if process_count is None else process_count
  eval_global_batch = global_batch if eval_global_batch is None else eval_global_batch
  _check_process(global_batch, process_index, process_count, "global batch")
  _check_process(eval_global_batch, process_index, process_count, "eval global batch")

  splits = cache_lib.prepare_splits(
      source=cfg["source"], tokenizer=cfg["tokenizer"], cache_dir=cfg["cache_dir"],
      length=seq_len, text_field=cfg["text_field"], hub_split=cfg["hub_split"],
      valid_docs=cfg["valid_docs"], wrap=cfg["wrap"],
      group_docs=cfg["wrap_group_docs"] or None, progress=cfg["progress"],
      pad_token=str(cfg["pad_token"]))
  read = grain.ReadOptions(num_threads=cfg["read_threads"],
                           prefetch_buffer_size=cfg["prefetch_batches"])
  for name, split in splits.items():
    logging.info("data split %s: %s blocks from %s", name, split.blocks.shape,
                 split.manifest["doc_range"])
    if max_token_id is not None:
      lo, hi = split.id_range()
      pad_id = split.manifest.get("pad_id")
      if lo >= 0 and pad_id is not None and hi == pad_id > max_token_id:
        raise ValueError(
            f"data split {name!r} ({split.directory}) holds the id {pad_id} of "
            f"data.pad_token={cfg['pad_token']!r} (a literal {cfg['pad_token']!r} in the "
            f"text, tokenized as MDLM/DUO did), but the model's clean ids end at "
            f"{max_token_id} (for MDLM that id is the mask); set data.pad_token='' to "
            f"tokenize it as text, or clean the corpus")
      if lo < 0 or hi > max_token_id:
        raise ValueError(
            f"data split {name!r} ({split.directory}) holds token ids in [{lo}, {hi}] but the "
            f"model accepts clean ids in [0, {max_token_id}]: data.tokenizer="
            f"{cfg['tokenizer']!r} does not match the backbone's vocabulary")

  train = train_dataset(splits[cache_lib.TRAIN].blocks, global_batch=global_batch, seed=seed,
                        process_index=process_index, process_count=process_count)
  train_iter = iter(train.to_iter_dataset(read))

  if cache_lib.VALIDATION not in splits:
    return train_iter, None
  valid = eval_dataset(splits[cache_lib.VALIDATION].blocks, global_batch=eval_global_batch,
                       process_index=process_index, process_count=process_count)

  def eval_iter_factory(num_batches: int | None = None) -> Iterator[np.ndarray]:
    ds = valid
    if num_batches is not None:
      if not 1 <= num_batches <= len(valid):
        raise ValueError(f"num_batches must be in [1, {len(valid)}] (full validation "
                         f"batches), got {num_batches}")
      ds = valid[:num_batches]
    return iter(ds.to_iter_dataset(read))

  eval_iter_factory.num_batches = len(valid)
  return train_iter, eval_iter_factory
