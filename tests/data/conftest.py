"""Fixtures of the data tests: the tiny tokenizer and small JSONL corpora."""

import json

import numpy as np
import pytest

WORDS = ("the quick brown fox jumps over lazy dog river stone light paper garden music "
         "window silver orange planet").split()


def _make_texts(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, size=rng.integers(1, 25))) + "." for _ in range(n)]


def _write_jsonl(path, texts, field="text"):
  with open(path, "w", encoding="utf-8") as f:
    for t in texts:
      f.write(json.dumps({field: t, "id": len(t)}) + "\n")
  return str(path)


@pytest.fixture(scope="session")
def make_texts():
  """Factory: ``make_texts(n, seed=0) -> list[str]``, word-soup documents of 1..24 words."""
  return _make_texts


@pytest.fixture(scope="session")
def write_jsonl():
  """Factory: ``write_jsonl(path, texts, field="text") -> str``, one JSON object per text."""
  return _write_jsonl


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory, build_tiny_tokenizer):
  """The tiny GPT-2-like tokenizer (300 ids) as an HF directory."""
  return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tiny", vocab_size=300)


@pytest.fixture(scope="session")
def tok(tok_dir):
  """tok_dir loaded with transformers.AutoTokenizer."""
  import transformers  # pylint: disable=import-outside-toplevel
  return transformers.AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
