"""The evaluation run behind ``launch/eval.py`` (kept here so tests can call it in-process).

:func:`evaluate_checkpoint` samples a backbone checkpoint at every (NFE, seed) of the
config (configs/eval.py), judges the samples and writes, each file atomically and only after
everything was computed:

* ``OUT/results.json``: per (NFE, seed) rows, per-NFE mean ± SD, settings;
* ``OUT/results.md``: a Tables 1-2 shaped table;
* ``OUT/samples.jsonl``: one line per sample (nfe, seed, index, text, token_ids).

Rows are labelled by the run (:func:`run_label`): ``config.label``, or for an empty label
the training run's name when the checkpoint is a run's export ``WORKDIR/backbone`` (the
name of WORKDIR), else the checkpoint directory's name. A training directory itself passed
as ``config.checkpoint`` is an error that names ``WORKDIR/backbone``.

:func:`run` turns user errors into one ``error: ...`` line on stderr and status 2; they are
all detected before any output is written.

Long evaluations resume: each finished (NFE, seed) is saved to ``OUT/.progress/`` as it
completes, and rerunning the same command skips the pairs saved with the same weights and
settings (the final files are the same as an uninterrupted run's); the folder is removed
once the results are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from tokendrift_jax import checkpoints
from tokendrift_jax import runtime
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import make_process_for_model
from tokendrift_jax.eval import eval_config
from tokendrift_jax.eval import files
from tokendrift_jax.eval import judges
from tokendrift_jax.eval import report
from tokendrift_jax.eval import sampling_eval
from tokendrift_jax.eval.eval_config import EvalError

# Finished (NFE, seed) pairs of a run in progress; a rerun of the same command skips them,
# and the folder is removed once the results are written.
PROGRESS_DIR = ".progress"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
SAMPLES_JSONL = "samples.jsonl"


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | None) -> dict:
  """Runs the evaluation described by ``config`` and writes the outputs to ``workdir``.

  Returns:
    the results.json payload.

  Raises:
    EvalError, checkpoints.CheckpointError, FileNotFoundError, ValueError: user errors,
      raised before anything is written.
  """
  err = EvalError
  if not workdir:
    raise err("pass --workdir=OUT (where results.json, results.md and samples.jsonl go)")
  if not str(config.checkpoint):
    raise err("config.checkpoint is empty; pass --config.checkpoint=DIR, a converted "
              "backbone (`python -m convert SRC DIR`) or a training run's WORKDIR/backbone")
  nfes = eval_config.check_int_list(config.nfe, "config.nfe", minimum=1)
  seeds = eval_config.check_int_list(config.seeds, "config.seeds", minimum=0)
  num_samples = eval_config.check_num_samples(config.num_samples, "config.num_samples")
  ckpt = os.path.abspath(os.path.expanduser(str(config.checkpoint)))
  if is_training_workdir(ckpt) and not os.path.isdir(os.path.join(ckpt, "params")):
    backbone = os.path.join(ckpt, "backbone")
    raise err(f"did you mean --config.checkpoint={backbone}? config.checkpoint={ckpt} is a "
              f"training run's directory; a run exports the backbone it evaluates to "
              f"WORKDIR/backbone" + ("" if os.path.isdir(backbone) else
                                     " when its training finishes (none there yet)"))
  try:
    model_cfg, meta = checkpoints.read_backbone_config(ckpt)
    process_name = checkpoints.checkpoint_process(meta, ckpt)
  except checkpoints.CheckpointError as e:
    raise err(f"config.checkpoint: {e}") from e
  family = meta.get("family")
  length = int(config.length) or model_cfg.length
  if not 1 <= length <= model_cfg.length:
    raise err(f"config.length={config.length} must be in [1, {model_cfg.length}] (the "
              f"checkpoint's length)")
  try:
    mesh = sharding.mesh_from_config(config.mesh)
  except ValueError as e:
    raise err(str(e)) from e
  try:
    process = make_process_for_model(process_name, model_cfg)
  except ValueError as e:
    raise err(f"config.checkpoint={ckpt!r}: {e}") from e
  progress = bool(config.progress) and jax.process_index() == 0
  # The judge before the weights: a missing judge or a tokenizer that does not fit the
  # checkpoint is reported before anything heavy is loaded or sampled.
  judge = judges.build_judge(config, process=process, max_length=length, mesh=mesh,
                             progress=progress)
  evaluator = sampling_eval.SampleEvaluator(
      model_cfg, process, judge, mesh=mesh, batch=int(config.batch), length=length,
      noise_removal=str(config.noise_removal) or None,
      sampler_precision=str(config.sampler_precision) or None,
      model_dtype=str(config.model_dtype), attention_impl=str(config.attention_impl) or None,
      progress=progress)

  _, params, _ = checkpoints.load_backbone_params(ckpt)
  weights_hash = _weights_hash(params)
  params = sharding.to_global(params, sharding.param_sharding(params, mesh, "replicated"))
  label = run_label(str(config.label), ckpt)
  judge_info = judges.info(judge)
  sampling = {"nfe": list(nfes), "seeds": list(seeds), "num_samples": num_samples,
              "batch": evaluator.batch, "length": length,
              "noise_removal": evaluator.noise_removal,
              "sampler_precision": "float64" if evaluator.float64 else "float32",
              "model_dtype": str(config.model_dtype),
              "key": "fold_in(fold_in(PRNGKey(seed), nfe), batch_index)"}
  keep = bool(config.write_samples)
  # What a finished (NFE, seed) depends on, besides its own NFE and seed.
  fingerprint = {"weights": weights_hash, "checkpoint": ckpt, "judge": judge_info,
                 "sampling": {k: v for k, v in sampling.items() if k not in ("nfe", "seeds")},
                 "write_samples": keep}
  progress_dir = os.path.join(workdir, PROGRESS_DIR)
  is_main = jax.process_index() == 0
  done = _load_progress(progress_dir, fingerprint, nfes, seeds) if is_main else {}
  skip = _agreed_skip(done, nfes, seeds)
  if skip:
    logging.info("resuming: %d of %d (NFE, seed) pairs done in %s", len(skip),
                 len(nfes) * len(seeds), progress_dir)

  def save_progress(row, samples):
    if is_main:
      os.makedirs(progress_dir, exist_ok=True)
      files.write_json(_progress_path(progress_dir, row["nfe"], row["seed"]),
                        {"fingerprint": fingerprint, "row": row, "samples": samples})

  t0 = time.time()
  result = evaluator.evaluate(params, nfes, seeds, num_samples, keep_samples=keep, skip=skip,
                              on_row=save_progress)
  if not is_main:
    return {}
  rows, samples = _merge(result, done, nfes, seeds)
  payload = report.results_payload(
      rows, label=label, checkpoint=ckpt, process=process.name, family=family, meta=meta,
      judge=judge_info,
      sampling=sampling, config=json.loads(config.to_json_best_effort()))
  payload["wall_time_s"] = time.time() - t0
  payload["resumed_pairs"] = [list(k) for k in skip]
  os.makedirs(workdir, exist_ok=True)
  if keep:
    files.write_jsonl(os.path.join(workdir, SAMPLES_JSONL), samples)
  files.write_json(os.path.join(workdir, RESULTS_JSON), payload)
  files.write_text(os.path.join(workdir, RESULTS_MD), report.results_markdown(payload))
  shutil.rmtree(progress_dir, ignore_errors=True)
  return payload


def is_training_workdir(path: str) -> bool:
  """Whether ``path`` is a training run's directory (``config.json`` or ``checkpoints/``)."""
  return (os.path.isfile(os.path.join(path, "config.json"))
          or os.path.isdir(os.path.join(path, "checkpoints")))


def run_label(label: str, checkpoint: str) -> str:
  """The row label of an evaluation in results.md and compare tables.

  ``config.label`` when set; else the name of the *run*: for a training run's export
  ``WORKDIR/backbone`` (a ``backbone`` directory inside a training directory, see
  :func:`is_training_workdir`) the name of WORKDIR, otherwise the checkpoint directory's
  name (``/ckpt/mdlm`` -> ``mdlm``). Every training run exports a directory named
  ``backbone``, so labelling by the directory's own name would give all runs one label.
  """
  if label:
    return label
  ckpt = os.path.abspath(os.path.expanduser(checkpoint)).rstrip(os.sep)
  parent = os.path.dirname(ckpt)
  if os.path.basename(ckpt) == "backbone" and is_training_workdir(parent):
    return os.path.basename(parent)
  return os.path.basename(ckpt)


def _weights_hash(params) -> str:
  """A digest of the backbone weights (resumed pairs must come from the same weights)."""
  h = hashlib.blake2b(digest_size=16)
  for leaf in jax.tree.leaves(params):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _agreed_skip(done: dict, nfes, seeds) -> list[tuple[int, int]]:
  """The saved pairs to skip, as process 0 sees them (every process must skip alike)."""
  pairs = [(n, s) for n in nfes for s in seeds]
  if jax.process_count() == 1:
    return [p for p in pairs if p in done]
  flags = multihost_utils.broadcast_one_to_all(np.asarray([p in done for p in pairs], np.int32))
  return [p for p, f in zip(pairs, flags) if f]


def _merge(result, done: dict, nfes, seeds) -> tuple[list[dict], list[dict]]:
  """Rows and samples of this run and of the saved pairs, NFE-major as evaluate() orders."""
  new_rows = {(r["nfe"], r["seed"]): r for r in result.rows}
  new_samples: dict[tuple[int, int], list[dict]] = {}
  for smp in result.samples or ():
    new_samples.setdefault((smp["nfe"], smp["seed"]), []).append(smp)
  rows, samples = [], []
  for key in ((n, s) for n in nfes for s in seeds):
    if key in new_rows:
      rows.append(new_rows[key])
      samples.extend(new_samples.get(key, []))
    else:
      rows.append(done[key]["row"])
      samples.extend(done[key]["samples"] or [])
  return rows, samples


def _progress_path(progress_dir: str, nfe: int, seed: int) -> str:
  return os.path.join(progress_dir, f"nfe{int(nfe)}-seed{int(seed)}.json")


def _load_progress(progress_dir: str, fingerprint: dict, nfes, seeds) -> dict:
  """{(nfe, seed): saved pair} for the pairs an interrupted run of the same settings saved.

  A saved pair from other weights or settings is not reused (and is overwritten).
  """
  done = {}
  want = json.loads(json.dumps(fingerprint))  # as it reads back from JSON
  for nfe in nfes:
    for seed in seeds:
      path = _progress_path(progress_dir, nfe, seed)
      if not os.path.isfile(path):
        continue
      try:
        with open(path, encoding="utf-8") as f:
          saved = json.load(f)
      except (OSError, json.JSONDecodeError):
        continue
      if saved.get("fingerprint") == want:
        done[(nfe, seed)] = saved
      else:
        logging.warning("%s was written with other weights or settings; recomputing", path)
  return done


def run(config: ml_collections.ConfigDict, workdir: str | None) -> int:
  """``evaluate_checkpoint`` with user errors as one ``error: ...`` line and status 2."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  repeated = runtime.repeated_sequence_overrides(sys.argv, config)
  if repeated:
    print(f"error: {repeated}", file=sys.stderr)
    return 2
  try:
    runtime.init_distributed(config.get("distributed", ml_collections.ConfigDict()))
    payload = evaluate_checkpoint(config, workdir)
  except (checkpoints.CheckpointError, FileNotFoundError, ValueError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  if not payload:  # processes other than 0 write and print nothing
    return 0
  print(report.markdown_table([(payload["label"], payload["summary"])], bold_best=False))
  print(f"wrote {os.path.join(workdir, RESULTS_JSON)}, {RESULTS_MD}"
        + (f", {SAMPLES_JSONL}" if config.write_samples else ""))
  return 0
