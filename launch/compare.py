"""Compare evaluated runs of one backbone (Tables 1-2):
``python launch/compare.py RUN_DIR... --out DIR [--labels L1 L2 ...]``.

Each RUN_DIR holds the ``results.json`` of ``launch/eval.py`` (e.g. the released
checkpoint, the continuation run and the TokenDrift run). Writes ``DIR/compare.md`` (one
row per run, Gen.-PPL and entropy per NFE as mean ± SD over seeds, best Gen.-PPL per NFE in
bold), ``DIR/compare.json`` and ``DIR/compare.png`` (Gen.-PPL and entropy against NFE side
by side, one line per run). When any run swept the sampling temperature
(``config.temperatures`` of launch/eval.py), compare.md adds the matched-entropy table —
every run's Gen.-PPL at the entropy of the ``--reference`` run (default: the first) at its
own temperature — and ``DIR/compare_frontier.png`` the Gen-PPL–entropy frontiers
(docs/EVALUATION.md, "Gen-PPL at matched entropy"). Runs of different diffusion processes (``process`` in
results.json; ``arch`` in files of older versions) are refused, and so are two runs with
one label (each run's ``label`` in results.json, or ``--labels``). Errors print one
``error: ...`` line and exit with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys

from tokendrift_jax.eval import files
from tokendrift_jax.eval import frontier
from tokendrift_jax.eval import judges
from tokendrift_jax.eval import plots
from tokendrift_jax.eval import report


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories with results.json")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--labels", nargs="+", default=None,
                 help="row labels, one per RUN_DIR (default: each run's label)")
  p.add_argument("--title", default=None, help="figure title")
  p.add_argument("--reference", default=None,
                 help="label of the run whose entropy the matched-entropy table reads the "
                      "others at (default: the first run)")
  return p


def compare_runs(run_dirs, out: str, labels=None, title: str | None = None,
                 reference: str | None = None) -> dict:
  """Reads the runs, writes compare.md / compare.json / compare.png (and with a temperature
  sweep compare_frontier.png); returns the JSON."""
  results = [report.read_results(d) for d in run_dirs]
  payload, md = report.compare(results, labels, run_dirs=list(run_dirs))
  entries = [(r["label"], res) for r, res in zip(payload["runs"], results)]
  swept = any(len(report.temperatures(res["rows"])) > 1 for res in results)
  if reference is not None and not swept:
    raise ValueError("--reference reads runs at matched entropy, which needs a temperature "
                     "sweep (launch/eval.py --config.temperatures=...) in at least one run")
  if swept:
    matched, section = frontier.compare_runs(entries, reference or entries[0][0])
    payload["matched_entropy"] = matched
    md = md.rstrip() + "\n\n" + section
  os.makedirs(out, exist_ok=True)
  if swept:
    target = {int(n): h for n, h in payload["matched_entropy"]["entropy"].items()}
    plots.plot_frontier([(lab, res["rows"]) for lab, res in entries], target,
                        os.path.join(out, "compare_frontier.png"),
                        title=f"{str(payload['process']).upper()}: Gen-PPL against entropy")
  plots.plot_comparison([(r["label"], r["summary"]) for r in payload["runs"]],
                        os.path.join(out, "compare.png"),
                        title=title or f"{str(payload['process']).upper()}: few-step generation",
                        judge=judges.label(results[0].get("judge", {})))
  files.write_json(os.path.join(out, "compare.json"), payload)
  files.write_text(os.path.join(out, "compare.md"), md)
  return payload


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    compare_runs(args.runs, args.out, args.labels, args.title, args.reference)
  except (OSError, ValueError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  with open(os.path.join(args.out, "compare.md"), encoding="utf-8") as f:
    print(f.read())
  return 0


if __name__ == "__main__":
  sys.exit(main())
