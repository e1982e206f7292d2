"""data/cache: cached blocks equal the reference wrap of per-document encodes; errors and
interrupted builds leave nothing behind; the CLI's error exit."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import chex
import numpy as np
import pytest

from tests.references.mdlm_wrap import ref_wrap
from tokendrift_jax.data import cache as cache_lib
from tokendrift_jax.data import sources as sources_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tokens_of(tok, texts):
  # Per-document encode: a different code path from the cache's batched call.
  return [tok.encode(t, add_special_tokens=False) for t in texts]


def test_cache_blocks_equal_reference(tmp_path, tok_dir, tok, make_texts, write_jsonl):
  texts = make_texts(23)
  src = write_jsonl(tmp_path / "corpus.jsonl", texts)
  kw = dict(source=src, tokenizer=tok_dir, cache_dir=str(tmp_path / "cache"), length=16,
            valid_docs=5, group_docs=4, progress=False)
  splits = cache_lib.prepare_splits(**kw)
  docs = tokens_of(tok, texts)
  chex.assert_trees_all_equal(
      {"train": splits["train"].blocks, "validation": splits["validation"].blocks},
      {"train": ref_wrap(docs[:18], 16, 299, 299, 4),
       "validation": ref_wrap(docs[18:], 16, 299, 299, 4)})
  man = splits["train"].manifest
  assert man["doc_range"] == [0, 18] and splits["validation"].manifest["doc_range"] == [18, 23]
  assert man["counts"]["tokens"] == sum(len(d) + 1 for d in docs[:18])
  ref = ref_wrap(docs[:18], 16, 299, 299, 4)
  assert (man["counts"]["min_id"], man["counts"]["max_id"]) == (ref.min(), ref.max())
  # A cache written before the id range was recorded: scanned instead.
  old = dataclasses.replace(splits["train"], manifest={**man, "counts": {"blocks": 1}})
  assert old.id_range() == (ref.min(), ref.max())
  assert isinstance(splits["train"].blocks, np.memmap)

  # Second call: same directories, nothing rebuilt.
  mtime = os.stat(os.path.join(splits["train"].directory, "blocks.npy")).st_mtime_ns
  again = cache_lib.prepare_splits(**kw)
  assert again["train"].directory == splits["train"].directory
  assert os.stat(os.path.join(again["train"].directory, "blocks.npy")).st_mtime_ns == mtime

  # Any change of input gives a new cache entry.
  other = cache_lib.prepare_splits(**{**kw, "group_docs": None})
  assert other["train"].directory != splits["train"].directory
  chex.assert_trees_all_equal(other["train"].blocks, ref_wrap(docs[:18], 16, 299, 299, None))
  write_jsonl(tmp_path / "corpus.jsonl", texts[:-1] + ["changed text."])
  changed = cache_lib.prepare_splits(**kw)
  assert changed["validation"].directory != splits["validation"].directory
  leftovers = [n for n in os.listdir(tmp_path / "cache") if n.startswith(".")]
  assert not leftovers


def cache_entries(cache_dir) -> list[str]:
  return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


def test_empty_sources_raise_and_leave_nothing(tmp_path, tok_dir, make_texts, write_jsonl):
  cache_dir = str(tmp_path / "cache")
  blank = tmp_path / "blank.jsonl"
  blank.write_text("\n\n")
  kw = dict(tokenizer=tok_dir, cache_dir=cache_dir, length=16, progress=False)
  with pytest.raises(ValueError, match=r"blank\.jsonl holds 0 documents"):
    cache_lib.prepare_splits(source=str(blank), valid_docs=0, **kw)
  few = write_jsonl(tmp_path / "few.jsonl", make_texts(3))
  with pytest.raises(ValueError, match=r"few\.jsonl holds 3 documents.*data\.valid_docs=3"):
    cache_lib.prepare_splits(source=few, valid_docs=3, **kw)
  with pytest.raises(ValueError, match=r"split 'train' of data source .*few\.jsonl: 3 documents "
                                       r"with \d+ tokens .* give 0 full blocks"):
    cache_lib.prepare_splits(source=few, valid_docs=0, **{**kw, "length": 4000})
  assert cache_entries(cache_dir) == []


class _InterruptedSource(sources_lib.DocumentSource):
  """Raises KeyboardInterrupt after a few documents, like Ctrl-C mid-tokenization."""

  description = "interrupted"

  def num_docs(self):
    return 3000

  def iter_texts(self, start, stop):
    for i in range(start, stop):
      if i == 2500:
        raise KeyboardInterrupt
      yield "the quick brown fox jumps over the lazy dog"

  def fingerprint(self):
    return {"kind": "test"}


def test_interrupted_build_leaves_nothing(tmp_path, tok):
  cache_dir = str(tmp_path / "cache")
  with pytest.raises(KeyboardInterrupt):
    cache_lib.build_split(_InterruptedSource(), "train", tokenizer=tok, tokenizer_name="tiny",
                          cache_dir=cache_dir, length=16, valid_docs=0, group_docs=1000,
                          progress=False)
  assert cache_entries(cache_dir) == []


def test_cli_unreachable_hub_exits_nonzero(tmp_path, tok_dir):
  # Empty sources go through the same error exit; their message and the clean cache
  # are checked in-process above (a second subprocess would pay the transformers import).
  cache_dir = tmp_path / "cache"
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO_ROOT}
  proc = subprocess.run(
      [sys.executable, "-m", "tokendrift_jax.data.cache", "--source", "no-such-org/no-such-ds",
       "--tokenizer", tok_dir, "--cache_dir", str(cache_dir), "--length", "16"],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode == 1, proc.stderr
  assert "data.source='no-such-org/no-such-ds'" in proc.stderr
  assert "local files" in proc.stderr
  assert cache_entries(cache_dir) == []


@pytest.mark.parametrize("case", ["no_field", "not_utf8"])
def test_issue25_cache_errors_name_the_flag_and_the_file(tmp_path, capsys, case,
                                                         build_tiny_tokenizer):
  """Before: a missing text field was reported as "set data.text_field" (the training
  config's field, not this command's flag); a non-UTF-8 corpus named no file."""
  tok = build_tiny_tokenizer(tmp_path / "tok", vocab_size=300)
  corpus = tmp_path / "corpus.jsonl"
  if case == "no_field":
    corpus.write_text('{"body": "hello world"}\n' * 4)
    needle = f"{corpus}:1: no field 'text' in the JSON object; pass --text_field"
  else:
    corpus.write_bytes(b'{"text": "caf\xe9"}\n' * 4)
    needle = f"{corpus}: not UTF-8 text"
  rc = cache_lib.main(["--source", str(corpus), "--tokenizer", tok, "--cache_dir",
                       str(tmp_path / "cache"), "--length", "8", "--valid_docs", "1"])
  err = capsys.readouterr().err.strip()
  errors = [ln for ln in err.splitlines() if "error" in ln.lower()]   # beside tqdm's bar
  assert rc == 1 and len(errors) == 1 and errors[0].startswith("error: "), err
  assert needle in errors[0], err
