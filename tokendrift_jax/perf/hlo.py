"""Reading XLA programs: the matrix products of an HLO module and of a StableHLO lowering.

``dot_inventory(hlo_text)`` lists every ``dot`` of a compiled (optimised) HLO module with
its FLOPs, 2 · prod(output dims) · prod(contracted dims), the count XLA's cost analysis
uses for a dot. Operand shapes are resolved through each computation's instructions and
parameters (the optimised text names operands without their shapes). A dot inside a
``while`` body is listed once, as XLA's cost analysis counts it, so compare on programs
without loops.

``stablehlo_dots(text)`` lists the ``dot_general`` ops of a lowering (``jit(f).lower(...)
.as_text()``) with their operand and result element types: what JAX asks the compiler for,
independent of the backend (the CPU compiler upcasts bf16 products to f32; GPUs do not).
"""

from __future__ import annotations

import dataclasses
import math
import re

_COMP_START = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\((.*)\)\s*->.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*([a-z]\w*)\[([\d,]*)\]\S*\s+"
                    r"([\w\-]+)\((.*)$")
_PARAM = re.compile(r"%?([\w.\-]+):\s*([a-z]\w*)\[([\d,]*)\]")
_DIMS = re.compile(r"(lhs_contracting_dims|lhs_batch_dims)=\{([\d,]*)\}")
_CALLS = re.compile(r"(?:calls|body|condition|to_apply)=%?([\w.\-]+)")
_BODY = re.compile(r"body=%?([\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_SHLO_DOT = re.compile(r"stablehlo\.dot_general.*:\s*\(tensor<([^>]*)>,\s*tensor<([^>]*)>\)"
                       r"\s*->\s*tensor<([^>]*)>")


def _dims(s: str) -> tuple[int, ...]:
  return tuple(int(x) for x in s.split(",") if x)


@dataclasses.dataclass(frozen=True)
class Dot:
  computation: str
  name: str
  out_dtype: str
  out_shape: tuple[int, ...]
  lhs: tuple[str, tuple[int, ...]] | None
  rhs: tuple[str, tuple[int, ...]] | None
  flops: int


def _operands(args: str) -> list[str]:
  """The first two operand names of ``dot(%a, %b), ...``."""
  inner = args.split(")", 1)[0]
  return [a.strip().lstrip("%") for a in inner.split(",")][:2]


def dot_inventory(hlo_text: str) -> list[Dot]:
  """Every dot of an HLO module text, with FLOPs (see module docstring)."""
  dots: list[Dot] = []
  comp, shapes = "", {}
  for line in hlo_text.splitlines():
    m = _COMP_START.match(line.strip())
    if m:
      comp = m.group(1)
      shapes = {name: (dt, _dims(dims)) for name, dt, dims in _PARAM.findall(m.group(2))}
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, dtype, dims, opcode, rest = m.groups()
    shapes[name] = (dtype, _dims(dims))
    if opcode != "dot":
      continue
    lhs_name, rhs_name = (_operands(rest) + [None, None])[:2]
    lhs, rhs = shapes.get(lhs_name), shapes.get(rhs_name)
    fields = dict(_DIMS.findall(rest))
    if lhs is None:
      raise ValueError(f"cannot resolve the shape of dot operand {lhs_name!r} in "
                       f"computation {comp!r}: {line.strip()[:200]}")
    contracted = math.prod(lhs[1][i] for i in _dims(fields.get("lhs_contracting_dims", "")))
    flops = 2 * math.prod(_dims(dims)) * contracted
    dots.append(Dot(comp, name, dtype, _dims(dims), lhs, rhs, flops))
  return dots


def dot_flops(hlo_text: str) -> int:
  return sum(d.flops for d in dot_inventory(hlo_text))


@dataclasses.dataclass(frozen=True)
class Loop:
  name: str
  body: str
  trip_count: int | None   # None when XLA does not know it
  has_dot: bool            # the body (or anything it calls) holds a dot


def loops(hlo_text: str) -> list[Loop]:
  """Every ``while`` of an HLO module, with its trip count and whether it runs dots.

  A loop whose body runs dots and iterates more than once is what makes XLA's cost
  analysis (one count per body) disagree with the executed FLOPs; loops without dots
  (e.g. the threefry rounds of the RNG) only shift the elementwise count.
  """
  calls: dict[str, set[str]] = {}
  direct: set[str] = set()
  whiles: list[tuple[str, str, int | None]] = []
  comp = ""
  for line in hlo_text.splitlines():
    m = _COMP_START.match(line.strip())
    if m:
      comp = m.group(1)
      calls.setdefault(comp, set())
      continue
    m = _INSTR.match(line) or re.match(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\(", line)
    if not m:
      continue
    calls.setdefault(comp, set()).update(_CALLS.findall(line))
    if " dot(" in line:
      direct.add(comp)
    if " while(" in line:
      body = _BODY.search(line)
      trip = _TRIP.search(line)
      whiles.append((m.group(1), body.group(1) if body else "",
                     int(trip.group(1)) if trip else None))

  memo: dict[str, bool] = {}

  def has_dot(name: str, seen=()) -> bool:
    if name not in memo:
      memo[name] = name in direct or any(
          has_dot(c, seen + (name,)) for c in calls.get(name, ()) if c not in seen)
    return memo[name]

  return [Loop(n, b, t, has_dot(b)) for n, b, t in whiles]


def dot_loops(hlo_text: str) -> list[Loop]:
  """The loops that run dots more than once (or an unknown number of times)."""
  return [lp for lp in loops(hlo_text) if lp.has_dot and lp.trip_count != 1]


def _tensor(spec: str) -> tuple[tuple[int, ...], str]:
  parts = spec.split("x")
  return tuple(int(p) for p in parts[:-1] if p.isdigit()), parts[-1]


@dataclasses.dataclass(frozen=True)
class ShloDot:
  lhs: tuple[tuple[int, ...], str]
  rhs: tuple[tuple[int, ...], str]
  out: tuple[tuple[int, ...], str]

  @property
  def dtypes(self) -> str:
    return f"{self.lhs[1]} x {self.rhs[1]} -> {self.out[1]}"


def stablehlo_dots(text: str) -> list[ShloDot]:
  """Every ``stablehlo.dot_general`` of a lowering, with operand and result types."""
  out = []
  for line in text.splitlines():
    m = _SHLO_DOT.search(line)
    if m:
      out.append(ShloDot(*(_tensor(g) for g in m.groups())))
  return out
