"""data/input_pipeline: grain iterators (shapes, determinism, epochs, process slices,
in-order restartable eval, resume) and config errors."""

from __future__ import annotations

import json

import chex
import numpy as np
import pytest

from tokendrift_jax.data import cache as cache_lib
from tokendrift_jax.data import input_pipeline


@pytest.fixture(scope="module")
def pipeline_cfg(tmp_path_factory, tok_dir, make_texts, write_jsonl):
  root = tmp_path_factory.mktemp("pipe")
  cfg = input_pipeline.default_config()
  cfg.source = write_jsonl(root / "corpus.jsonl", make_texts(60, seed=1))
  cfg.tokenizer = tok_dir
  cfg.cache_dir = str(root / "cache")
  cfg.valid_docs = 12
  cfg.progress = False
  return cfg


def take(it, n):
  return [next(it) for _ in range(n)]


def train_blocks(cfg, length):
  return cache_lib.prepare_splits(
      source=cfg.source, tokenizer=cfg.tokenizer, cache_dir=cfg.cache_dir, length=length,
      valid_docs=cfg.valid_docs, group_docs=cfg.wrap_group_docs or None, progress=False)


def test_train_batches_shape_determinism_and_epochs(pipeline_cfg):
  blocks = np.asarray(train_blocks(pipeline_cfg, 16)["train"].blocks)
  n = blocks.shape[0]
  it, _ = input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=3,
                                       process_index=0, process_count=1)
  batches = take(it, 3 * (n // 4) + 3)
  chex.assert_shape(batches, (4, 16))
  chex.assert_type(batches, np.int32)
  rows = np.concatenate(batches)
  # Each epoch (n consecutive rows of the stream) is a permutation of all blocks.
  def as_set(a):
    return sorted(map(bytes, a.astype(np.int32)))
  for e in range(3):
    assert as_set(rows[e * n:(e + 1) * n]) == as_set(blocks)
  # Inequalities ("must differ") stay np.array_equal: chex has no "arrays differ" assert.
  assert not np.array_equal(rows[:n], rows[n:2 * n])  # reshuffled per epoch
  same, _ = input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=3,
                                         process_index=0, process_count=1)
  chex.assert_trees_all_equal(np.concatenate(take(same, 5)), rows[:20])
  other, _ = input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=4,
                                          process_index=0, process_count=1)
  assert not np.array_equal(np.concatenate(take(other, 5)), rows[:20])


def test_process_slices_tile_the_global_batch(pipeline_cfg):
  kw = dict(global_batch=6, seq_len=16, seed=0, eval_global_batch=4)
  one, ev1 = input_pipeline.make_datasets(pipeline_cfg, process_index=0, process_count=1, **kw)
  p0, ev0 = input_pipeline.make_datasets(pipeline_cfg, process_index=0, process_count=2, **kw)
  p1, evp1 = input_pipeline.make_datasets(pipeline_cfg, process_index=1, process_count=2, **kw)
  for _ in range(7):
    a, b = next(p0), next(p1)
    chex.assert_shape([a, b], (3, 16))
    chex.assert_trees_all_equal(np.concatenate([a, b]), next(one))
  whole, half0, half1 = list(ev1()), list(ev0()), list(evp1())
  assert len(whole) == len(half0) == len(half1) >= 2
  for w, x0, x1 in zip(whole, half0, half1):
    chex.assert_trees_all_equal(np.concatenate([x0, x1]), w)
  with pytest.raises(ValueError, match="not divisible by the 4 processes"):
    input_pipeline.make_datasets(pipeline_cfg, process_index=0, process_count=4, **kw)


def test_eval_is_in_order_and_restartable(pipeline_cfg):
  valid = np.asarray(train_blocks(pipeline_cfg, 16)["validation"].blocks)
  _, factory = input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=0,
                                            eval_global_batch=2, process_index=0,
                                            process_count=1)
  got = np.concatenate(list(factory()))
  full = (valid.shape[0] // 2) * 2
  chex.assert_trees_all_equal(got, valid[:full])
  chex.assert_trees_all_equal(np.concatenate(list(factory(num_batches=2))), valid[:4])
  chex.assert_trees_all_equal(np.concatenate(list(factory())), got)


def test_resume_from_state(pipeline_cfg, tmp_path):
  kw = dict(global_batch=4, seq_len=16, seed=7, process_index=0, process_count=1)
  ref, _ = input_pipeline.make_datasets(pipeline_cfg, **kw)
  expected = take(ref, 9)
  k = 5
  it, _ = input_pipeline.make_datasets(pipeline_cfg, **kw)
  take(it, k)
  state = json.loads(json.dumps(it.get_state()))  # must survive a JSON round trip
  fresh, _ = input_pipeline.make_datasets(pipeline_cfg, **kw)
  fresh.set_state(state)
  chex.assert_trees_all_equal([next(fresh) for _ in range(k, 9)], list(expected[k:9]))

  # Through grain's orbax handler, as the trainer saves it.
  import grain  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel
  it2, _ = input_pipeline.make_datasets(pipeline_cfg, **kw)
  take(it2, 3)
  handler = grain.checkpoint.CheckpointHandler()
  ckpt = epath.Path(tmp_path / "ckpt")
  ckpt.mkdir()
  handler.save(ckpt, args=grain.checkpoint.CheckpointSave(it2))
  fresh2, _ = input_pipeline.make_datasets(pipeline_cfg, **kw)
  handler.restore(ckpt, args=grain.checkpoint.CheckpointRestore(fresh2))
  chex.assert_trees_all_equal(next(fresh2), expected[3])


def test_ids_beyond_the_model_are_refused(pipeline_cfg):
  with pytest.raises(ValueError, match=r"ids in \[\d+, 299\] but the model accepts clean ids "
                                       r"in \[0, 200\]: data.tokenizer="):
    input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=0,
                                 process_index=0, process_count=1, max_token_id=200)
  input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=0,
                               process_index=0, process_count=1, max_token_id=299)


def test_missing_config_field_is_named(pipeline_cfg):
  cfg = {k: pipeline_cfg[k] for k in pipeline_cfg if k != "valid_docs"}
  import ml_collections  # pylint: disable=import-outside-toplevel
  with pytest.raises(KeyError, match=r"data\.valid_docs"):
    input_pipeline.make_datasets(ml_collections.ConfigDict(cfg), global_batch=4, seq_len=16,
                                 seed=0, process_index=0, process_count=1)
