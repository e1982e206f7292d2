"""train/prompt: the keep mask of a prefix or of per-row prompt lengths, the padding masks
(pad_id), the config checks, and the prompt-length files of data/tokens.py (one-line
errors naming the key or path)."""

from __future__ import annotations

import os

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.data import tokens
from tokendrift_jax.train import prompt as prompt_lib

L = 6
LLADA = make_process("llada", 12, mask_id=10)


def test_split_prompt_prefix_and_data_columns():
  rng = np.random.default_rng(0)
  x0 = rng.integers(0, 10, (4, L)).astype(np.int32)
  x, keep = prompt_lib.split_prompt(prompt_lib.PromptSpec(seq_len=L), jnp.asarray(x0))
  chex.assert_trees_all_equal(x, x0)
  assert keep is None
  x, keep = prompt_lib.split_prompt(prompt_lib.PromptSpec("prefix", 2, L), jnp.asarray(x0))
  chex.assert_trees_all_equal((x, keep), (x0, np.tile(np.arange(L) < 2, (4, 1))))
  plen = np.array([0, 1, 3, L - 1], np.int32)
  batch = np.concatenate([x0, plen[:, None]], axis=1)
  x, keep = prompt_lib.split_prompt(prompt_lib.PromptSpec("data", 0, L), jnp.asarray(batch))
  chex.assert_trees_all_equal((x, keep), (x0, np.arange(L)[None, :] < plen[:, None]))
  with pytest.raises(ValueError, match=r"micro-batch \(4, 6\) must have 6 tokens \+ 1 "
                                       r"prompt-length column per row"):
    prompt_lib.split_prompt(prompt_lib.PromptSpec("data", 0, L), jnp.asarray(x0))


def test_padding_masks():
  """real = x0 != pad_id; the kept set is prompt ∪ pads (hand-written rows: a left-padded
  prompt of 2 tokens and a right-padded row without pads in its prompt)."""
  x0 = jnp.array([[9, 9, 1, 2, 3, 4], [1, 2, 3, 4, 9, 9]], jnp.int32)
  spec = prompt_lib.PromptSpec("data", 0, L, pad_id=9)
  real = prompt_lib.real_positions(spec, x0)
  chex.assert_trees_all_equal(real, np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool))
  keep = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], bool)   # P = 4 (pads + 2), 2
  chex.assert_trees_all_equal(prompt_lib.kept_positions(keep, real),
                              np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1]], bool))
  chex.assert_trees_all_equal(prompt_lib.kept_positions(None, real), ~np.asarray(real))
  assert prompt_lib.kept_positions(keep, None) is keep
  assert prompt_lib.real_positions(prompt_lib.PromptSpec(seq_len=L), x0) is None
  with pytest.raises(ValueError, match="pad_id must be None or an id >= 0, got -2"):
    prompt_lib.PromptSpec(pad_id=-2)


def _config(mode="none", length=0, **over):
  c = base.get_config()
  c.prompt.mode, c.prompt.length = mode, length
  for key, value in over.items():
    section, field = key.split("__")
    c[section][field] = value
  return c


def test_from_config():
  assert prompt_lib.from_config(_config(), L, LLADA) == prompt_lib.PromptSpec(seq_len=L)
  assert (prompt_lib.from_config(_config("prefix", 5), L, LLADA)
          == prompt_lib.PromptSpec("prefix", 5, L))
  spec = prompt_lib.from_config(_config("data", data__kind="tokens"), L, LLADA)
  assert spec.extra_columns == 1
  # A config written before the prompt group existed has no prompt.
  c = _config()
  del c["prompt"]
  assert not prompt_lib.from_config(c, L, LLADA).active
  assert prompt_lib.from_config(c, L, LLADA).pad_id is None
  assert prompt_lib.from_config(_config(prompt__pad_id=11), L, LLADA).pad_id == 11


@pytest.mark.parametrize("config,match", [
    (_config("suffix"), r"config.prompt.mode must be one of \('none', 'prefix', 'data'\)"),
    (_config("prefix", 0), r"config.prompt.length=0 must be in \[1, 5\]"),
    (_config("prefix", L), r"config.prompt.length=6 must be in \[1, 5\]"),
    (_config("none", 3), r"config.prompt.length=3 is read only with config.prompt.mode="),
    (_config("data"), r"config.prompt.mode='data' .* needs config.data.kind='tokens', got "
                      r"'text'"),
    (_config(prompt__pad_id=12), r"config.prompt.pad_id must be -1 \(no padding\) or an id "
                                 r"in \[0, 12\), got 12"),
    (_config(prompt__pad_id=10), r"config.prompt.pad_id=10 is the mask id of "
                                 r"config.diffusion.process='llada'"),
])
def test_from_config_errors(config, match):
  with pytest.raises(ValueError, match=match):
    prompt_lib.from_config(config, L, LLADA)


@pytest.mark.parametrize("process", ["mdlm", "duo"])
def test_processes_without_keep_are_refused(process):
  proc = make_process(process, 12)
  with pytest.raises(ValueError, match=rf"config.diffusion.process='{process}' has none "
                                       r"\(use 'llada'\)"):
    prompt_lib.from_config(_config("prefix", 2), L, proc)


def test_prompt_lengths_file(tmp_path):
  rows = np.arange(5 * L, dtype=np.int32).reshape(5, L) % 10
  path = str(tmp_path / "sft.npy")
  np.save(path, rows)
  assert tokens.prompt_lengths_path(path) == str(tmp_path / "sft.prompt_lengths.npy")
  with pytest.raises(ValueError, match=r"sft.prompt_lengths.npy.*: no such file"):
    tokens.load_prompt_lengths(path, 5, L)
  side = tokens.prompt_lengths_path(path)
  for bad, match in ((np.zeros(4, np.int32), r"expected an int array of shape \(5,\)"),
                     (np.zeros(5, np.float32), r"must hold integer .*got dtype float32"),
                     (np.array([0, 1, 2, 3, L]), r"values span \[0, 6\] but must lie in "
                                                 r"\[0, 5\]"),
                     (np.array([-1, 1, 2, 3, 4]), r"values span \[-1, 4\]")):
    np.save(side, bad)
    with pytest.raises(ValueError, match=match):
      tokens.load_prompt_lengths(path, 5, L)
  plen = np.array([0, 5, 2, 1, 3], np.int64)
  np.save(side, plen)
  packed = tokens.PromptedRows(np.load(path, mmap_mode="r"), tokens.load_prompt_lengths(
      path, 5, L))
  assert packed.shape == (5, L + 1) and len(packed) == 5
  got = packed[np.array([3, 0])]
  chex.assert_trees_all_equal(got, np.concatenate([rows[[3, 0]], plen[[3, 0], None]],
                                                  axis=1).astype(np.int32))


def test_token_datasets_carry_the_prompt_column(tmp_path):
  """The train batches of data.kind='tokens' with prompt lengths: the rows of one global
  batch with their own lengths (shuffled together); validation stays the tokens."""
  rng = np.random.default_rng(1)
  rows = rng.integers(0, 10, (16, L)).astype(np.int32)
  rows[:, 0] = np.arange(16)  # identifies each row
  path = str(tmp_path / "t.npy")
  np.save(path, rows)
  plen = rng.integers(0, L, 16).astype(np.int32)
  np.save(tokens.prompt_lengths_path(path), plen)
  cfg = base.get_config().data
  cfg.train_tokens, cfg.valid_tokens = path, path
  process = make_process("llada", 32, mask_id=30)  # row ids 0..15 are clean tokens
  train, valid = tokens.make_datasets(cfg, global_batch=8, eval_global_batch=8, seq_len=L,
                                      seed=0, process=process, prompt_lengths=True)
  batch = np.asarray(next(train))
  chex.assert_shape(batch, (8, L + 1))
  chex.assert_trees_all_equal(batch, np.concatenate(
      [rows[batch[:, 0]], plen[batch[:, 0], None]], axis=1))
  chex.assert_shape(np.asarray(next(valid())), (8, L))
  os.remove(tokens.prompt_lengths_path(path))
  with pytest.raises(ValueError, match="no such file"):
    tokens.make_datasets(cfg, global_batch=8, eval_global_batch=8, seq_len=L, seed=0,
                         process=process, prompt_lengths=True)
