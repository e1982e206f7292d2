"""Time of a compiled TPU program from XLA:TPU's cost model, with loop trip counts.

XLA:TPU annotates every scheduled instruction of a compiled module with the cycles its
cost model expects (``backend_config.window_config.estimated_cycles``: matrix-unit, vector
and memory work of one fusion, copy or custom call on one chip). ``compiled.cost_analysis()``
also gives a whole-program ``optimal_seconds``, but that counts the body of a ``while`` once,
and a training step is loops: the micro-step ``lax.scan`` (64 micro-steps at a global batch
of 512 and 8 sequences per micro-step) around the layer scans of every pass.

:func:`estimate` reads the compiled HLO text instead:

* **Compute**: the sum over instructions of ``estimated_cycles`` x how many times the
  instruction runs (the product of the trip counts of the ``while`` loops around it,
  read from each loop's condition, ``i < N`` from 0, or XLA's ``known_trip_count``),
  divided by the TensorCore clock (:data:`TPU_CLOCK_HZ`). Instructions inside a fusion are
  not counted on their own (the fusion carries the cycles). Both branches of a
  ``conditional`` are counted (an upper bound; the training step has none on its hot path).
* **Communication**: XLA:TPU's cost model gives collectives no cycles, and its
  ``optimal_seconds`` prices them as memory traffic at HBM speed (an all-gather's bytes
  accessed per optimal second are a plain multiply's, 2.35 TB/s on v5p, 3.9 times the
  chip's whole interconnect; ``tests/perf/test_tpu_time.py``). Each collective is therefore timed here
  from the bytes one device must receive (ring algorithms: all-gather (n-1)/n of the
  output, reduce-scatter (n-1)/n of the input, all-reduce twice that of its data,
  collective-permute its output) over the chip's inter-chip interconnect bandwidth
  (:data:`TPU_ICI_BYTES_PER_S`, Cloud TPU's published per-chip figure, all links): an
  optimistic bound for one collective, since a ring over one torus axis uses two of the
  six links.
* **Step time**: ``compute + communication`` (nothing overlapped: the upper estimate, used
  for MFU) and ``max(compute, communication)`` (perfect overlap: the lower one).

Limits: this is a cost model, not a measurement. Fusion, layout and scheduling are the real
compiler's (the program is the one XLA:TPU would run), but per-op cycles are its estimates;
the cycles of a large bf16 matmul correspond to ~90 % of the chip's peak and those of a
memory-bound add to about half its HBM bandwidth (the calibrations of
``tests/perf/test_tpu_time.py`` and docs/SCALING.md); host work, input pipelines, launch
overheads and stragglers are absent.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Any

# TensorCore clock of one chip = peak bf16 FLOP/s / (2 x MXU multiply-adds per cycle):
# v5p 459e12 / (2 TensorCores x 4 MXUs x 128 x 128 x 2) = 1.75 GHz; v5e 197e12 / (4 MXUs x
# 128^2 x 2) = 1.5 GHz; v6e 918e12 / (4 MXUs x 256^2 x 2) = 1.75 GHz; v4 275e12 / (2 x 4 x
# 128^2 x 2) = 1.05 GHz (MXU counts and sizes: Cloud TPU system-architecture pages). Checked
# against the cost model: the cycles of an 8192^3 bf16 matmul at these clocks are 90 % of the
# chip's peak (tests/perf/test_tpu_time.py).
TPU_CLOCK_HZ = {"v4": 1.05e9, "v5e": 1.5e9, "v5p": 1.75e9, "v6e": 1.75e9}
# Inter-chip interconnect bandwidth per chip, Cloud TPU's "Interchip Interconnect BW"
# (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e): v4 2,400 Gbps, v5e 1,600 Gbps,
# v5p 4,800 Gbps, v6e 3,584 Gbps; in bytes per second.
TPU_ICI_BYTES_PER_S = {"v4": 2400e9 / 8, "v5e": 1600e9 / 8, "v5p": 4800e9 / 8,
                       "v6e": 3584e9 / 8}

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                "c128": 16, "s4": 0.5, "u4": 0.5}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9]\w*)?)\[([\d,]*)\]")
_COMP_START = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\((.*)\)\s*->.*\{\s*$")
_NAME = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_EDGE = re.compile(r"\b(body|condition|to_apply|calls|true_computation|false_computation)"
                   r"=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all",
                "collective-permute")


@dataclasses.dataclass(frozen=True)
class Instr:
  name: str
  opcode: str
  type_text: str
  line: str


def _split_type(rest: str) -> tuple[str, str]:
  """(result type, the remainder from the opcode on) of the text after ``name = ``."""
  if rest.startswith("("):
    depth = 0
    for i, ch in enumerate(rest):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        return rest[:i + 1], rest[i + 1:].lstrip()
  head, _, tail = rest.partition(" ")
  return head, tail


def parse_module(text: str) -> tuple[dict[str, list[Instr]], str, int]:
  """{computation: instructions}, the entry computation's name and ``num_partitions``."""
  comps: dict[str, list[Instr]] = {}
  entry, comp = "", None
  m = re.search(r"num_partitions=(\d+)", text)
  partitions = int(m.group(1)) if m else 1
  for line in text.splitlines():
    s = line.strip()
    m = None if line[:1].isspace() else _COMP_START.match(s)
    if m:
      comp = m.group(2)
      comps[comp] = []
      if m.group(1):
        entry = comp
      continue
    if comp is None or s == "}":
      continue
    m = _NAME.match(line)
    if not m:
      continue
    type_text, tail = _split_type(line[m.end():])
    opcode = re.match(r"([\w\-]+)", tail)
    if opcode:
      comps[comp].append(Instr(m.group(1), opcode.group(1), type_text, line))
  return comps, entry, partitions


def array_bytes(type_text: str) -> list[float]:
  """Bytes of each array of a result type (a tuple gives several)."""
  out = []
  for dtype, dims in _ARRAY.findall(type_text):
    size = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else None)
    if size is None:
      continue
    out.append(size * math.prod(int(d) for d in dims.split(",") if d))
  return out


def _top_level(type_text: str) -> list[str]:
  """The top-level elements of a tuple type text ("(a, (b, c))" -> ["a", "(b, c)"])."""
  if not type_text.startswith("("):
    return [type_text]
  body, parts, depth, cur = type_text[1:-1], [], 0, ""
  for ch in body:
    depth += ch in "({["
    depth -= ch in ")}]"
    if ch == "," and depth == 0:
      parts.append(cur.strip())
      cur = ""
    else:
      cur += ch
  if cur.strip():
    parts.append(cur.strip())
  return [re.sub(r"/\*[^*]*\*/", "", p).strip() for p in parts]


def trip_count(instr: Instr, comps: dict[str, list[Instr]]) -> int | None:
  """Iterations of a ``while``: XLA's ``known_trip_count``, else ``i < N`` of its condition
  (a JAX scan or fori_loop counts from 0); None when neither is found."""
  m = _TRIP.search(instr.line)
  if m:
    return int(m.group(1))
  cond = re.search(r"condition=%?([\w.\-]+)", instr.line)
  body = comps.get(cond.group(1), []) if cond else []
  consts = {i.name: int(c.group(1)) for i in body if i.opcode == "constant"
            for c in [re.search(r"constant\((-?\d+)\)", i.line)] if c}
  for i in body:
    if i.opcode == "compare" and "direction=LT" in i.line:
      args = re.search(r"compare\(([^)]*)\)", i.line).group(1)
      for a in args.split(","):
        a = a.strip().lstrip("%")
        if a in consts:
          return consts[a]
  return None


def multiplicities(comps: dict[str, list[Instr]], entry: str
                   ) -> tuple[dict[str, float], set[str], list[str]]:
  """How many times each computation runs per execution of ``entry``; the set of fusion
  bodies (their instructions are costed by the fusion); and warnings (unknown trip counts,
  which count 1)."""
  mult: dict[str, float] = collections.defaultdict(float)
  fused: set[str] = set()
  warnings: list[str] = []
  # Computations form a DAG; visit in an order where every caller precedes its callees.
  callers: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
  for comp, instrs in comps.items():
    for ins in instrs:
      trips = None
      if ins.opcode == "while":
        trips = trip_count(ins, comps)
        if trips is None:
          warnings.append(f"{ins.name}: trip count unknown, counted once")
          trips = 1
      for kind, callee in _EDGE.findall(ins.line):
        if callee not in comps:
          continue
        if kind == "body":
          callers[callee].append((comp, float(trips)))
        elif kind == "condition":
          callers[callee].append((comp, float(trips) + 1))
        else:
          if kind == "calls" and ins.opcode == "fusion":
            fused.add(callee)
          callers[callee].append((comp, 1.0))
      m = _BRANCHES.search(ins.line)
      if m:
        for callee in re.findall(r"%?([\w.\-]+)", m.group(1)):
          if callee in comps:
            callers[callee].append((comp, 1.0))
  memo: dict[str, float] = {entry: 1.0}

  def count(c: str, stack=()) -> float:
    if c not in memo:
      memo[c] = sum(count(p, stack + (c,)) * k for p, k in callers.get(c, ())
                    if p not in stack)
    return memo[c]

  for c in comps:
    mult[c] = count(c)
  # Whatever a fusion body calls is part of the fusion too.
  frontier = list(fused)
  while frontier:
    c = frontier.pop()
    for ins in comps.get(c, ()):
      for _, callee in _EDGE.findall(ins.line):
        if callee in comps and callee not in fused:
          fused.add(callee)
          frontier.append(callee)
  return dict(mult), fused, warnings


def group_size(line: str, partitions: int) -> int:
  """Devices in one replica group of a collective."""
  m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
  if m:
    sizes = dict((k, int(v)) for k, v in re.findall(r"'([^']+)'=(\d+)", m.group(1)))
    return math.prod(sizes[a] for a in re.findall(r"'([^']+)'", m.group(2)))
  m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
  if m:
    return int(m.group(2))
  m = re.search(r"replica_groups=\{\{([^}]*)\}", line)
  if m:
    return len(m.group(1).split(","))
  if re.search(r"source_target_pairs=", line):
    return 2
  return partitions


def collective_bytes(ins: Instr, partitions: int) -> tuple[str, int, float]:
  """(kind, group size, bytes one device receives) of a collective instruction."""
  kind = next(k for k in _COLLECTIVES if ins.opcode.startswith(k))
  n = group_size(ins.line, partitions)
  parts = _top_level(ins.type_text)
  if ins.opcode.endswith("-start") and len(parts) >= 2 and kind != "all-reduce":
    # (operands, outputs[, context...]): the outputs are the second element.
    out = sum(array_bytes(parts[1]))
  else:
    out = sum(array_bytes(ins.type_text))
  if n <= 1:
    return kind, n, 0.0
  frac = (n - 1) / n
  if kind == "all-gather":
    moved = out * frac
  elif kind == "reduce-scatter":
    moved = out * n * frac
  elif kind == "all-reduce":
    moved = 2 * out * frac
  elif kind == "all-to-all":
    moved = out * frac
  else:  # collective-permute
    moved = out
  return kind, n, moved


@dataclasses.dataclass
class TimeEstimate:
  """The cost-model time of one execution of a compiled TPU program.

  ``compute_s``: estimated cycles x trip counts / clock. ``compute_once_s``: the same with
  every loop body counted once (comparable with ``optimal_seconds``, which does so too).
  ``comm_s``: collectives' bytes / ICI bandwidth, x trip counts. ``comm_bytes``: bytes one
  device receives. ``by_kind``: {collective kind: (count per execution, bytes, seconds)}.
  ``top``: the largest compute contributors, (seconds x count, count, name, op_name).
  """
  compute_s: float
  compute_once_s: float
  comm_s: float
  comm_bytes: float
  optimal_seconds: float | None
  loops: list[tuple[str, int | None]]
  by_kind: dict[str, tuple[float, float, float]]
  top: list[tuple[float, float, str, str]]
  warnings: list[str]

  @property
  def step_s(self) -> float:
    """No overlap of communication and compute (the estimate MFU uses)."""
    return self.compute_s + self.comm_s

  @property
  def overlapped_s(self) -> float:
    return max(self.compute_s, self.comm_s)

  def to_dict(self) -> dict[str, Any]:
    return {"compute_s": self.compute_s, "compute_once_s": self.compute_once_s,
            "comm_s": self.comm_s, "comm_bytes": self.comm_bytes, "step_s": self.step_s,
            "overlapped_s": self.overlapped_s, "optimal_seconds": self.optimal_seconds,
            "loops": self.loops, "by_kind": self.by_kind,
            "top": [list(t) for t in self.top[:12]], "warnings": self.warnings}


def _op_name(line: str) -> str:
  m = re.search(r'op_name="([^"]*)"', line)
  return m.group(1) if m else ""


def estimate(hlo_text: str, kind: str, *, optimal_seconds: float | None = None,
             devices_per_chip: int = 1, top: int = 25) -> TimeEstimate:
  """The cost-model time of a compiled XLA:TPU module (``compiled.as_text()``) for TPU
  generation ``kind`` ("v5p"); see the module docstring. ``devices_per_chip``: 2 for v4,
  whose compile-only devices are TensorCores sharing one chip's interconnect."""
  comps, entry, partitions = parse_module(hlo_text)
  if not entry:
    raise ValueError("no ENTRY computation in the HLO text")
  mult, fused, warnings = multiplicities(comps, entry)
  clock = TPU_CLOCK_HZ[kind]
  ici = TPU_ICI_BYTES_PER_S[kind] / devices_per_chip
  compute = once = comm = comm_bytes = 0.0
  by_kind: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
  contrib: dict[tuple[str, str], list[float]] = {}
  loops = []
  for comp, instrs in comps.items():
    m = mult.get(comp, 0.0)
    if m == 0:
      continue
    for ins in instrs:
      if ins.opcode == "while":
        loops.append((ins.name, trip_count(ins, comps)))
      if any(ins.opcode == k or ins.opcode == k + "-start" for k in _COLLECTIVES):
        ck, _, moved = collective_bytes(ins, partitions)
        comm_bytes += m * moved
        comm += m * moved / ici
        by_kind[ck][0] += m
        by_kind[ck][1] += m * moved
        by_kind[ck][2] += m * moved / ici
        continue
      if comp in fused:
        continue
      c = _CYCLES.search(ins.line)
      if not c:
        continue
      sec = int(c.group(1)) / clock
      compute += m * sec
      once += sec
      key = (ins.name, _op_name(ins.line))
      contrib[key] = [m * sec, m]
  ranked = sorted(((v[0], v[1], k[0], k[1]) for k, v in contrib.items()), reverse=True)
  return TimeEstimate(compute_s=compute, compute_once_s=once, comm_s=comm,
                      comm_bytes=comm_bytes, optimal_seconds=optimal_seconds, loops=loops,
                      by_kind={k: tuple(v) for k, v in by_kind.items()},
                      top=ranked[:top], warnings=warnings)


# ------------------------------------------------------------------------------ a step

PAPER_STEPS = 13_000   # the paper's budget: 13k steps at a global batch of 512


def mfu(model_flops: float, step_s: float, devices: int, peak_flops: float) -> float:
  """Model FLOPs utilisation: the step's model FLOPs (all devices) / (step time x devices
  x each device's peak FLOP/s)."""
  return float(model_flops) / (float(step_s) * int(devices) * float(peak_flops))


def chip_hours(step_s: float, chips: float, steps: int = PAPER_STEPS) -> float:
  return float(step_s) * steps * float(chips) / 3600.0


def step_estimate(row, target, hlo_text: str | None = None) -> dict[str, Any]:
  """The time estimate of a planned training step (``memory_plan.plan``'s row, compiled
  for the TPU ``target``): :func:`estimate` of its compiled HLO, MFU from the row's model
  FLOPs (the analytic count, ``perf.flops.step_flops``, without remat's recompute) and
  hardware FLOPs utilisation from its hardware FLOPs, both against the no-overlap time
  (and MFU at the overlapped time), and the paper's 13k steps in chip-hours."""
  if target.platform != "tpu":
    raise ValueError(f"the time estimate reads XLA:TPU's cost model; target {target.spec} "
                     f"is {target.platform}")
  if row.error:
    raise ValueError(f"the step does not compile for {target.spec}: {row.error}")
  text = row.compiled.as_text() if hlo_text is None else hlo_text
  gen = targets_gen(target)
  est = estimate(text, target.kind, optimal_seconds=row.optimal_seconds,
                 devices_per_chip=gen.devices_per_chip)
  peak = target.peak_flops["bfloat16"]
  chips = target.num_devices / gen.devices_per_chip
  out = est.to_dict()
  out.update(
      model_flops=row.model_flops, hardware_flops=row.analytic_flops,
      peak_flops_per_device=peak, devices=target.num_devices, chips=chips,
      mfu=mfu(row.model_flops, est.step_s, target.num_devices, peak),
      mfu_overlapped=mfu(row.model_flops, est.overlapped_s, target.num_devices, peak),
      hfu=mfu(row.analytic_flops, est.step_s, target.num_devices, peak),
      chip_hours=chip_hours(est.step_s, chips),
      clock_hz=TPU_CLOCK_HZ[target.kind], ici_bytes_per_s=TPU_ICI_BYTES_PER_S[target.kind])
  return out


def targets_gen(target):
  from tokendrift_jax.perf import targets  # pylint: disable=import-outside-toplevel
  return targets._TPU[target.kind]  # pylint: disable=protected-access


def format_estimate(t: dict[str, Any]) -> str:
  """Lines printed by ``launch/plan_memory.py --time``."""
  lines = [
      f"XLA:TPU cost model, loop trip counts applied: compute {t['compute_s']:.4g} s "
      f"(every loop body once: {t['compute_once_s']:.4g} s; XLA's optimal_seconds "
      + ("none: its model did not price this program"
         if t['optimal_seconds'] is None else f"{t['optimal_seconds']:.4g} s")
      + f"), collectives {t['comm_s']:.4g} s "
      f"({t['comm_bytes'] / 1e9:.3g} GB received per device over "
      f"{t['ici_bytes_per_s'] / 1e9:.0f} GB/s ICI)",
      f"estimated step {t['step_s']:.4g} s (no overlap; {t['overlapped_s']:.4g} s if "
      f"collectives hid behind compute); MFU {100 * t['mfu']:.1f} % "
      f"({100 * t['mfu_overlapped']:.1f} % overlapped), hardware FLOPs utilisation "
      f"{100 * t['hfu']:.1f} %; model {t['model_flops']:.4g} FLOPs/step on "
      f"{t['devices']} x {t['peak_flops_per_device'] / 1e12:.0f} TFLOP/s",
      f"paper budget ({PAPER_STEPS} steps): {t['chip_hours']:.0f} chip-hours "
      f"({t['chip_hours'] / t['chips']:.1f} h on {t['chips']:g} chips)",
      "loops (trip counts): " + ", ".join(f"{n}={k}" for n, k in t["loops"]),
      "collectives per step: " + ", ".join(
          f"{k} x{v[0]:.0f} {v[1] / 1e9:.3g} GB {v[2]:.3g} s" for k, v in t["by_kind"].items()),
      "largest compute (s per step, runs, instruction, op):"]
  for s, n, name, op in t["top"][:8]:
    lines.append(f"  {s:.4f} s  x{n:.0f}  {name}  {op[-90:]}")
  lines += [f"warning: {w}" for w in t["warnings"]]
  return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
  """docs/SCALING.md's "Time on TPU" table from ``plan_memory.py --time --out`` rows."""
  head = ("| config | target | mesh (d, f, t) | seqs / micro-step | L | remat | scan | "
          "compute s | collectives s | est. step s | MFU % | MFU % overlapped | "
          "chip-hours (13k steps) | peak GiB | fits |")
  lines = [head, "|" + "---|" * 15]
  for r in rows:
    t = r["time"]
    remat = (r.get("remat_policy") or "nothing_saveable") if r["remat"] else "no"
    peak = "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}"
    lines.append(
        f"| {r['config'].removesuffix('.py')} | {r['target']} | {tuple(r['mesh'])} | "
        f"{r['micro_batch_per_shard'] * r['mesh'][0] * r['mesh'][1]} | {r['length']} | "
        f"{remat} | {'yes' if r.get('scan_layers', True) else 'no'} | "
        f"{t['compute_s']:.3f} | {t['comm_s']:.3f} | {t['step_s']:.3f} | "
        f"{100 * t['mfu']:.1f} | {100 * t['mfu_overlapped']:.1f} | {t['chip_hours']:.0f} | "
        f"{peak} | {'yes' if all(r['fits'].values()) else 'no'} |")
  return "\n".join(lines)


if __name__ == "__main__":
  import json
  import sys
  with open(sys.argv[1], encoding="utf-8") as f:
    print(markdown([json.loads(line) for line in f if line.strip()]))
