"""Fixtures of the perf tests."""

import jax
import pytest


@pytest.fixture(scope="session")
def compiled_text():
  """``compiled_text(fn, *args)``: the optimised HLO text of jit(fn) compiled for args."""
  def _compiled_text(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()
  return _compiled_text
