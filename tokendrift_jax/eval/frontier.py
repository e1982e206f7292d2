"""Gen-PPL read at matched entropy: the Gen-PPL–entropy frontier of a temperature sweep.

Gen-PPL alone rewards low entropy: sampling the *same* model colder (temperature τ < 1)
lowers both. So a method is compared with another at the same entropy. For one method, NFE
and seed, sampling at several temperatures gives points (entropy_τ, Gen-PPL_τ); the
frontier is the piecewise-linear curve through them in (entropy, log Gen-PPL), in
increasing entropy, and

  Gen-PPL@H = exp(log G_a + (H − H_a) / (H_b − H_a) · (log G_b − log G_a))

for the two neighbouring points a, b with H_a ≤ H ≤ H_b. Outside the swept entropy range
the value is None: a frontier is never extrapolated. The reference entropy H of a
comparison is the pretrained model's at τ = 1 (per NFE, mean over seeds), so "Gen-PPL at
the released model's entropy" asks what each method gives when it is made exactly as
diverse as the model it refines.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from tokendrift_jax.eval import report


def at_entropy(points: Sequence[tuple[float, float]], target: float) -> float | None:
  """Gen-PPL at entropy ``target`` on the frontier through ``points`` [(entropy, gen_ppl)],
  linear in log Gen-PPL between the neighbouring points; None outside their range.

  Points of equal entropy are averaged (in log Gen-PPL) first. Needs Gen-PPL > 0.
  """
  pts = sorted((float(h), float(g)) for h, g in points)
  if not pts or not math.isfinite(target):
    return None
  if any(g <= 0 or not math.isfinite(g) or not math.isfinite(h) for h, g in pts):
    raise ValueError(f"frontier points need finite entropy and Gen-PPL > 0, got {pts}")
  merged: dict[float, list[float]] = {}
  for h, g in pts:
    merged.setdefault(h, []).append(math.log(g))
  hs = sorted(merged)
  logs = [sum(merged[h]) / len(merged[h]) for h in hs]
  if not hs[0] <= target <= hs[-1]:
    return None
  for i in range(len(hs) - 1):
    if hs[i] <= target <= hs[i + 1]:
      w = (target - hs[i]) / (hs[i + 1] - hs[i])
      return math.exp(logs[i] + w * (logs[i + 1] - logs[i]))
  return math.exp(logs[0])  # a single point, exactly at the target


def reference_entropy(rows: Sequence[dict], temperature: float = 1.0) -> dict[int, float]:
  """{nfe: mean entropy over seeds} of the rows sampled at ``temperature``."""
  by_nfe: dict[int, list[float]] = {}
  for r in rows:
    if float(r.get("temperature", 1.0)) == temperature:
      by_nfe.setdefault(int(r["nfe"]), []).append(float(r["entropy"]))
  return {n: float(np.mean(v)) for n, v in sorted(by_nfe.items())}


def matched(rows: Sequence[dict], reference: Mapping[int, float]) -> list[dict]:
  """Per NFE: Gen-PPL at the reference entropy, per seed (each seed's own sweep) and as
  mean ± SD over the seeds whose sweep covers it.

  Args:
    rows: (NFE, seed, temperature) rows of one method (``nfe``, ``seed``, ``temperature``,
      ``entropy``, ``gen_ppl``).
    reference: {nfe: target entropy} (:func:`reference_entropy` of the pretrained model).

  Returns:
    dicts with nfe, entropy (the target), values (per seed, None where the sweep does not
    reach the target), seeds, covered (how many seeds reach it), mean and sd (None when no
    seed, resp. fewer than two, reach it).
  """
  out = []
  for nfe, target in sorted(reference.items()):
    by_seed: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
      if int(r["nfe"]) == nfe:
        by_seed.setdefault(int(r["seed"]), []).append((float(r["entropy"]),
                                                       float(r["gen_ppl"])))
    seeds = sorted(by_seed)
    values = [at_entropy(by_seed[s], target) for s in seeds]
    got = [v for v in values if v is not None]
    mean, sd = report.mean_sd(got) if got else (None, None)
    out.append(dict(nfe=nfe, entropy=target, seeds=seeds, values=values, covered=len(got),
                    mean=mean, sd=sd))
  return out


def against_reference(rows: Sequence[dict], reference_rows: Sequence[dict],
                      temperature: float = 1.0) -> list[dict]:
  """The other direction of the matched reading: the reference model's (pretrained) frontier
  read at the entropy of each of the method's own points, same NFE and seed.

  A method that lowers entropy (TokenDrift) may leave the pretrained model's entropy out of
  its own sweep's reach; the pretrained model's sweep, cooled far enough, reaches the
  method's entropy instead. ratio < 1: the method's sample is better than the pretrained
  model sampled colder to the same entropy.

  Args:
    rows: the method's (NFE, seed, temperature) rows; its points at ``temperature`` are read.
    reference_rows: the reference model's rows, the whole sweep of each seed.

  Returns:
    per NFE: nfe, seeds, entropy (the method's, per seed), gen_ppl (the method's), at
    (the reference frontier's Gen-PPL there, None out of its range), ratio (gen_ppl / at,
    None likewise), covered, and ratio_mean / ratio_sd over the covered seeds (None when
    none, resp. fewer than two).
  """
  sweep: dict[tuple[int, int], list[tuple[float, float]]] = {}
  for r in reference_rows:
    sweep.setdefault((int(r["nfe"]), int(r["seed"])), []).append(
        (float(r["entropy"]), float(r["gen_ppl"])))
  own: dict[int, dict[int, tuple[float, float]]] = {}
  for r in rows:
    if float(r.get("temperature", 1.0)) == temperature:
      own.setdefault(int(r["nfe"]), {})[int(r["seed"])] = (float(r["entropy"]),
                                                           float(r["gen_ppl"]))
  out = []
  for nfe in sorted(own):
    seeds = sorted(own[nfe])
    ent = [own[nfe][s][0] for s in seeds]
    ppl = [own[nfe][s][1] for s in seeds]
    at = [at_entropy(sweep.get((nfe, s), []), h) for s, h in zip(seeds, ent)]
    ratio = [None if a is None else g / a for g, a in zip(ppl, at)]
    got = [x for x in ratio if x is not None]
    mean, sd = report.mean_sd(got) if got else (None, None)
    out.append(dict(nfe=nfe, seeds=seeds, entropy=ent, gen_ppl=ppl, at=at, ratio=ratio,
                    covered=len(got), ratio_mean=mean, ratio_sd=sd))
  return out


def _cell(mean: float | None, sd: float | None, covered: int, seeds: int) -> str:
  """A table cell: mean ± SD over the covered seeds, "k/n seeds" when some are not
  covered, "out of range" when none is."""
  if mean is None:
    return "out of range"
  cell = report.fmt(mean, sd)
  return cell + (f" ({covered}/{seeds} seeds)" if covered < seeds else "")


def against_reference_markdown(readings: Sequence[tuple[str, Sequence[dict]]],
                               reference: str) -> str:
  """One row per method, per NFE: its own τ = 1 Gen-PPL over ``reference``'s Gen-PPL at the
  same entropy (mean ± SD over the covered seeds; "k/n seeds" when some are out of range).

  ``readings``: (label, :func:`against_reference` of the method) per row."""
  nfes = sorted({r["nfe"] for _, rs in readings for r in rs})
  head = "| Method | " + " | ".join(
      f"NFE = {n}: Gen.-PPL / {reference}'s at its entropy ↓" for n in nfes) + " |"
  lines = [head, "|" + "---|" * (len(nfes) + 1)]
  for label, rs in readings:
    by = {r["nfe"]: r for r in rs}
    cells = []
    for n in nfes:
      r = by.get(n)
      cells.append("out of range" if r is None else
                   _cell(r["ratio_mean"], r["ratio_sd"], r["covered"], len(r["seeds"])))
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def curves(rows: Sequence[dict]) -> dict[int, list[tuple[float, float, float]]]:
  """{nfe: [(temperature, mean entropy, mean Gen-PPL) over seeds]}, in temperature order:
  the points a frontier plot draws."""
  groups: dict[tuple[int, float], list[dict]] = {}
  for r in rows:
    groups.setdefault((int(r["nfe"]), float(r.get("temperature", 1.0))), []).append(r)
  out: dict[int, list[tuple[float, float, float]]] = {}
  for (nfe, tau), group in sorted(groups.items()):
    out.setdefault(nfe, []).append((tau, float(np.mean([g["entropy"] for g in group])),
                                    float(np.mean([g["gen_ppl"] for g in group]))))
  return out


def markdown(methods: Sequence[tuple[str, Sequence[dict]]], reference: Mapping[int, float],
             *, own: str | None = None) -> str:
  """The matched-entropy table: one row per method, per NFE its Gen-PPL at the reference
  entropy (mean ± SD over the seeds that reach it, "k/n seeds" when some do not).

  ``own``: the label of the run that defines the reference entropy, when it has no sweep:
  its row shows its own Gen-PPL (the reference entropy is its mean entropy by definition;
  single points per seed would read "out of range")."""
  nfes = sorted(reference)
  head = "| Method | " + " | ".join(
      f"NFE = {n} Gen.-PPL @ H = {reference[n]:.2f} ↓" for n in nfes) + " |"
  lines = [head, "|" + "---|" * (len(nfes) + 1)]
  for label, rows in methods:
    cells = []
    if label == own:
      for nfe in nfes:
        mean, sd = report.mean_sd([float(r["gen_ppl"]) for r in rows if int(r["nfe"]) == nfe])
        cells.append(f"{report.fmt(mean, sd)} (reference)")
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
      continue
    for m in matched(rows, reference):
      cells.append(_cell(m["mean"], m["sd"], m["covered"], len(m["seeds"])))
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)



def compare_runs(entries: Sequence[tuple[str, dict]], reference: str) -> tuple[dict, str]:
  """The matched-entropy reading of evaluated runs (results.json payloads).

  Args:
    entries: (label, payload) per run; a run with a temperature sweep gives a frontier, a
      run without one a single point per (NFE, seed) (read only where it hits the target).
    reference: the label of the run whose entropy at its own temperature (per NFE, mean
      over seeds) is the target (the released model, as the paper's comparison asks).

  Returns:
    ({"reference", "entropy": {nfe: H}, "methods": {label: :func:`matched` output}},
     the markdown section). ValueError when the reference is not among the labels.
  """
  labels = [lab for lab, _ in entries]
  if reference not in labels:
    raise ValueError(f"--reference {reference!r} is not one of the runs' labels {labels}")
  ref = dict(entries)[reference]
  target = reference_entropy(ref["rows"], report.own_temperature(ref))
  methods = [(lab, r["rows"]) for lab, r in entries]
  sweeps = {lab: report.temperatures(r["rows"]) for lab, r in entries}
  md = ["## At matched entropy", "",
        f"Gen.-PPL of each run's temperature sweep read at the entropy of {reference} at its "
        f"own temperature (per NFE, mean over seeds; each seed's frontier interpolated "
        f"linearly in log Gen.-PPL, never extrapolated: \"out of range\" where a sweep does "
        f"not reach it). Temperatures: "
        + "; ".join(f"{lab}: {', '.join(f'{t:g}' for t in ts)}" for lab, ts in sweeps.items())
        + ".", "", markdown(methods, target,
                            own=reference if len(sweeps[reference]) == 1 else None)]
  payload = {"reference": reference, "entropy": {str(n): h for n, h in target.items()},
             "temperatures": sweeps,
             "methods": {lab: matched(rows, target) for lab, rows in methods}}
  return payload, "\n".join(md) + "\n"
