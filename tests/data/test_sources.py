"""data/sources: text, JSONL, Arrow and Parquet sources; missing paths and hub names."""

from __future__ import annotations

import pytest

from tokendrift_jax.data import sources as sources_lib


def test_txt_dir_and_glob_sources(tmp_path, write_jsonl):
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


def test_jsonl_custom_field_and_missing_field(tmp_path, write_jsonl):
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
