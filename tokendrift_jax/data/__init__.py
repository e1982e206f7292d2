"""Data: sources -> tokenizer -> MDLM wrap -> disk cache -> grain iterators.

Main entry point: :func:`make_datasets` (config fields: :func:`default_config`).
Names are resolved lazily so that ``python -m tokendrift_jax.data.cache`` and
importing :mod:`tokendrift_jax.data.wrap` do not pull in transformers and grain.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "make_datasets": "input_pipeline",
    "default_config": "input_pipeline",
    "train_dataset": "input_pipeline",
    "eval_dataset": "input_pipeline",
    "prepare_splits": "cache",
    "CachedBlocks": "cache",
    "wrap_documents": "wrap",
    "iter_wrapped_blocks": "wrap",
    "load_tokenizer": "tokenizer",
    "open_source": "sources",
    "SourceNotFoundError": "sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
  return getattr(module, name)
