"""Text documents from local files or a Hugging Face hub dataset, in a fixed order.

``data.source`` is resolved as follows:

* an existing file, directory or a glob pattern (``*``, ``?``, ``[``) -> local files;
  a directory is searched recursively and a glob may use ``**``; files are read in
  sorted path order. Supported formats, by extension:

  - ``.jsonl``: one JSON object per line, text under ``data.text_field`` (default
    ``"text"``); blank lines are skipped.
  - ``.txt``: one document per line (line break stripped; blank lines skipped).
    Documents that contain line breaks, like OpenWebText's, need ``.jsonl``,
    ``.parquet`` or ``.arrow``.
  - ``.parquet`` and ``.arrow`` (Arrow IPC file or stream, as written by
    ``datasets.Dataset.save_to_disk``): column ``data.text_field``; needs pyarrow.

* a value that looks like a path (absolute, ``./``, ``~``, or a supported
  extension) but does not exist -> :class:`SourceNotFoundError` naming it;
* anything else is a hub dataset name (default ``Skylion007/openwebtext``), read
  with the ``datasets`` library when it is installed, offline unless the caller
  set ``HF_HUB_OFFLINE=0``; otherwise :class:`SourceNotFoundError` explaining how
  to pass local files.

Documents are numbered 0..num_docs-1 in this order; MDLM's validation split is
the last 100k of them (see ``input_pipeline``).
"""

from __future__ import annotations

import abc
import glob
import json
import os
from typing import Any, Iterator

SOURCE_FIELD = "data.source"
SUPPORTED_EXTENSIONS = (".jsonl", ".txt", ".parquet", ".arrow")
_HUB_READ_BATCH = 1000


class SourceNotFoundError(FileNotFoundError):
  """The configured source is neither readable local files nor a reachable hub dataset."""


class DocumentSource(abc.ABC):
  """An ordered, re-readable collection of text documents."""

  description: str

  @abc.abstractmethod
  def num_docs(self) -> int:
    """Number of documents."""

  @abc.abstractmethod
  def iter_texts(self, start: int, stop: int) -> Iterator[str]:
    """Texts of documents ``start`` .. ``stop - 1``, in order."""

  @abc.abstractmethod
  def fingerprint(self) -> dict[str, Any]:
    """JSON-able identity of the content (changes when the data change)."""


def _require_pyarrow(path: str):
  try:
    import pyarrow  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        f"reading {path!r} needs pyarrow, which is not installed; install pyarrow or "
        f"convert the file to .jsonl") from e
  return pyarrow


def _arrow_batches(path: str):
  """Record batches of an Arrow IPC file, or of an IPC stream (datasets' format)."""
  pa = _require_pyarrow(path)
  import pyarrow.ipc  # pylint: disable=import-outside-toplevel
  source = pa.memory_map(path, "r")
  try:
    reader = pyarrow.ipc.open_file(source)
  except pa.ArrowInvalid:
    reader = None
  if reader is not None:
    for i in range(reader.num_record_batches):
      yield reader.get_batch(i)
  else:
    source.seek(0)
    yield from pyarrow.ipc.open_stream(source)


def _check_column(batch, path: str, field: str) -> None:
  if field not in batch.schema.names:
    raise KeyError(f"{path}: no column {field!r} (columns: {batch.schema.names}); "
                   f"set data.text_field")


def _texts_of_column(values: list[Any], path: str, field: str, first: int) -> Iterator[str]:
  for i, v in enumerate(values):
    if not isinstance(v, str):
      raise ValueError(f"{path}: row {first + i} column {field!r} is {type(v).__name__}, not text")
    yield v


def _not_utf8(path: str, e: UnicodeDecodeError) -> ValueError:
  return ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a line); "
                    f"corpus files are read as UTF-8")


def _read_file(path: str, field: str, skip: int = 0) -> Iterator[str]:
  """The documents of one file after the first ``skip``, in order (a file that is not
  UTF-8 is a ValueError naming it)."""
  try:
    yield from _read_file_unchecked(path, field, skip)
  except UnicodeDecodeError as e:
    raise _not_utf8(path, e) from e


def _read_file_unchecked(path: str, field: str, skip: int = 0) -> Iterator[str]:
  ext = os.path.splitext(path)[1]
  if ext == ".jsonl":
    with open(path, encoding="utf-8") as f:
      seen = 0
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        seen += 1
        if seen <= skip:
          continue  # not parsed: skipping the training part must stay cheap
        try:
          obj = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from e
        if not isinstance(obj, dict) or field not in obj:
          raise KeyError(f"{path}:{lineno}: no field {field!r} in the JSON object; "
                         f"set data.text_field")
        if not isinstance(obj[field], str):
          raise ValueError(f"{path}:{lineno}: field {field!r} is "
                           f"{type(obj[field]).__name__}, not text")
        yield obj[field]
  elif ext == ".txt":
    with open(path, encoding="utf-8") as f:
      seen = 0
      for line in f:
        text = line.rstrip("\r\n")
        if text.strip():
          seen += 1
          if seen > skip:
            yield text
  elif ext == ".parquet":
    _require_pyarrow(path)
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
      raise KeyError(f"{path}: no column {field!r} (columns: {pf.schema_arrow.names}); "
                     f"set data.text_field")
    row = 0
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
      if row + batch.num_rows > skip:
        values = batch.column(0).to_pylist()[max(skip - row, 0):]
        yield from _texts_of_column(values, path, field, max(row, skip))
      row += batch.num_rows
  elif ext == ".arrow":
    row = 0
    for batch in _arrow_batches(path):
      _check_column(batch, path, field)
      if row + batch.num_rows > skip:
        column = batch.column(batch.schema.get_field_index(field))
        values = column.to_pylist()[max(skip - row, 0):]
        yield from _texts_of_column(values, path, field, max(row, skip))
      row += batch.num_rows
  else:
    raise ValueError(f"{path}: unsupported extension {ext!r}; supported: {SUPPORTED_EXTENSIONS}")


def _count_file(path: str, field: str) -> int:
  ext = os.path.splitext(path)[1]
  if ext == ".jsonl" or ext == ".txt":
    # Must skip exactly the lines _read_file skips.
    try:
      with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())
    except UnicodeDecodeError as e:
      raise _not_utf8(path, e) from e
  if ext == ".parquet":
    _require_pyarrow(path)
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    return pq.ParquetFile(path).metadata.num_rows
  if ext == ".arrow":
    total = 0
    for batch in _arrow_batches(path):
      _check_column(batch, path, field)
      total += batch.num_rows
    return total
  raise ValueError(f"{path}: unsupported extension {ext!r}; supported: {SUPPORTED_EXTENSIONS}")


class LocalFilesSource(DocumentSource):
  """Documents of local files, read in the given order."""

  def __init__(self, files: list[str], text_field: str, description: str):
    self.files = list(files)
    self.text_field = text_field
    self.description = description
    self._counts: list[int] | None = None

  def _file_counts(self) -> list[int]:
    if self._counts is None:
      self._counts = [_count_file(p, self.text_field) for p in self.files]
    return self._counts

  def num_docs(self) -> int:
    return sum(self._file_counts())

  def iter_texts(self, start: int, stop: int) -> Iterator[str]:
    offset = 0
    for path, count in zip(self.files, self._file_counts()):
      lo, hi = max(start - offset, 0), min(stop - offset, count)
      offset += count
      if lo >= hi:
        continue
      for i, text in enumerate(_read_file(path, self.text_field, skip=lo), lo):
        if i >= hi:
          break
        yield text

  def fingerprint(self) -> dict[str, Any]:
    files = []
    for p in self.files:
      st = os.stat(p)
      files.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return {"kind": "local", "files": files, "text_field": self.text_field}


class HubSource(DocumentSource):
  """One split of a dataset loaded with ``datasets.load_dataset``."""

  def __init__(self, dataset: Any, name: str, split: str, text_field: str):
    if text_field not in dataset.column_names:
      raise KeyError(f"hub dataset {name!r} split {split!r} has no column {text_field!r} "
                     f"(columns: {dataset.column_names}); set data.text_field")
    self.dataset = dataset
    self.name = name
    self.split = split
    self.text_field = text_field
    self.description = f"hub dataset {name!r} (split {split!r})"

  def num_docs(self) -> int:
    return len(self.dataset)

  def iter_texts(self, start: int, stop: int) -> Iterator[str]:
    for i in range(start, stop, _HUB_READ_BATCH):
      yield from self.dataset[i:min(i + _HUB_READ_BATCH, stop)][self.text_field]

  def fingerprint(self) -> dict[str, Any]:
    return {"kind": "hub", "name": self.name, "split": self.split,
            "text_field": self.text_field, "num_rows": len(self.dataset),
            "dataset_fingerprint": getattr(self.dataset, "_fingerprint", None)}


def _local_advice(field: str) -> str:
  return (f"set {field} to local files instead: a .jsonl (one {{\"text\": ...}} per line), "
          f".parquet, .arrow or .txt file, a directory of them, or a glob such as "
          f"'/data/owt/*.jsonl' (on a machine with network, e.g. "
          f"datasets.load_dataset(NAME, split='train').to_json('owt.jsonl'))")


def _supported(paths: list[str]) -> list[str]:
  return sorted(p for p in paths
                if os.path.isfile(p) and os.path.splitext(p)[1] in SUPPORTED_EXTENSIONS)


def _open_hub(name: str, split: str, text_field: str, field: str) -> HubSource:
  # Offline unless the caller explicitly allowed the network: a missing dataset
  # must fail fast instead of waiting on connections that cannot succeed here.
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("HF_DATASETS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
  try:
    import datasets  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SourceNotFoundError(
        f"{field}={name!r} is not an existing local path, so it names a Hugging Face hub "
        f"dataset, but the `datasets` library is not installed; "
        + _local_advice(field).replace("NAME", repr(name))) from e
  try:
    ds = datasets.load_dataset(name, split=split)
  except Exception as e:  # noqa: BLE001 -- datasets raises many types for "not available"
    raise SourceNotFoundError(
        f"{field}={name!r}: hub dataset could not be loaded offline from the local cache "
        f"({type(e).__name__}: {e}); " + _local_advice(field).replace("NAME", repr(name))) from e
  return HubSource(ds, name, split, text_field)


def open_source(source: str, *, text_field: str = "text", hub_split: str = "train",
                field: str = SOURCE_FIELD) -> DocumentSource:
  """Resolves ``data.source`` (see the module docstring) to a :class:`DocumentSource`.

  Raises:
    SourceNotFoundError: a path or glob that matches nothing, or a hub name that
      cannot be loaded (message says how to pass local files).
    ValueError: a directory or file list with no supported file.
  """
  if not source:
    raise ValueError(f"{field} is empty; " + _local_advice(field).replace("NAME", "'...'"))
  path = os.path.expanduser(source)
  if os.path.isdir(path):
    files = _supported(glob.glob(os.path.join(path, "**", "*"), recursive=True))
    if not files:
      raise ValueError(f"{field}={source!r}: directory has no {'/'.join(SUPPORTED_EXTENSIONS)} "
                       f"files")
    return LocalFilesSource(files, text_field, f"{len(files)} file(s) under {path}")
  if os.path.isfile(path):
    if os.path.splitext(path)[1] not in SUPPORTED_EXTENSIONS:
      raise ValueError(f"{field}={source!r}: unsupported extension; supported: "
                       f"{SUPPORTED_EXTENSIONS}")
    return LocalFilesSource([path], text_field, path)
  if glob.has_magic(path):
    matches = glob.glob(path, recursive=True)
    files = _supported(matches)
    if not files:
      raise SourceNotFoundError(
          f"{field}={source!r}: the glob matches no {'/'.join(SUPPORTED_EXTENSIONS)} file "
          f"({len(matches)} path(s) matched in all)")
    return LocalFilesSource(files, text_field, f"{len(files)} file(s) matching {path}")
  looks_like_path = (os.path.isabs(path) or source.startswith((".", "~"))
                     or os.path.splitext(path)[1] in SUPPORTED_EXTENSIONS)
  if looks_like_path:
    raise SourceNotFoundError(f"{field}={source!r}: path {path!r} does not exist")
  return _open_hub(source, hub_split, text_field, field)
