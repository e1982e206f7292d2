"""Evaluation outputs: results.json / results.md, samples.jsonl, and the compare table.

Aggregation (Tables 1-2 of the paper, "mean ± SD over 3 seeds"): for every NFE, the mean
and the sample standard deviation (ddof = 1, as ``torch.std``) over seeds of the per-seed
Gen-PPL and entropy; the per-seed values are kept in results.json so any other statistic
can be recomputed. With one seed the SD is undefined and is written as null / omitted.

Every file is written atomically (a temporary file in the same directory, then
``os.replace``), so a crash never leaves a partial file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Iterable, Sequence

FORMAT = "tokendrift_jax.eval/v1"
COMPARE_FORMAT = "tokendrift_jax.compare/v1"
METRICS = ("gen_ppl", "entropy")
HEADERS = {"gen_ppl": "Gen.-PPL ↓", "entropy": "Entropy ↑"}


class ReportError(ValueError):
  """Unreadable or inconsistent results."""


# ----------------------------------------------------------------------------- io


def _atomic_write(path: str, write) -> None:
  directory = os.path.dirname(os.path.abspath(path)) or "."
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text(path: str, text: str) -> None:
  _atomic_write(path, lambda f: f.write(text))


def write_json(path: str, payload: Any) -> None:
  _atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2, allow_nan=False) + "\n"))


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  def write(f):
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")
  _atomic_write(path, write)


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- stats


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
  """(mean, sample SD with ddof = 1, or None for a single value)."""
  n = len(values)
  if n == 0:
    raise ReportError("mean ± SD of an empty list")
  mean = math.fsum(values) / n
  if n == 1:
    return mean, None
  return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def summarize(rows: Sequence[dict]) -> list[dict]:
  """Per-NFE mean ± SD over seeds of the (NFE, seed) rows, in increasing NFE.

  Returns:
    dicts with nfe, num_seeds, seeds, num_samples, and for each metric m: m_mean, m_sd
    (None with one seed), m_values (per seed, in seed order).
  """
  if not rows:
    raise ReportError("no result rows: the sample set is empty")
  by_nfe: dict[int, list[dict]] = {}
  for r in rows:
    by_nfe.setdefault(int(r["nfe"]), []).append(r)
  out = []
  for nfe in sorted(by_nfe):
    group = sorted(by_nfe[nfe], key=lambda r: int(r["seed"]))
    seeds = [int(r["seed"]) for r in group]
    if len(set(seeds)) != len(seeds):
      raise ReportError(f"NFE {nfe} has repeated seeds {seeds}")
    entry = dict(nfe=nfe, num_seeds=len(group), seeds=seeds,
                 num_samples=sorted({int(r["num_samples"]) for r in group}))
    for m in METRICS:
      values = [float(r[m]) for r in group]
      entry[f"{m}_mean"], entry[f"{m}_sd"] = mean_sd(values)
      entry[f"{m}_values"] = values
    out.append(entry)
  return out


# ----------------------------------------------------------------------------- tables


def fmt(mean: float | None, sd: float | None) -> str:
  """'1942.33 ± 66.80' (two decimals, as the paper's tables); '—' when missing."""
  if mean is None:
    return "—"
  return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def markdown_table(entries: Sequence[tuple[str, Sequence[dict]]], *, bold_best: bool = True
                   ) -> str:
  """A Tables 1-2 shaped markdown table.

  Args:
    entries: (method label, :func:`summarize` output) per row of the table.
    bold_best: bold the lowest mean Gen-PPL of each NFE column (with >= 2 rows).

  One column pair (Gen.-PPL, entropy) per NFE present in any entry; a run without that
  NFE shows "—".
  """
  if not entries:
    raise ReportError("a table needs at least one run")
  nfes = sorted({int(s["nfe"]) for _, summary in entries for s in summary})
  lookup = [{int(s["nfe"]): s for s in summary} for _, summary in entries]
  best = {}
  if bold_best and len(entries) > 1:
    for nfe in nfes:
      vals = [(lk[nfe]["gen_ppl_mean"], i) for i, lk in enumerate(lookup) if nfe in lk]
      if vals:
        best[nfe] = min(vals)[1]
  head = "| Method | " + " | ".join(
      f"NFE = {n} {HEADERS[m]}" for n in nfes for m in METRICS) + " |"
  sep = "|---|" + "---|" * (len(nfes) * len(METRICS))
  lines = [head, sep]
  for i, (label, _) in enumerate(entries):
    cells = []
    for nfe in nfes:
      s = lookup[i].get(nfe)
      for m in METRICS:
        cell = fmt(None, None) if s is None else fmt(s[f"{m}_mean"], s[f"{m}_sd"])
        if m == "gen_ppl" and best.get(nfe) == i:
          cell = f"**{cell}**"
        cells.append(cell)
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _seeds_note(summary: Sequence[dict]) -> str:
  n_seeds = sorted({s["num_seeds"] for s in summary})
  n_samples = sorted({n for s in summary for n in s["num_samples"]})
  per = f"{'/'.join(map(str, n_samples))} samples per (NFE, seed)"
  if max(n_seeds) == 1:
    return f"Values are from a single seed (no SD), {per}."
  return (f"Values are mean ± SD (ddof = 1) over {'/'.join(map(str, n_seeds))} seeds, "
          f"{per}.")


def results_markdown(payload: dict) -> str:
  """results.md of one evaluation run."""
  summary = payload["summary"]
  judge = payload.get("judge", {})
  lines = [f"# Sample evaluation: {payload['label']}", "",
           markdown_table([(payload["label"], summary)], bold_best=False),
           _seeds_note(summary) + f" Backbone: {payload.get('arch')} "
           f"(`{payload.get('checkpoint')}`); judge: {judge.get('kind')} "
           f"`{judge.get('name')}`" + (f" ({judge['dtype']})" if judge.get("dtype") else "")
           + "; NFE = denoising steps.",
           "", "| NFE | seed | Gen.-PPL | entropy | samples | backbone forwards / batch |",
           "|---|---|---|---|---|---|"]
  for r in payload["rows"]:
    lines.append(f"| {r['nfe']} | {r['seed']} | {r['gen_ppl']:.2f} | {r['entropy']:.3f} | "
                 f"{r['num_samples']} | {r['nfe_model']:.2f} |")
  return "\n".join(lines) + "\n"


def results_payload(rows: Sequence[dict], *, label: str, checkpoint: str, arch: str,
                    meta: dict, judge: dict, sampling: dict, config: dict) -> dict:
  """The content of results.json."""
  return {"format": FORMAT, "label": label, "checkpoint": checkpoint, "arch": arch,
          "meta": meta, "judge": judge, "sampling": sampling, "config": config,
          "rows": list(rows), "summary": summarize(rows)}


def read_results(run_dir: str) -> dict:
  """RUN_DIR/results.json, checked."""
  path = os.path.join(run_dir, "results.json")
  if not os.path.isfile(path):
    raise ReportError(f"{path} does not exist; run `python launch/eval.py "
                      f"--config=configs/eval.py --workdir={run_dir} ...` first")
  try:
    with open(path, encoding="utf-8") as f:
      payload = json.load(f)
  except json.JSONDecodeError as e:
    raise ReportError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(payload, dict) or payload.get("format") != FORMAT:
    raise ReportError(f"{path} is not a results file of launch/eval.py (format "
                      f"{payload.get('format') if isinstance(payload, dict) else None!r})")
  if not payload.get("rows"):
    raise ReportError(f"{path} has no result rows (empty sample set)")
  payload["summary"] = summarize(payload["rows"])
  return payload


# ----------------------------------------------------------------------------- compare


def compare(results: Sequence[dict], labels: Sequence[str] | None = None) -> tuple[dict, str]:
  """Assembles several runs of one backbone into one Tables 1-2 style table.

  Args:
    results: results.json payloads (e.g. released / continuation / TokenDrift).
    labels: row labels (default: each run's label).

  Returns:
    (compare.json payload, compare.md text).

  Raises:
    ReportError: no runs, a label count mismatch, or runs of different backbones.
  """
  if not results:
    raise ReportError("compare needs at least one run directory")
  if labels is None:
    labels = [r["label"] for r in results]
  if len(labels) != len(results):
    raise ReportError(f"{len(labels)} labels for {len(results)} runs")
  arches = sorted({str(r.get("arch")) for r in results})
  if len(arches) > 1:
    raise ReportError(f"the runs are of different backbones {arches}: Tables 1-2 compare "
                      f"runs of one backbone")
  notes = []
  for key in ("judge", "sampling"):
    seen = {json.dumps({k: v for k, v in r.get(key, {}).items()
                        if k not in ("batch",)}, sort_keys=True) for r in results}
    if len(seen) > 1:
      notes.append(f"the runs differ in their {key} settings: "
                   + "; ".join(f"{lab}: {json.dumps(r.get(key))}"
                               for lab, r in zip(labels, results)))
  entries = [(lab, r["summary"]) for lab, r in zip(labels, results)]
  table = markdown_table(entries)
  first = results[0]
  md = [f"# {first.get('arch', '').upper()} few-step generation", "", table,
        _seeds_note([s for _, summ in entries for s in summ])
        + f" Judge: {first.get('judge', {}).get('kind')} "
          f"`{first.get('judge', {}).get('name')}`; bold = best Gen.-PPL per NFE.", ""]
  md += [f"Note: {n}" for n in notes]
  payload = {"format": COMPARE_FORMAT, "arch": arches[0],
             "runs": [{"label": lab, "checkpoint": r.get("checkpoint"),
                       "judge": r.get("judge"), "sampling": r.get("sampling"),
                       "summary": r["summary"]} for lab, r in zip(labels, results)],
             "notes": notes}
  return payload, "\n".join(md).rstrip() + "\n"
