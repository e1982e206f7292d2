"""One mechanism for checking config values where a config is read: a table of
``(dotted field, check)`` applied by :func:`validate`.

A check is a callable ``value -> None`` raising ValueError with what is wrong (the field
is added by :func:`validate`), so every refusal is one line naming the field and the
value: ``config.optim.lr=-1.0 must be > 0``. Fields absent from a config (configs written
before the field existed, experiment configs without a section) are skipped.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable

Check = Callable[[Any], None]


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def integer(lo: int | None = None, hi: int | None = None) -> Check:
  """An int (not a bool, not a float) in [lo, hi]."""
  def check(v):
    if not _is_int(v):
      raise ValueError(f"must be an integer, got {v!r} ({type(v).__name__})")
    if lo is not None and v < lo:
      raise ValueError(f"must be >= {lo}")
    if hi is not None and v > hi:
      raise ValueError(f"must be <= {hi}")
  return check


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Check:
  """A finite real number in the interval from lo to hi (open ends where asked)."""
  def check(v):
    if not _is_number(v):
      raise ValueError(f"must be a number, got {v!r} ({type(v).__name__})")
    if not math.isfinite(float(v)):
      raise ValueError("must be finite")
    if lo is not None and (v <= lo if lo_open else v < lo):
      raise ValueError(f"must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and (v >= hi if hi_open else v > hi):
      raise ValueError(f"must be {'<' if hi_open else '<='} {hi:g}")
  return check


def each(inner: Check, *, nonempty: bool = True, distinct: bool = False) -> Check:
  """A list or tuple whose every entry passes ``inner`` (a number alone counts as one:
  ``--config.nfe=4`` gives an int); not empty when ``nonempty``, no value twice when
  ``distinct``."""
  def check(v):
    values = (v,) if _is_number(v) else v
    if not isinstance(values, (list, tuple)):
      raise ValueError(f"must be a list, got {v!r} ({type(v).__name__})")
    if nonempty and not values:
      raise ValueError("is empty; give at least one value")
    for x in values:
      try:
        inner(x)
      except ValueError as e:
        raise ValueError(f"entry {x!r} {e}") from None
    if distinct and len(set(values)) != len(values):
      raise ValueError("has repeated values")
  return check


def text(v) -> None:
  """A string (paths, names; "" allowed)."""
  if not isinstance(v, str):
    raise ValueError(f"must be a string, got {v!r} ({type(v).__name__})")


def boolean(v) -> None:
  if not isinstance(v, bool):
    raise ValueError(f"must be true or false, got {v!r} ({type(v).__name__})")


def one_of(*choices) -> Check:
  def check(v):
    if v not in choices:
      raise ValueError(f"must be one of {list(choices)}, got {v!r}")
  return check


_MISSING = object()


def lookup(config, dotted: str):
  node = config
  for part in dotted.split("."):
    try:
      if part not in node:
        return _MISSING
      node = node[part]
    except TypeError:
      return _MISSING
  return node


def validate(config, table: Iterable[tuple[str, Check]], error: type[Exception] = ValueError,
             prefix: str = "config.") -> None:
  """Applies every ``(field, check)`` of ``table``; ``error`` with one line naming the
  first field that fails (``config.FIELD=VALUE CHECK``)."""
  for field, check in table:
    value = lookup(config, field)
    if value is _MISSING:
      continue
    try:
      check(value)
    except ValueError as e:
      raise error(f"{prefix}{field}={value!r} {e}") from None
