"""Figures: the Fig. 2 training curve, the side-by-side comparison of runs and the
refinement curves of several methods (mean ± SD over seeds against training step).

matplotlib with the non-interactive Agg backend (no display needed). Figures are saved
atomically: rendered to a temporary file beside the target, then renamed.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
from matplotlib import ticker  # noqa: E402  pylint: disable=wrong-import-position

from tokendrift_jax.eval import frontier  # noqa: E402  pylint: disable=wrong-import-position
from tokendrift_jax.eval import report  # noqa: E402  pylint: disable=wrong-import-position


def _save(fig, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path)) or "."
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".png",
                             dir=directory)
  os.close(fd)
  try:
    fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  finally:
    plt.close(fig)
  return path


class _PlainLogFormatter(ticker.LogFormatter):
  """Log-axis labels as plain numbers ("300", "1500") instead of 3x10^2; matplotlib still
  decides which ticks get a label (minor ones only on short ranges)."""

  def _num_to_string(self, x, vmin, vmax):
    return f"{x:g}" if x < 1e6 else f"{x:.0e}"


def _log_y(ax) -> None:
  ax.set_yscale("log")
  ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
  ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False,
                                                  minor_thresholds=(2, 0.5)))


def _curves(rows: Sequence[dict], metric: str) -> dict[int, tuple[list[int], list[float]]]:
  """{nfe: (steps, values)}; several seeds at one (NFE, step) are averaged."""
  acc: dict[int, dict[int, list[float]]] = {}
  for r in rows:
    acc.setdefault(int(r["nfe"]), {}).setdefault(int(r["step"]), []).append(float(r[metric]))
  out = {}
  for nfe in sorted(acc):
    steps = sorted(acc[nfe])
    out[nfe] = (steps, [sum(acc[nfe][s]) / len(acc[nfe][s]) for s in steps])
  return out


def plot_training_curve(rows: Sequence[dict], path: str, *, title: str | None = None,
                        judge: str = "GPT-2 Large") -> str:
  """Fig. 2: Gen-PPL against training step, one line per NFE, log-scale y.

  Args:
    rows: eval.jsonl rows (step, nfe, gen_ppl, ...).
    path: output PNG.
    title: figure title.
    judge: the judge's name for the y label.
  """
  if not rows:
    raise ValueError("plot_training_curve: no rows to plot")
  fig, ax = plt.subplots(figsize=(6.0, 4.0))
  for nfe, (steps, values) in _curves(rows, "gen_ppl").items():
    ax.plot(steps, values, marker="o", markersize=4, linewidth=1.5, label=f"NFE = {nfe}")
  _log_y(ax)
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_xlabel("training step")
  ax.set_ylabel(f"Gen.-PPL ({judge}, log scale) ↓")
  ax.set_title(title or "Gen.-PPL during training")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(title="sampling budget")
  return _save(fig, path)


def plot_comparison(runs: Sequence[tuple[str, Sequence[dict]]], path: str, *,
                    title: str | None = None, judge: str = "GPT-2 Large") -> str:
  """Side by side: Gen-PPL (log y) and entropy against NFE, one line per run, ±SD bars.

  Args:
    runs: (label, report.summarize output) per run.
    path: output PNG.
    title: figure title.
    judge: the judge's name for the y label.
  """
  if not runs:
    raise ValueError("plot_comparison: no runs to plot")
  fig, (ax_ppl, ax_ent) = plt.subplots(1, 2, figsize=(11.0, 4.2))
  nfes = sorted({int(s["nfe"]) for _, summary in runs for s in summary})
  for label, summary in runs:
    summary = sorted(summary, key=lambda s: int(s["nfe"]))
    x = [int(s["nfe"]) for s in summary]
    for ax, m in ((ax_ppl, "gen_ppl"), (ax_ent, "entropy")):
      err = [s[f"{m}_sd"] or 0.0 for s in summary]
      ax.errorbar(x, [s[f"{m}_mean"] for s in summary], yerr=err, marker="o", markersize=4,
                  capsize=3, linewidth=1.5, label=label)
  for ax in (ax_ppl, ax_ent):
    ax.set_xscale("log", base=2)
    ax.set_xticks(nfes)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("NFE (denoising steps)")
    ax.grid(True, which="both", alpha=0.3)
  _log_y(ax_ppl)
  ax_ppl.set_ylabel(f"Gen.-PPL ({judge}, log scale) ↓")
  ax_ppl.set_title("Gen.-PPL")
  ax_ent.set_ylabel("entropy (nats) ↑")
  ax_ent.set_title("Entropy")
  ax_ppl.legend()
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_frontier(methods: Sequence[tuple[str, Sequence[dict]]], reference: dict[int, float],
                  path: str, *, title: str | None = None) -> str:
  """The Gen-PPL–entropy frontier, one panel per NFE: each method's temperature sweep (mean
  over seeds, :func:`eval.frontier.curves`) as a line in (entropy, Gen-PPL on a log axis),
  its τ = 1 point starred, the reference entropy as a dashed vertical line."""
  nfes = sorted(reference)
  fig, axes = plt.subplots(1, len(nfes), figsize=(4.2 * len(nfes), 3.6), squeeze=False)
  for ax, nfe in zip(axes[0], nfes):
    for label, rows in methods:
      pts = frontier.curves(rows).get(nfe, [])
      if not pts:
        continue
      line, = ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", ms=3,
                      label=label)
      ones = [p for p in pts if p[0] == 1.0]
      if ones:
        ax.plot([ones[0][1]], [ones[0][2]], marker="*", ms=10, color=line.get_color())
    ax.axvline(reference[nfe], color="0.5", lw=0.8, ls="--")
    _log_y(ax)
    ax.set_xlabel("entropy")
    ax.set_title(f"NFE = {nfe}")
  axes[0][0].set_ylabel("Gen-PPL (★: τ = 1)")
  axes[0][-1].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_refinement_curves(methods: Sequence[tuple[str, dict]], nfe: int, path: str, *,
                           title: str | None = None, judge: str = "GPT-2 Large") -> str:
  """Gen-PPL (log y) and entropy against training step at one NFE, one line per method:
  the mean over seeds with a ±SD band (no band for one seed).

  Args:
    methods: (label, {seed: eval.jsonl rows}) per method.
    nfe: the NFE of this figure.
    path: output PNG.
    title: figure title (default: "NFE = {nfe}").
    judge: the judge's name for the y label.
  """
  if not methods:
    raise ValueError("plot_refinement_curves: no methods to plot")
  fig, (ax_ppl, ax_ent) = plt.subplots(1, 2, figsize=(11.0, 4.2))
  drawn = 0
  for label, per_seed in methods:
    for ax, metric in ((ax_ppl, "gen_ppl"), (ax_ent, "entropy")):
      stats = report.refinement_curve_stats(per_seed, nfe, metric)
      if not stats:
        continue
      steps = [s[0] for s in stats]
      means = [s[1] for s in stats]
      line, = ax.plot(steps, means, marker="o", markersize=3, linewidth=1.5,
                      label=f"{label} ({stats[0][3]} seeds)" if stats[0][3] > 1 else label)
      if all(s[2] is not None for s in stats):
        ax.fill_between(steps, [m - s[2] for m, s in zip(means, stats)],
                        [m + s[2] for m, s in zip(means, stats)], color=line.get_color(),
                        alpha=0.2, linewidth=0)
      drawn += 1
  if not drawn:
    plt.close(fig)
    raise ValueError(f"plot_refinement_curves: no rows at NFE {nfe}")
  for ax in (ax_ppl, ax_ent):
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel("refinement step (0 = pretrained weights)")
    ax.grid(True, which="both", alpha=0.3)
  _log_y(ax_ppl)
  ax_ppl.set_ylabel(f"Gen.-PPL ({judge}, log scale) ↓")
  ax_ppl.set_title("Gen.-PPL (mean ± SD over seeds)")
  ax_ent.set_ylabel("entropy (nats) ↑")
  ax_ent.set_title("Entropy (mean ± SD over seeds)")
  ax_ppl.legend(fontsize=8)
  fig.suptitle(title or f"NFE = {nfe}")
  return _save(fig, path)
