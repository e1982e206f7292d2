"""Tokenize-and-wrap once, then reuse: per-split int32 block caches on disk.

Each split is stored in its own directory under ``data.cache_dir``::

  <cache_dir>/<split>-L<length>-<key>/blocks.npy      int32[N, length], np.load(mmap_mode="r")
  <cache_dir>/<split>-L<length>-<key>/manifest.json   what was built from what, and counts

``key`` hashes everything that decides the blocks: the source's fingerprint (local
files' absolute paths, sizes and mtimes, or the hub name/split/fingerprint), the
text field, the split and ``valid_docs``, the tokenizer's content fingerprint, the
length, the wrap flag and the grouping. A changed input is a new directory.

Builds are atomic: everything is written into a hidden temporary directory that is
renamed into place only when complete, and removed on any error or Ctrl-C. A
directory under its final name is therefore always complete. Concurrent builders
(several processes on a shared disk) each build privately; the first rename wins.

Run ``python -m tokendrift_jax.data.cache --source ... --tokenizer ... --cache_dir ...``
to build the caches ahead of a multi-process run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import tqdm

from tokendrift_jax.data import sources as sources_lib
from tokendrift_jax.data import tokenizer as tokenizer_lib
from tokendrift_jax.data import wrap as wrap_lib

FORMAT_VERSION = 1
TRAIN = "train"
VALIDATION = "validation"
BLOCKS_FILE = "blocks.npy"
MANIFEST_FILE = "manifest.json"
_TOKENIZE_BATCH = 1000
_DTYPE = np.dtype("<i4")


@dataclasses.dataclass(frozen=True)
class CachedBlocks:
  """A built split: ``blocks`` is a read-only int32[N, length] memmap."""

  directory: str
  blocks: np.ndarray
  manifest: dict[str, Any]

  def id_range(self) -> tuple[int, int]:
    """(smallest, largest) token id of the split.

    Recorded in the manifest when the split is built; caches built before that are
    scanned once here (one pass over the memmap).
    """
    counts = self.manifest.get("counts", {})
    if "min_id" in counts and "max_id" in counts:
      return int(counts["min_id"]), int(counts["max_id"])
    return int(self.blocks.min()), int(self.blocks.max())


@dataclasses.dataclass(frozen=True)
class SplitSpec:
  """Which documents form a split: ``[start, stop)`` of the source's order."""

  name: str
  start: int
  stop: int


def split_specs(num_docs: int, valid_docs: int, description: str) -> list[SplitSpec]:
  """MDLM's openwebtext-split: train = all but the last ``valid_docs`` documents.

  ``valid_docs=0`` gives a train split only. Documents are counted before wrapping
  (MDLM: ``train[:-100000]`` / ``train[-100000:]``).
  """
  if valid_docs < 0:
    raise ValueError(f"data.valid_docs must be >= 0, got {valid_docs}")
  if num_docs == 0:
    raise ValueError(f"data source {description} holds 0 documents")
  if num_docs <= valid_docs:
    raise ValueError(
        f"data source {description} holds {num_docs} documents, not more than "
        f"data.valid_docs={valid_docs} held out for validation, so the train split "
        f"would be empty; lower data.valid_docs")
  specs = [SplitSpec(TRAIN, 0, num_docs - valid_docs)]
  if valid_docs:
    specs.append(SplitSpec(VALIDATION, num_docs - valid_docs, num_docs))
  return specs


def cache_key(material: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()[:20]


def _token_lists(texts: Iterator[str], tokenizer, counter: dict[str, int],
                 bar: tqdm.tqdm) -> Iterator[list[int]]:
  while True:
    chunk = list(itertools.islice(texts, _TOKENIZE_BATCH))
    if not chunk:
      return
    ids = tokenizer_lib.encode_batch(tokenizer, chunk)
    counter["docs"] += len(ids)
    counter["tokens"] += sum(len(t) + 1 for t in ids)  # + the appended EOS
    bar.update(len(chunk))
    yield from ids


def _write_header(f, rows: int, length: int) -> int:
  np.lib.format.write_array_header_1_0(
      f, {"descr": _DTYPE.str, "fortran_order": False, "shape": (rows, length)})
  return f.tell()


def _build(tmp_dir: str, source: sources_lib.DocumentSource, spec: SplitSpec, tokenizer,
           ids: tokenizer_lib.SpecialIds, length: int, group_docs: int | None,
           progress: bool) -> dict[str, int]:
  counter = {"docs": 0, "tokens": 0}
  rows, lo, hi = 0, None, None
  path = os.path.join(tmp_dir, BLOCKS_FILE)
  with open(path, "wb") as f, tqdm.tqdm(total=spec.stop - spec.start, unit="doc",
                                        desc=f"tokenizing {spec.name}",
                                        disable=not progress) as bar:
    # numpy pads the .npy header so the leading dimension can grow in place; the
    # final row count overwrites this provisional header once it is known.
    header_len = _write_header(f, 0, length)
    docs = _token_lists(source.iter_texts(spec.start, spec.stop), tokenizer, counter, bar)
    for blocks in wrap_lib.iter_wrapped_blocks(docs, length=length, bos=ids.bos, eos=ids.eos,
                                               group_docs=group_docs):
      f.write(blocks.astype(_DTYPE, copy=False).tobytes())
      rows += blocks.shape[0]
      if blocks.size:
        b_lo, b_hi = int(blocks.min()), int(blocks.max())
        lo, hi = (b_lo, b_hi) if lo is None else (min(lo, b_lo), max(hi, b_hi))
    if counter["docs"] != spec.stop - spec.start:
      raise RuntimeError(f"{source.description}: expected {spec.stop - spec.start} documents "
                         f"for split {spec.name!r}, read {counter['docs']} (did the files "
                         f"change while reading?)")
    if rows == 0:
      raise ValueError(
          f"split {spec.name!r} of data source {source.description}: {counter['docs']} "
          f"documents with {counter['tokens']} tokens (EOS included) give 0 full blocks of "
          f"{length - 2} tokens + BOS/EOS (data.wrap_group_docs={group_docs} drops the "
          f"remainder of every group); add documents or lower the sequence length")
    f.seek(0)
    if _write_header(f, rows, length) != header_len:
      raise RuntimeError(f"{path}: .npy header changed size when writing {rows} rows")
    f.flush()
    os.fsync(f.fileno())
  return {"docs": counter["docs"], "tokens": counter["tokens"], "blocks": rows,
          "min_id": lo, "max_id": hi}


def load_cached(directory: str) -> CachedBlocks:
  """Opens a built split (memmap) and checks it against its manifest."""
  manifest_path = os.path.join(directory, MANIFEST_FILE)
  blocks_path = os.path.join(directory, BLOCKS_FILE)
  if not (os.path.isfile(manifest_path) and os.path.isfile(blocks_path)):
    raise FileNotFoundError(f"data cache {directory!r} lacks {MANIFEST_FILE} or {BLOCKS_FILE}; "
                            f"delete the directory to rebuild it")
  with open(manifest_path, encoding="utf-8") as f:
    manifest = json.load(f)
  blocks = np.load(blocks_path, mmap_mode="r")
  expected = (manifest["counts"]["blocks"], manifest["length"])
  if blocks.dtype != _DTYPE or blocks.shape != expected:
    raise ValueError(f"data cache {blocks_path!r} holds {blocks.dtype}{list(blocks.shape)}, its "
                     f"manifest says int32{list(expected)}; delete {directory!r} to rebuild")
  return CachedBlocks(directory=directory, blocks=blocks, manifest=manifest)


def build_split(source: sources_lib.DocumentSource, name: str, *,
                tokenizer, tokenizer_name: str, cache_dir: str, length: int,
                valid_docs: int, group_docs: int | None, progress: bool = True,
                pad_token: str = "") -> CachedBlocks:
  """Returns the cached blocks of one split, building them on first use.

  Args:
    source: where the documents come from.
    name: ``"train"`` or ``"validation"``; the document range is resolved from
      ``valid_docs`` (and the documents counted) only when a build is needed.
    tokenizer: a loaded HF tokenizer; ``tokenizer_name`` is recorded in the manifest.
    cache_dir: parent directory of the per-split cache directories.
    length: block length (model length).
    valid_docs: held-out document count; part of the key because it moves the split.
    group_docs: see :func:`tokendrift_jax.data.wrap.iter_wrapped_blocks`.
    progress: show a tqdm bar while tokenizing.
    pad_token: the pad token ``tokenizer`` was given by :func:`tokenizer.add_pad_token`
      ("" = none); recorded in the key and manifest (the tokenizer fingerprint, which
      covers added tokens, changes with it too).
  """
  if name not in (TRAIN, VALIDATION):
    raise ValueError(f"split must be {TRAIN!r} or {VALIDATION!r}, got {name!r}")
  ids = tokenizer_lib.special_ids(tokenizer)
  material = {
      "format": FORMAT_VERSION, "source": source.fingerprint(), "split": name,
      "valid_docs": valid_docs, "tokenizer": tokenizer_lib.tokenizer_fingerprint(tokenizer),
      "length": length, "wrap": True, "group_docs": group_docs,
  }
  if pad_token:
    # Only when set, so that caches built before the field existed keep their keys.
    material["pad_token"] = pad_token
  key = cache_key(material)
  cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
  final = os.path.join(cache_dir, f"{name}-L{length}-{key}")
  if os.path.isdir(final):
    return load_cached(final)

  # Counting is paid once per source: LocalFilesSource memoizes its counts.
  by_name = {s.name: s for s in split_specs(source.num_docs(), valid_docs, source.description)}
  if name not in by_name:
    raise ValueError(f"no {name!r} split with data.valid_docs={valid_docs}")
  spec = by_name[name]
  if spec.stop <= spec.start:
    raise ValueError(f"split {name!r} of data source {source.description} holds 0 documents")

  os.makedirs(cache_dir, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=cache_dir)
  try:
    counts = _build(tmp_dir, source, spec, tokenizer, ids, length, group_docs, progress)
    manifest = {
        "key": key, "key_material": material, "split": name,
        "doc_range": [spec.start, spec.stop], "source": source.description,
        "tokenizer_name": tokenizer_name, "bos": ids.bos, "eos": ids.eos,
        "pad_token": pad_token,
        "pad_id": tokenizer.pad_token_id if pad_token else None,
        "length": length, "dtype": "int32", "counts": counts,
        "created_unix": time.time(),
    }
    with open(os.path.join(tmp_dir, MANIFEST_FILE), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp_dir, 0o755)  # mkdtemp's 0700 would hide the cache from other users
    try:
      os.rename(tmp_dir, final)
    except OSError:
      if not os.path.isdir(final):
        raise
      # Another process finished the same build first; its copy is identical.
      shutil.rmtree(tmp_dir, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  return load_cached(final)


def prepare_splits(*, source: str, tokenizer: str, cache_dir: str, length: int,
                   text_field: str = "text", hub_split: str = "train",
                   valid_docs: int = 100_000, wrap: bool = True,
                   group_docs: int | None = wrap_lib.MDLM_GROUP_DOCS,
                   progress: bool = True, pad_token: str = "[PAD]"
                   ) -> dict[str, CachedBlocks]:
  """Opens the source and tokenizer and returns ``{"train": ..., "validation": ...}``.

  ``"validation"`` is absent when ``valid_docs == 0``. ``pad_token``: added as a special
  token to a tokenizer without one before tokenizing, as MDLM and DUO did ("[PAD]"; ""
  = the tokenizer as it is; :func:`tokenizer.add_pad_token`). See :func:`build_split`.
  """
  if not wrap:
    raise ValueError(
        "data.wrap=False (MDLM's padded, truncated single documents with an attention "
        "mask) is not supported: both backbones and TokenDrift train on wrapped "
        "OpenWebText; set data.wrap=True")
  if length < 3:
    raise ValueError(f"sequence length must be >= 3 for BOS ... EOS blocks, got {length}")
  src = sources_lib.open_source(source, text_field=text_field, hub_split=hub_split)
  tok = tokenizer_lib.load_tokenizer(tokenizer)
  added = pad_token if pad_token and tok.pad_token is None else ""
  tokenizer_lib.add_pad_token(tok, pad_token)
  names = [TRAIN] + ([VALIDATION] if valid_docs else [])
  return {name: build_split(src, name, tokenizer=tok, tokenizer_name=tokenizer,
                            cache_dir=cache_dir, length=length, valid_docs=valid_docs,
                            group_docs=group_docs, progress=progress, pad_token=added)
          for name in names}


def _parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m tokendrift_jax.data.cache",
      description="Tokenize and wrap a corpus into the data cache (MDLM openwebtext-split).")
  p.add_argument("--source", default="Skylion007/openwebtext",
                 help="hub dataset name, or local .jsonl/.parquet/.arrow/.txt file, dir or glob")
  p.add_argument("--tokenizer", default="gpt2", help="tokenizer hub id or local directory")
  p.add_argument("--cache_dir", required=True)
  p.add_argument("--length", type=int, default=1024)
  p.add_argument("--text_field", default="text")
  p.add_argument("--hub_split", default="train")
  p.add_argument("--valid_docs", type=int, default=100_000)
  p.add_argument("--group_docs", type=int, default=wrap_lib.MDLM_GROUP_DOCS,
                 help="documents per concatenation group (MDLM: 1000); 0 = whole stream")
  p.add_argument("--pad_token", default="[PAD]",
                 help="special pad token added to a tokenizer without one, as MDLM/DUO did "
                      "(default [PAD]); '' = tokenize with the tokenizer as it is")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  try:
    splits = prepare_splits(source=args.source, tokenizer=args.tokenizer,
                            cache_dir=args.cache_dir, length=args.length,
                            text_field=args.text_field, hub_split=args.hub_split,
                            valid_docs=args.valid_docs, group_docs=args.group_docs or None,
                            pad_token=args.pad_token)
  except (OSError, ValueError, KeyError, ImportError) as e:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    # The sources name the training config's field; this command's is the flag.
    msg = msg.replace("set data.text_field", "pass --text_field")
    print(f"error: {(msg.splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
    return 1
  for name, cached in splits.items():
    print(f"{name}: {cached.blocks.shape[0]} blocks x {cached.blocks.shape[1]} tokens "
          f"in {cached.directory}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
