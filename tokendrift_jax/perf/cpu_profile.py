"""Where an XLA:CPU step spends its time: one traced step, summarised by worker thread.

``launch/benchmark.py --profile`` traces one step of each case after its timing, with
XLA:CPU's per-thunk trace events on (:data:`TRACEME_FLAG`, set before the backend starts),
into a Perfetto trace under ``OUT/profile/`` (``jax.profiler.trace(...,
create_perfetto_trace=True)``), and adds what :func:`summarize` reads from it to the case's
row:

* the step's span, and how long 0, 1, 2, ... worker threads were running a thunk at once;
* per kind of thunk (a fusion's kind, or for library fusions and dots the HLO operation
  they come from, e.g. ``ynn_fusion:dot_general``): total time, and its *solo* time,
  the part during which no other thread ran any thunk.

Only XLA's own threads emit thunk events. A library fusion (YNNPACK's dots) is one thunk
on one of them but runs on the library's own thread pool, which emits none: "one thread
busy" is not "one core idle" (the dots of the 170M step use both cores of a 2-core host;
docs/PERFORMANCE.md measures it with ``taskset``).

Event names are the HLO instruction names of the compiled program, so the kinds are read
from its text (:func:`op_names`). docs/PERFORMANCE.md ("On an idle host") is one reading.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
from typing import Any, Callable, Iterable, NamedTuple

TRACEME_FLAG = "--xla_cpu_enable_xprof_traceme=true"
# Runtime and Python events around the thunks (not work of the program's instructions).
_NOT_THUNKS = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction", "CommonPjRt")
# Thunk kinds whose name says little; the HLO operation they implement is appended.
_BY_OPERATION = ("ynn_fusion", "xnn_fusion", "onednn", "dot", "custom-call")


class Event(NamedTuple):
  tid: Any
  start: float   # microseconds
  end: float
  name: str


def enable_traceme(environ: dict[str, str]) -> None:
  """Adds :data:`TRACEME_FLAG` to ``XLA_FLAGS`` in ``environ`` (before the backend starts)."""
  flags = environ.get("XLA_FLAGS", "")
  if TRACEME_FLAG not in flags.split():
    environ["XLA_FLAGS"] = f"{flags} {TRACEME_FLAG}".strip()


def trace(step: Callable[[], Any], out_dir: str) -> str:
  """Runs ``step()`` (which must block until its results are ready) under the profiler;
  returns the path of the Perfetto trace written below ``out_dir``."""
  import jax  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  with jax.profiler.trace(out_dir, create_perfetto_trace=True):
    step()
  found = sorted(glob.glob(os.path.join(out_dir, "**", "*.trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not found:
    raise RuntimeError(f"jax.profiler wrote no *.trace.json.gz below {out_dir}")
  return found[-1]


def load_events(path: str) -> list[Event]:
  """The thunk events (complete events, ``ph == "X"``) of a Perfetto JSON trace."""
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  raw = data["traceEvents"] if isinstance(data, dict) else data
  return [Event(e.get("tid"), float(e["ts"]), float(e["ts"]) + float(e["dur"]), e["name"])
          for e in raw if e.get("ph") == "X" and "dur" in e
          and not str(e.get("name", "")).startswith(_NOT_THUNKS)]


def op_names(hlo_text: str) -> dict[str, str]:
  """{instruction name: the last component of its ``op_name`` metadata} of an HLO text."""
  return {m.group(1): m.group(2).rsplit("/", 1)[-1]
          for m in re.finditer(r"%([\w.\-]+) = [^\n]*?op_name=\"([^\"]*)\"", hlo_text)}


def kind(name: str, ops: dict[str, str]) -> str:
  """``fusion.12`` -> ``fusion``; library fusions and dots also name their operation."""
  base = re.sub(r"\.\d+$", "", name)
  if base.startswith(_BY_OPERATION):
    return f"{base}:{ops.get(name, '?')}"
  return base


def _merged(intervals: Iterable[tuple[float, float]]) -> list[list[float]]:
  out: list[list[float]] = []
  for a, b in sorted(intervals):
    if out and a <= out[-1][1]:
      out[-1][1] = max(out[-1][1], b)
    else:
      out.append([a, b])
  return out


def _overlap(a: float, b: float, merged: list[list[float]]) -> float:
  return sum(max(0.0, min(b, y) - max(a, x)) for x, y in merged if y > a and x < b)


def summarize(events: list[Event], ops: dict[str, str] | None = None) -> dict[str, Any]:
  """Span, busy-thread histogram and per-kind total / solo times (milliseconds).

  ``busy_ms[k]``: time during the span when exactly k threads ran a thunk. ``solo_ms`` of
  a kind: the part of its events' time when no *other* thread ran one. Nested events on
  one thread (a fusion inside a while loop's body) count once in the histogram.
  """
  ops = ops or {}
  if not events:
    raise ValueError("no thunk events in the trace (was XLA_FLAGS "
                     f"{TRACEME_FLAG} set before the backend started?)")
  by_tid: dict[Any, list[tuple[float, float]]] = collections.defaultdict(list)
  for e in events:
    by_tid[e.tid].append((e.start, e.end))
  merged = {t: _merged(iv) for t, iv in by_tid.items()}
  start = min(e.start for e in events)
  end = max(e.end for e in events)
  points = sorted([(a, 1) for m in merged.values() for a, _ in m]
                  + [(b, -1) for m in merged.values() for _, b in m])
  busy: collections.Counter = collections.Counter()
  level, last = 0, start
  for t, step in points:
    busy[level] += t - last
    level, last = level + step, t
  total: collections.Counter = collections.Counter()
  solo: collections.Counter = collections.Counter()
  for e in events:
    k = kind(e.name, ops)
    total[k] += e.end - e.start
    others = [m for t, m in merged.items() if t != e.tid]
    solo[k] += (e.end - e.start) - sum(_overlap(e.start, e.end, m) for m in others)
  ms = lambda us: us / 1e3
  return {
      "span_ms": ms(end - start), "threads": len(merged),
      "busy_ms": {int(k): ms(v) for k, v in sorted(busy.items())},
      "thunk_ms": ms(sum(total.values())),
      "kinds": [{"kind": k, "total_ms": ms(v), "solo_ms": ms(solo[k])}
                for k, v in sorted(total.items(), key=lambda kv: -kv[1])],
  }


def markdown(summary: dict[str, Any], top: int = 15) -> str:
  busy = ", ".join(f"{k} busy {v:.0f} ms" for k, v in summary["busy_ms"].items())
  lines = [f"step span {summary['span_ms']:.0f} ms on {summary['threads']} threads with "
           f"thunk events ({busy}); thunk time {summary['thunk_ms']:.0f} ms", "",
           "| kind | total ms | solo ms (no other thunk running) |", "|---|---|---|"]
  lines += [f"| {r['kind']} | {r['total_ms']:.1f} | {r['solo_ms']:.1f} |"
            for r in summary["kinds"][:top]]
  return "\n".join(lines)
