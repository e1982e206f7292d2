"""``launch/lm_eval.py``: lm-evaluation-harness tasks on a backbone checkpoint (kept here so
tests can call it in-process).

  python launch/lm_eval.py --tasks=hellaswag,gsm8k --output_dir=OUT \\
      --model_args=checkpoint=DIR,mc_num=128,batch_size=32,nfe=256 [--include_path=TASKS]
      [--limit=N] [--num_fewshot=K] [--log_samples] [--no_default_tasks]

runs ``lm_eval.simple_evaluate`` with the ``tokendrift`` model type
(:mod:`.lm_eval_adapter`, model_args there) and writes, atomically, beside the Gen-PPL
results of ``launch/eval.py`` when OUT is the same directory:

* ``OUT/lm_eval_results.json``: the harness's results (``results``, ``groups``,
  ``configs``, ``versions``, ``n-shot``, ``higher_is_better``, ``n-samples``, ``config``,
  ...; non-finite numbers written as null) plus ``tokendrift`` (checkpoint, model_args,
  tasks, limit, wall time);
* ``OUT/lm_eval_samples.jsonl`` with ``--log_samples``: one line per scored document.

User errors (a missing checkpoint or tokenizer, a training directory instead of its
``backbone``, an unknown task, a bad model_arg or limit, an output directory that cannot be
written) print one ``error: ...`` line on stderr and exit with status 2, before any output
is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from typing import Any, Sequence

import jax

from tokendrift_jax import checkpoints
from tokendrift_jax import fs
from tokendrift_jax.eval import cli as eval_cli
from tokendrift_jax.eval import files

RESULTS_JSON = "lm_eval_results.json"
SAMPLES_JSONL = "lm_eval_samples.jsonl"
PIP_HINT = "pip install lm-eval==0.4.13 (requirements-dev.txt)"


class LMEvalError(ValueError):
  """A user error of ``launch/lm_eval.py`` (one line, status 2)."""


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="launch/lm_eval.py",
      description="lm-evaluation-harness tasks on a backbone checkpoint (model type "
                  "'tokendrift'); writes OUTPUT_DIR/lm_eval_results.json. See "
                  "docs/EVALUATION.md, 'lm-evaluation-harness'.")
  p.add_argument("--tasks", required=True, help="comma-separated task names")
  p.add_argument("--model_args", required=True,
                 help="checkpoint=DIR[,tokenizer=DIR][,mc_num=128,batch_size=32,cfg=0,nfe=..."
                      "] (tokendrift_jax/eval/lm_eval_adapter.py)")
  p.add_argument("--output_dir", required=True, help="where lm_eval_results.json goes")
  p.add_argument("--include_path", action="append", default=[],
                 help="a directory of local task YAMLs (repeatable)")
  p.add_argument("--no_default_tasks", action="store_true",
                 help="only the --include_path tasks (skips indexing the harness's ~10k task "
                      "files, ~20 s)")
  p.add_argument("--limit", type=float, default=None,
                 help="documents per task (an int), or a fraction in (0, 1)")
  p.add_argument("--num_fewshot", type=int, default=None)
  p.add_argument("--bootstrap_iters", type=int, default=100000,
                 help="stderr bootstrap resamples (0: none)")
  p.add_argument("--seed", type=int, default=1234, help="the harness's document seeds")
  p.add_argument("--log_samples", action="store_true",
                 help="also write lm_eval_samples.jsonl")
  return p


def _parse_model_args(text: str) -> dict[str, str]:
  """``key=value`` pairs (split as the harness splits them: on commas)."""
  out = {}
  for item in (s for s in text.split(",") if s.strip()):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise LMEvalError(f"--model_args: {item!r} is not key=value")
    out[key.strip()] = value.strip()
  return out


def check_inputs(args: argparse.Namespace) -> dict[str, Any]:
  """Every cheap check before the harness or the weights are loaded; returns the settings."""
  tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
  if not tasks:
    raise LMEvalError("--tasks is empty; name at least one task")
  model_args = _parse_model_args(args.model_args)
  ckpt = model_args.get("checkpoint", "")
  if not ckpt:
    raise LMEvalError("--model_args needs checkpoint=DIR (a converted backbone, "
                      "`python -m convert SRC DIR`, or a training run's WORKDIR/backbone)")
  ckpt = os.path.abspath(os.path.expanduser(ckpt))
  if eval_cli.is_training_workdir(ckpt) and not os.path.isdir(os.path.join(ckpt, "params")):
    raise LMEvalError(f"did you mean checkpoint={os.path.join(ckpt, 'backbone')}? {ckpt} is "
                      f"a training run's directory; a run exports its backbone to "
                      f"WORKDIR/backbone")
  try:
    checkpoints.read_backbone_config(ckpt)
  except checkpoints.CheckpointError as e:
    raise LMEvalError(f"--model_args checkpoint: {e}") from e
  model_args["checkpoint"] = ckpt
  for path in args.include_path:
    if not os.path.isdir(os.path.expanduser(path)):
      raise LMEvalError(f"--include_path={path!r} is not a directory")
  limit = args.limit
  if limit is not None:
    if not limit > 0 or (limit >= 1 and limit != int(limit)):
      raise LMEvalError(f"--limit={limit} must be a positive int or a fraction in (0, 1)")
    limit = int(limit) if limit >= 1 else float(limit)
  if args.num_fewshot is not None and args.num_fewshot < 0:
    raise LMEvalError(f"--num_fewshot={args.num_fewshot} must be >= 0")
  if args.bootstrap_iters < 0:
    raise LMEvalError(f"--bootstrap_iters={args.bootstrap_iters} must be >= 0")
  out = os.path.abspath(os.path.expanduser(args.output_dir))
  try:
    fs.check_writable_destination(os.path.join(out, RESULTS_JSON), kind="file")
  except fs.DestinationError as e:
    raise LMEvalError(f"--output_dir: {e}") from e
  return {"tasks": tasks, "model_args": model_args, "limit": limit, "output_dir": out}


def _finite(obj):
  """JSON-safe copy: NaN / inf (a stderr of one document) become null."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {str(k): _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def evaluate(args: argparse.Namespace) -> dict:
  """Checks, runs the harness, writes the outputs; returns the results.json payload."""
  settings = check_inputs(args)
  try:
    import lm_eval  # pylint: disable=import-outside-toplevel
    from lm_eval.tasks import TaskManager  # pylint: disable=import-outside-toplevel
    from lm_eval.utils import handle_non_serializable  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise LMEvalError(f"lm-eval is not installed: {PIP_HINT}") from e
  # Registers the "tokendrift" model type.
  from tokendrift_jax.eval import lm_eval_adapter  # pylint: disable=import-outside-toplevel

  if args.no_default_tasks and not args.include_path:
    raise LMEvalError("--no_default_tasks leaves no tasks without --include_path")
  manager = TaskManager(include_path=[os.path.expanduser(p) for p in args.include_path]
                        or None, include_defaults=not args.no_default_tasks)
  known = set(manager.all_tasks)
  unknown = [t for t in settings["tasks"] if t not in known]
  if unknown:
    raise LMEvalError(f"unknown task(s) {unknown} (not among the harness's tasks"
                      + (f" nor in --include_path {args.include_path}" if args.include_path
                         else "; local task YAMLs go in --include_path") + ")")
  t0 = time.time()
  results = lm_eval.simple_evaluate(
      model=lm_eval_adapter.MODEL_NAME, model_args=settings["model_args"],
      tasks=settings["tasks"], num_fewshot=args.num_fewshot, limit=settings["limit"],
      task_manager=manager, bootstrap_iters=args.bootstrap_iters,
      log_samples=args.log_samples, random_seed=args.seed, numpy_random_seed=args.seed,
      torch_random_seed=args.seed, fewshot_random_seed=args.seed)
  # Every JAX process runs every request (the harness sees one rank; the weights are
  # placed across processes, so all must run the same programs); process 0 writes.
  if results is None or jax.process_index() != 0:
    return {}
  samples = results.pop("samples", None)
  payload = _finite(json.loads(json.dumps(results, default=handle_non_serializable)))
  payload["tokendrift"] = {"checkpoint": settings["model_args"]["checkpoint"],
                           "model_args": settings["model_args"], "tasks": settings["tasks"],
                           "limit": settings["limit"], "wall_time_s": time.time() - t0}
  out = settings["output_dir"]
  os.makedirs(out, exist_ok=True)
  if samples is not None:
    rows = [dict(s, task=task) for task, items in samples.items() for s in items]
    rows = _finite(json.loads(json.dumps(rows, default=handle_non_serializable)))
    files.write_jsonl(os.path.join(out, SAMPLES_JSONL), rows)
  files.write_json(os.path.join(out, RESULTS_JSON), payload)
  return payload


def run(argv: Sequence[str] | None = None) -> int:
  """:func:`evaluate` with user errors as one ``error: ...`` line and status 2."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  args = parser().parse_args(argv)
  try:
    payload = evaluate(args)
  except (checkpoints.CheckpointError, FileNotFoundError, ValueError, ImportError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  if payload:
    for task, metrics in sorted(payload.get("results", {}).items()):
      shown = {k: v for k, v in metrics.items() if k != "alias" and "stderr" not in k}
      print(f"{task}: {json.dumps(shown)}")
    print(f"wrote {os.path.join(os.path.abspath(args.output_dir), RESULTS_JSON)}")
  return 0
