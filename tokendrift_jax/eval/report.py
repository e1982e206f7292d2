"""Evaluation reports: the results.json payload, results.md, and the compare table.

Aggregation (Tables 1-2 of the paper, "mean ± SD over 3 seeds"): for every NFE, the mean
and the sample standard deviation (ddof = 1, as ``torch.std``) over seeds of the per-seed
Gen-PPL and entropy; the per-seed values are kept in results.json so any other statistic
can be recomputed. With one seed the SD is undefined and is written as null / omitted.

This module builds contents only; :mod:`.files` writes them (atomically).

results.json records the backbone as ``process`` ("mdlm" | "duo") and ``family`` (the model
registry key, "dit"); files written before that record ``arch`` (the process), which
:func:`run_process` still reads.
"""

from __future__ import annotations

import json
import math
import os
from typing import Sequence

FORMAT = "tokendrift_jax.eval/v1"
COMPARE_FORMAT = "tokendrift_jax.compare/v1"
METRICS = ("gen_ppl", "entropy")
HEADERS = {"gen_ppl": "Gen.-PPL ↓", "entropy": "Entropy ↑"}


class ReportError(ValueError):
  """Unreadable or inconsistent results."""


def run_process(payload: dict) -> str | None:
  """The diffusion process of a results.json payload (``arch`` in files of older versions)."""
  return payload.get("process", payload.get("arch"))


def own_temperature(payload: dict) -> float:
  """The temperature a run's summary reads: its sampler's own (1 for MDLM/DUO; files
  without a temperature sweep were all sampled at it)."""
  return float(payload.get("sampling", {}).get("temperature", 1.0))


def temperatures(rows: Sequence[dict]) -> list[float]:
  """The sampling temperatures of result rows, increasing (rows without one: τ = 1)."""
  return sorted({float(r.get("temperature", 1.0)) for r in rows})


def rows_at(rows: Sequence[dict], temperature: float) -> list[dict]:
  """The rows sampled at ``temperature``."""
  return [r for r in rows if float(r.get("temperature", 1.0)) == temperature]


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


def refinement_curve_stats(per_seed: dict, nfe: int, metric: str
                           ) -> list[tuple[int, float, float | None, int]]:
  """(step, mean, SD with ddof = 1 or None, seeds) per step of one method at one NFE.

  Args:
    per_seed: seed -> eval.jsonl rows (step, nfe, gen_ppl, entropy, ...) of one method.
    nfe: the NFE to read.
    metric: "gen_ppl" or "entropy".

  Only the steps every seed has are kept (a mean over a changing set of seeds would jump).
  """
  by_seed = {}
  for seed, rows in per_seed.items():
    by_seed[seed] = {int(r["step"]): float(r[metric]) for r in rows if int(r["nfe"]) == nfe}
  if not by_seed:
    return []
  steps = sorted(set.intersection(*(set(v) for v in by_seed.values())))
  out = []
  for step in steps:
    mean, sd = mean_sd([v[step] for v in by_seed.values()])
    out.append((step, mean, sd, len(by_seed)))
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


def curves_markdown(methods: Sequence[tuple[str, dict]], nfe: int) -> str:
  """The refinement curves at one NFE as a table (the numbers of ``curves_nfe{N}.png``).

  Args:
    methods: (label, {seed: eval.jsonl rows}) per method.
    nfe: the NFE to read.

  One row per step any method has, one (Gen.-PPL, entropy) column pair per method with
  the mean ± SD over seeds of :func:`refinement_curve_stats` ("—" where a method has no
  such step, e.g. a baseline run for more steps).
  """
  stats = [(label, {m: {s[0]: s for s in refinement_curve_stats(per_seed, nfe, m)}
                    for m in METRICS}) for label, per_seed in methods]
  steps = sorted({st for _, by in stats for st in by["gen_ppl"]})
  if not steps:
    raise ReportError(f"no refinement-curve rows at NFE {nfe}")
  seeds = [len(per_seed) for _, per_seed in methods]
  head = "| step | " + " | ".join(
      f"{label} ({n} seed{'s' if n != 1 else ''}) {HEADERS[m]}"
      for (label, _), n in zip(stats, seeds) for m in METRICS) + " |"
  lines = [head, "|---|" + "---|" * (len(stats) * len(METRICS))]
  for step in steps:
    cells = []
    for _, by in stats:
      for m in METRICS:
        s = by[m].get(step)
        cells.append(fmt(None, None) if s is None else fmt(s[1], s[2]))
    lines.append(f"| {step} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _seeds_note(summary: Sequence[dict]) -> str:
  num_seeds = sorted({s["num_seeds"] for s in summary})
  num_samples = sorted({n for s in summary for n in s["num_samples"]})
  per = f"{'/'.join(map(str, num_samples))} samples per (NFE, seed)"
  if max(num_seeds) == 1:
    return f"Values are from a single seed (no SD), {per}."
  return (f"Values are mean ± SD (ddof = 1) over {'/'.join(map(str, num_seeds))} seeds, "
          f"{per}.")


def results_markdown(payload: dict) -> str:
  """results.md of one evaluation run."""
  summary = payload["summary"]
  judge = payload.get("judge", {})
  taus = temperatures(payload["rows"])
  family = f"{payload['family']}, " if payload.get("family") else ""
  lines = [f"# Sample evaluation: {payload['label']}", "",
           markdown_table([(payload["label"], summary)], bold_best=False),
           _seeds_note(summary) + f" Backbone: {run_process(payload)} "
           f"({family}`{payload.get('checkpoint')}`); judge: {judge.get('kind')} "
           f"`{judge.get('name')}`" + (f" ({judge['dtype']})" if judge.get("dtype") else "")
           + "; NFE = denoising steps."
           + (f" The table reads the sampler's own temperature τ = "
              f"{own_temperature(payload):g}." if len(taus) > 1 else "")]
  if len(taus) > 1:
    lines += ["", "Temperature sweep (the Gen-PPL–entropy frontier; `launch/compare.py` reads "
              "it at matched entropy):", "",
              markdown_table([(f"τ = {t:g}", summarize(rows_at(payload["rows"], t)))
                              for t in taus], bold_best=False).rstrip()]
  tau_head, tau_sep = ("τ | ", "---|") if len(taus) > 1 else ("", "")
  lines += ["", f"| {tau_head}NFE | seed | Gen.-PPL | entropy | num_samples | nfe_model "
            "(backbone forwards / batch) |", f"|{tau_sep}---|---|---|---|---|---|"]
  for r in payload["rows"]:
    tau = f"{float(r.get('temperature', 1.0)):g} | " if len(taus) > 1 else ""
    lines.append(f"| {tau}{r['nfe']} | {r['seed']} | {r['gen_ppl']:.2f} | {r['entropy']:.3f} | "
                 f"{r['num_samples']} | {r['nfe_model']:.2f} |")
  return "\n".join(lines) + "\n"


def results_payload(rows: Sequence[dict], *, label: str, checkpoint: str, process: str,
                    family: str | None, meta: dict, judge: dict, sampling: dict,
                    config: dict) -> dict:
  """The content of results.json.

  Args:
    rows: the (NFE, seed) rows of :meth:`SampleEvaluator.evaluate` (of a temperature
      sweep: every (NFE, seed, τ); the summary reads ``sampling["temperature"]``'s).
    label: the run's row label in tables.
    checkpoint: the evaluated backbone directory.
    process: its diffusion process ("mdlm" | "duo").
    family: its model family ("dit").
    meta: the checkpoint's metadata.
    judge: :func:`judges.info` of the judge.
    sampling: the sampler settings.
    config: the full evaluation config.
  """
  return {"format": FORMAT, "label": label, "checkpoint": checkpoint, "process": process,
          "family": family, "meta": meta, "judge": judge, "sampling": sampling,
          "config": config, "rows": list(rows),
          "summary": summarize(rows_at(rows, float(sampling.get("temperature", 1.0))))}


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
  own = rows_at(payload["rows"], own_temperature(payload))
  if not own:
    raise ReportError(f"{path} has no rows at its own temperature {own_temperature(payload):g}")
  payload["summary"] = summarize(own)
  return payload


# ----------------------------------------------------------------------------- compare


def compare(results: Sequence[dict], labels: Sequence[str] | None = None,
            run_dirs: Sequence[str] | None = None) -> tuple[dict, str]:
  """Assembles several runs of one backbone into one Tables 1-2 style table.

  Args:
    results: results.json payloads (e.g. released / continuation / TokenDrift).
    labels: row labels (default: each run's label).
    run_dirs: the runs' directories, named in errors.

  Returns:
    (compare.json payload, compare.md text).

  Raises:
    ReportError: no runs, a label count mismatch, two rows with one label, or runs of
      different diffusion processes.
  """
  if not results:
    raise ReportError("compare needs at least one run directory")
  given = labels is not None
  if labels is None:
    labels = [r["label"] for r in results]
  if len(labels) != len(results):
    raise ReportError(f"{len(labels)} labels for {len(results)} runs")
  names = list(run_dirs) if run_dirs is not None else [f"run {i + 1}" for i in range(
      len(results))]
  for j, lab in enumerate(labels):
    first = labels.index(lab)
    if first != j:
      fix = ("give --labels distinct names" if given else
             "label the rows apart with --labels L1 L2 ... (one per RUN_DIR), or evaluate "
             "with --config.label=NAME")
      raise ReportError(f"{fix}: {names[first]} and {names[j]} are both labelled {lab!r}, "
                        f"the table's rows would not tell them apart")
  processes = sorted({str(run_process(r)) for r in results})
  if len(processes) > 1:
    raise ReportError(f"the runs are of different backbones {processes}: Tables 1-2 compare "
                      f"runs of one backbone")
  notes = []
  # Older results.json files record no family (every backbone was a DiT then).
  families = sorted({str(r["family"]) for r in results if r.get("family")})
  if len(families) > 1:
    notes.append("the runs are of different model families: "
                 + "; ".join(f"{lab}: {r.get('family')}" for lab, r in zip(labels, results)))
  for key in ("judge", "sampling"):
    seen = {json.dumps({k: v for k, v in r.get(key, {}).items()
                        if k not in ("batch", "temperatures")}, sort_keys=True)
            for r in results}
    if len(seen) > 1:
      notes.append(f"the runs differ in their {key} settings: "
                   + "; ".join(f"{lab}: {json.dumps(r.get(key))}"
                               for lab, r in zip(labels, results)))
  entries = [(lab, r["summary"]) for lab, r in zip(labels, results)]
  table = markdown_table(entries)
  first = results[0]
  md = [f"# {str(run_process(first) or '').upper()} few-step generation", "", table,
        _seeds_note([s for _, summ in entries for s in summ])
        + f" Judge: {first.get('judge', {}).get('kind')} "
          f"`{first.get('judge', {}).get('name')}`; bold = best Gen.-PPL per NFE.", ""]
  md += [f"Note: {n}" for n in notes]
  payload = {"format": COMPARE_FORMAT, "process": processes[0],
             "runs": [{"label": lab, "checkpoint": r.get("checkpoint"),
                       "judge": r.get("judge"), "sampling": r.get("sampling"),
                       "summary": r["summary"]} for lab, r in zip(labels, results)],
             "notes": notes}
  return payload, "\n".join(md).rstrip() + "\n"
