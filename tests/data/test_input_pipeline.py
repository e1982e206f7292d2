"""Data pipeline: MDLM wrap semantics, sources, disk cache, grain iterators, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import transformers

from tests.fixtures_tokenizer import build_tiny_tokenizer
from tokendrift_jax.data import cache as cache_lib
from tokendrift_jax.data import input_pipeline
from tokendrift_jax.data import sources as sources_lib
from tokendrift_jax.data import tokenizer as tokenizer_lib
from tokendrift_jax.data import wrap as wrap_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
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


def random_docs(rng: np.random.Generator, n: int, vocab: int = 50) -> list[list[int]]:
  # Lengths 0..30 so that documents are shorter, equal to and longer than a piece.
  return [rng.integers(0, vocab, size=rng.integers(0, 31)).tolist() for _ in range(n)]


def test_wrap_hand_worked_example():
  # docs + EOS: 1 2 3 E 4 5 E -> pieces of 3: [1 2 3] [E 4 5], remainder [E] dropped.
  out = wrap_lib.wrap_documents([[1, 2, 3], [4, 5]], length=5, bos=90, eos=99)
  np.testing.assert_array_equal(out, [[90, 1, 2, 3, 99], [90, 99, 4, 5, 99]])
  assert out.dtype == np.int32


def test_wrap_too_short_group_gives_no_block():
  out = wrap_lib.wrap_documents([[1], [2]], length=8, bos=0, eos=9)  # 4 tokens < 6
  assert out.shape == (0, 8) and out.dtype == np.int32


@pytest.mark.parametrize("length", [3, 8, 17])
def test_wrap_documents_matches_reference(length):
  rng = np.random.default_rng(length)
  docs = random_docs(rng, 40)
  docs[3] = []  # an empty document still contributes its EOS
  got = wrap_lib.wrap_documents(docs, length=length, bos=50, eos=51)
  np.testing.assert_array_equal(got, ref_wrap(docs, length, 50, 51, None))


@pytest.mark.parametrize("group_docs,flush_docs", [(1, 1), (4, 1000), (7, 1000), (None, 1),
                                                    (None, 3), (None, 1000)])
def test_iter_wrapped_blocks_matches_reference(group_docs, flush_docs):
  rng = np.random.default_rng(0)
  docs = random_docs(rng, 37)
  parts = list(wrap_lib.iter_wrapped_blocks(iter(docs), length=10, bos=50, eos=51,
                                            group_docs=group_docs, flush_docs=flush_docs))
  got = np.concatenate(parts)
  np.testing.assert_array_equal(got, ref_wrap(docs, 10, 50, 51, group_docs))


def test_group_remainder_dropped_per_group():
  # 4 documents of 3 tokens (EOS included), pieces of 4. Groups of 2 documents:
  # 6 tokens -> 1 block each, "4 E" and "8 E" dropped. One group: 12 tokens -> 3 blocks.
  docs = [[1, 2], [3, 4], [5, 6], [7, 8]]
  per_group = np.concatenate(list(wrap_lib.iter_wrapped_blocks(
      docs, length=6, bos=0, eos=9, group_docs=2)))
  np.testing.assert_array_equal(per_group, [[0, 1, 2, 9, 3, 9], [0, 5, 6, 9, 7, 9]])
  whole = wrap_lib.wrap_documents(docs, length=6, bos=0, eos=9)
  np.testing.assert_array_equal(whole, [[0, 1, 2, 9, 3, 9], [0, 4, 9, 5, 6, 9],
                                        [0, 9, 7, 8, 9, 9]])


# ---------------------------------------------------------------------------
# Corpora and tokenizer.
WORDS = ("the quick brown fox jumps over lazy dog river stone light paper garden music "
         "window silver orange planet").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=rng.integers(1, 25))) + "." for _ in range(n)]


def write_jsonl(path, texts, field="text"):
  with open(path, "w", encoding="utf-8") as f:
    for t in texts:
      f.write(json.dumps({field: t, "id": len(t)}) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tiny", vocab_size=300)


@pytest.fixture(scope="module")
def tok(tok_dir):
  return transformers.AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)


def tokens_of(tok, texts):
  # Per-document encode: a different code path from the cache's batched call.
  return [tok.encode(t, add_special_tokens=False) for t in texts]


def test_tiny_tokenizer_is_gpt2_like(tok):
  assert isinstance(tok, transformers.GPT2TokenizerFast)
  assert len(tok) == 300
  assert tok.bos_token_id == tok.eos_token_id == 299
  ids = tok.encode("the quick brown fox.", add_special_tokens=False)
  assert tok.decode(ids) == "the quick brown fox."
  assert tokenizer_lib.special_ids(tok) == tokenizer_lib.SpecialIds(bos=299, eos=299)


def test_tokenizer_hub_name_not_cached_is_clear_error():
  with pytest.raises(FileNotFoundError, match=r"data\.tokenizer.*not in the local Hugging Face"):
    tokenizer_lib.load_tokenizer("no-such-org/no-such-tokenizer-xyz")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tokenizer_lib.load_tokenizer("/nonexistent/tokenizer/dir")


def test_cache_blocks_equal_reference(tmp_path, tok_dir, tok):
  texts = make_texts(23)
  src = write_jsonl(tmp_path / "corpus.jsonl", texts)
  kw = dict(source=src, tokenizer=tok_dir, cache_dir=str(tmp_path / "cache"), length=16,
            valid_docs=5, group_docs=4, progress=False)
  splits = cache_lib.prepare_splits(**kw)
  docs = tokens_of(tok, texts)
  np.testing.assert_array_equal(splits["train"].blocks, ref_wrap(docs[:18], 16, 299, 299, 4))
  np.testing.assert_array_equal(splits["validation"].blocks,
                                ref_wrap(docs[18:], 16, 299, 299, 4))
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
  np.testing.assert_array_equal(other["train"].blocks, ref_wrap(docs[:18], 16, 299, 299, None))
  write_jsonl(tmp_path / "corpus.jsonl", texts[:-1] + ["changed text."])
  changed = cache_lib.prepare_splits(**kw)
  assert changed["validation"].directory != splits["validation"].directory
  leftovers = [n for n in os.listdir(tmp_path / "cache") if n.startswith(".")]
  assert not leftovers


# ---------------------------------------------------------------------------
# Sources.
def test_txt_dir_and_glob_sources(tmp_path):
  (tmp_path / "d" / "sub").mkdir(parents=True)
  (tmp_path / "d" / "b.txt").write_text("line one\n\n  \nline two\r\nline three\n")
  write_jsonl(tmp_path / "d" / "a.jsonl", ["doc a0", "doc\na1"])
  write_jsonl(tmp_path / "d" / "sub" / "c.jsonl", ["doc c0"])
  (tmp_path / "d" / "ignored.md").write_text("not data")
  src = sources_lib.open_source(str(tmp_path / "d"))
  want = ["doc a0", "doc\na1", "line one", "line two", "line three", "doc c0"]
  assert src.num_docs() == 6
  assert list(src.iter_texts(0, 6)) == want
  assert list(src.iter_texts(1, 4)) == want[1:4]
  assert list(src.iter_texts(4, 6)) == want[4:]
  globbed = sources_lib.open_source(str(tmp_path / "d" / "**" / "*.jsonl"))
  assert list(globbed.iter_texts(0, globbed.num_docs())) == ["doc a0", "doc\na1", "doc c0"]


def test_jsonl_custom_field_and_missing_field(tmp_path):
  path = write_jsonl(tmp_path / "x.jsonl", ["alpha", "beta"], field="body")
  src = sources_lib.open_source(path, text_field="body")
  assert list(src.iter_texts(0, 2)) == ["alpha", "beta"]
  with pytest.raises(KeyError, match=r"x\.jsonl:1: no field 'text'.*data\.text_field"):
    list(sources_lib.open_source(path).iter_texts(0, 2))


def test_arrow_and_parquet_sources(tmp_path):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.ipc  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  table = pa.table({"text": ["p0", "p1", "p2"], "n": [0, 1, 2]})
  pq.write_table(table, tmp_path / "a.parquet", row_group_size=2)
  with pa.OSFile(str(tmp_path / "b.arrow"), "wb") as sink:
    with pyarrow.ipc.new_stream(sink, table.schema) as w:  # datasets' save_to_disk format
      w.write_table(table, max_chunksize=2)
  src = sources_lib.open_source(str(tmp_path / "*"))
  assert src.num_docs() == 6
  assert list(src.iter_texts(1, 5)) == ["p1", "p2", "p0", "p1"]


def test_missing_path_is_named(tmp_path):
  missing = str(tmp_path / "nope" / "corpus.jsonl")
  with pytest.raises(sources_lib.SourceNotFoundError, match="does not exist"):
    sources_lib.open_source(missing)
  with pytest.raises(sources_lib.SourceNotFoundError, match="glob matches no"):
    sources_lib.open_source(str(tmp_path / "*.jsonl"))


def test_hub_name_without_hub_is_clear_error():
  with pytest.raises(sources_lib.SourceNotFoundError,
                     match=r"data\.source='no-such-org/no-such-dataset'.*local"):
    sources_lib.open_source("no-such-org/no-such-dataset")


# ---------------------------------------------------------------------------
# Errors leave nothing behind.
def cache_entries(cache_dir) -> list[str]:
  return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


def test_empty_sources_raise_and_leave_nothing(tmp_path, tok_dir):
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


# ---------------------------------------------------------------------------
# grain pipeline.
@pytest.fixture(scope="module")
def pipeline_cfg(tmp_path_factory, tok_dir):
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
  assert all(b.shape == (4, 16) and b.dtype == np.int32 for b in batches)
  rows = np.concatenate(batches)
  # Each epoch (n consecutive rows of the stream) is a permutation of all blocks.
  def as_set(a):
    return sorted(map(bytes, a.astype(np.int32)))
  for e in range(3):
    assert as_set(rows[e * n:(e + 1) * n]) == as_set(blocks)
  assert not np.array_equal(rows[:n], rows[n:2 * n])  # reshuffled per epoch
  same, _ = input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=3,
                                         process_index=0, process_count=1)
  np.testing.assert_array_equal(np.concatenate(take(same, 5)), rows[:20])
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
    assert a.shape == (3, 16)
    np.testing.assert_array_equal(np.concatenate([a, b]), next(one))
  whole, half0, half1 = list(ev1()), list(ev0()), list(evp1())
  assert len(whole) == len(half0) == len(half1) >= 2
  for w, x0, x1 in zip(whole, half0, half1):
    np.testing.assert_array_equal(np.concatenate([x0, x1]), w)
  with pytest.raises(ValueError, match="not divisible by the 4 processes"):
    input_pipeline.make_datasets(pipeline_cfg, process_index=0, process_count=4, **kw)


def test_eval_is_in_order_and_restartable(pipeline_cfg):
  valid = np.asarray(train_blocks(pipeline_cfg, 16)["validation"].blocks)
  _, factory = input_pipeline.make_datasets(pipeline_cfg, global_batch=4, seq_len=16, seed=0,
                                            eval_global_batch=2, process_index=0,
                                            process_count=1)
  got = np.concatenate(list(factory()))
  full = (valid.shape[0] // 2) * 2
  np.testing.assert_array_equal(got, valid[:full])
  np.testing.assert_array_equal(np.concatenate(list(factory(num_batches=2))), valid[:4])
  np.testing.assert_array_equal(np.concatenate(list(factory())), got)


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
  for i in range(k, 9):
    np.testing.assert_array_equal(next(fresh), expected[i])

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
  np.testing.assert_array_equal(next(fresh2), expected[3])


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
