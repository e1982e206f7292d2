"""The evaluation run behind ``launch/eval.py`` (kept here so tests can call it in-process).

:func:`evaluate_checkpoint` samples a backbone checkpoint at every (NFE, seed) of the
config (configs/eval.py), judges the samples and writes, each file atomically and only after
everything was computed:

* ``OUT/results.json``: per (NFE, seed) rows, per-NFE mean ± SD, settings;
* ``OUT/results.md``: a Tables 1-2 shaped table;
* ``OUT/samples.jsonl``: one line per sample (nfe, seed, index, text, token_ids).

A temperature sweep (``config.temperatures``, e.g. ``(0.8, 0.9, 1.0)``) samples every
(NFE, seed) at each temperature: rows and samples then carry ``temperature``, the summary
and the Tables 1-2 table read the model's own temperature (1, or LLaDA's
``config.llada.temperature``), results.md adds the sweep, and ``launch/compare.py`` reads
every run's Gen-PPL at the entropy of a reference run (:mod:`.frontier`).

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
from tokendrift_jax import fs
from tokendrift_jax import models
from tokendrift_jax import runtime
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import make_process_for_model
from tokendrift_jax.eval import assemble
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
  eval_config.check_eval_config(config)   # every value's type and range, before anything
  if not workdir:
    raise err("pass --workdir=OUT (where results.json, results.md and samples.jsonl go)")
  if not str(config.checkpoint):
    raise err("config.checkpoint is empty; pass --config.checkpoint=DIR, a converted "
              "backbone (`python -m convert SRC DIR`) or a training run's WORKDIR/backbone")
  workdir = check_workdir(workdir)
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
  try:
    mesh = sharding.mesh_from_config(config.mesh)
  except ValueError as e:
    raise err(str(e)) from e
  placement = str(config.mesh.get("param_sharding", "replicated"))
  family_spec = models.family_of(model_cfg)
  try:
    logical_axes = sharding.check_placement(placement, mesh, family_spec.logical_axes,
                                            family_spec.name)
  except ValueError as e:
    raise err(str(e)) from e
  try:
    process = make_process_for_model(process_name, model_cfg)
  except ValueError as e:
    raise err(f"config.checkpoint={ckpt!r}: {e}") from e
  prompt_length, prompt_file = _prompt_settings(config, process)
  if prompt_length >= model_cfg.length:
    raise err(f"config.prompt.length={prompt_length} must be < the checkpoint's length "
              f"{model_cfg.length} (the completion needs at least one position)")
  length = int(config.length) or model_cfg.length - prompt_length
  if not 1 <= length <= model_cfg.length - prompt_length:
    raise err(f"config.length={config.length} must be in [1, "
              f"{model_cfg.length - prompt_length}] (the checkpoint's length "
              f"{model_cfg.length}" + (f" minus config.prompt.length={prompt_length})"
                                       if prompt_length else ")"))
  options = _llada_options(config, process, prompted=bool(prompt_length))
  if options is not None:
    options["block_length"] = options["block_length"] or length  # 0: one block
    nfes = sampling_eval.check_llada_nfes(nfes, length, options["block_length"])
  own_tau = 1.0 if options is None else options["temperature"]
  taus = check_temperatures(config.get("temperatures", ()), own_tau, process)
  sweep = len(taus) > 1
  # Prompts before the judge (GPT-2 Large is 3 GB): a missing or short file fails at once.
  prompts = (_read_prompts(prompt_file, prompt_length, num_samples, process) if prompt_length
             else None)
  progress = bool(config.progress) and jax.process_index() == 0
  # The judge before the weights: a missing judge or a tokenizer that does not fit the
  # checkpoint is reported before anything heavy is loaded or sampled.
  evaluator = assemble.build_evaluator(
      config, model_cfg=model_cfg, process=process, mesh=mesh, length=length,
      family=family_spec, progress=progress, attention_impl=str(config.attention_impl),
      sampler_options=_tau_options(options, own_tau), prompt_length=prompt_length,
      batch=capped_batch(config.batch, num_samples, mesh))
  judge = evaluator.judge
  nfes = evaluator.check_nfes(nfes)
  # One sampler per temperature (τ is a compile-time constant; τ = 1 is the plain program),
  # all sharing the judge; built before anything is written so a bad setting stops here.
  evaluators = {t: evaluator if t == own_tau else assemble.build_evaluator(
      config, model_cfg=model_cfg, process=process, mesh=mesh, length=length,
      family=family_spec, progress=progress, attention_impl=str(config.attention_impl),
      sampler_options=_tau_options(options, t), prompt_length=prompt_length,
      batch=evaluator.batch, judge=judge) for t in taus}
  if prompts is not None:
    if judge.kind != "gpt2":
      raise EvalError(f"config.prompt: conditional judging needs the GPT-2 judge "
                      f"(config.judge_kind='gpt2'), not {judge.kind!r}")
    try:  # ids the tokenizer does not have are refused before the weights are loaded
      judges.check_text_ids(prompts, process, judge.num_ids)
    except EvalError as e:
      raise EvalError(f"config.prompt.tokens={prompt_file!r}: {e}") from e

  # The one writer of workdir from here on (a second evaluation is refused).
  lock = runtime.workdir_lock(workdir, "evaluation")   # process 0's, agreed by all
  try:
    _, params, _ = checkpoints.load_backbone_params(ckpt)
    weights_hash = _weights_hash(params)
    params = sharding.to_global(params, sharding.param_sharding(
        params, mesh, placement, logical_axes=logical_axes))
    label = run_label(str(config.label), ckpt)
    judge_info = judges.info(judge)
    sampling = {"nfe": list(nfes), "seeds": list(seeds), "num_samples": num_samples,
                "batch": evaluator.batch, "length": length,
                "noise_removal": evaluator.noise_removal,
                "sampler_precision": "float64" if evaluator.float64 else "float32",
                "model_dtype": str(config.model_dtype),
                "key": "fold_in(fold_in(PRNGKey(seed), nfe), batch_index)"}
    sampling["temperature"] = own_tau
    if sweep:
      sampling["temperatures"] = list(taus)
    if options is not None:
      sampling["llada"] = dict(evaluator.sampler_options)
      # NFE counts backbone calls; classifier-free guidance runs each on 2 x batch rows.
      sampling["rows_per_forward"] = (2 if options["cfg_scale"] > 0 else 1) * evaluator.batch
    if prompt_length:
      sampling["prompt"] = {"tokens": prompt_file, "length": prompt_length,
                            "sha256": hashlib.sha256(prompts.tobytes()).hexdigest(),
                            "judged": "completion given the prompt"}
    keep = bool(config.write_samples)
    # What a finished (NFE, seed, τ) depends on, besides its own NFE, seed and τ (a sweep
    # widened later reuses the temperatures already done).
    fingerprint = {"weights": weights_hash, "checkpoint": ckpt, "judge": judge_info,
                   "sampling": {k: v for k, v in sampling.items()
                                if k not in ("nfe", "seeds", "temperatures")},
                   "write_samples": keep}
    progress_dir = os.path.join(workdir, PROGRESS_DIR)
    is_main = jax.process_index() == 0
    keys = [(n, s, t) for t in taus for n in nfes for s in seeds]
    done = _load_progress(progress_dir, fingerprint, keys, own_tau) if is_main else {}
    skip = _agreed_skip(done, keys)
    if skip:
      logging.info("resuming: %d of %d (NFE, seed%s) done in %s", len(skip), len(keys),
                   ", temperature" if sweep else "", progress_dir)

    t0 = time.time()
    new_rows, new_samples = {}, {}
    for tau in taus:
      def save_progress(row, samples, tau=tau):
        if sweep and samples:
          for smp in samples:
            smp["temperature"] = tau
        if is_main:
          os.makedirs(progress_dir, exist_ok=True)
          files.write_json(_progress_path(progress_dir, row["nfe"], row["seed"], tau, own_tau),
                           {"fingerprint": fingerprint, "row": row, "samples": samples})

      result = evaluators[tau].evaluate(
          params, nfes, seeds, num_samples, keep_samples=keep,
          skip=[(n, s) for n, s, t in skip if t == tau], on_row=save_progress,
          prompts=prompts)
      for r in result.rows:
        new_rows[(r["nfe"], r["seed"], tau)] = r
      for smp in result.samples or ():
        new_samples.setdefault((smp["nfe"], smp["seed"], tau), []).append(smp)
    if not is_main:
      return {}
    rows, samples = _merge(new_rows, new_samples, done, keys)
    payload = report.results_payload(
        rows, label=label, checkpoint=ckpt, process=process.name, family=family, meta=meta,
        judge=judge_info,
        sampling=sampling, config=json.loads(config.to_json_best_effort()))
    payload["wall_time_s"] = time.time() - t0
    payload["resumed_pairs"] = [list(k) if sweep else list(k[:2]) for k in skip]
    os.makedirs(workdir, exist_ok=True)
    if keep:
      files.write_jsonl(os.path.join(workdir, SAMPLES_JSONL), samples)
    files.write_json(os.path.join(workdir, RESULTS_JSON), payload)
    files.write_text(os.path.join(workdir, RESULTS_MD), report.results_markdown(payload))
    shutil.rmtree(progress_dir, ignore_errors=True)
    return payload
  finally:
    if lock is not None:
      lock.release()


def check_workdir(workdir: str) -> str:
  """The absolute workdir, checked before anything is loaded: no other run holds it, it can
  be written, and the output files there are absent or an earlier evaluation's."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    runtime.check_workdir_free(workdir)   # process 0's view, on every process
    fs.check_writable_destination(workdir, kind="dir")
    for name in (RESULTS_JSON, RESULTS_MD, SAMPLES_JSONL):
      fs.check_replace(os.path.join(workdir, name), force=True, kind="file",
                       what=f"the output {name}", flag="launch/eval.py")
  except fs.DestinationError as e:
    raise EvalError(f"--workdir: {e}") from e
  return workdir


MAX_UNCAPPED_BATCH = 64   # as launch/sample.py's DEFAULT_MAX_BATCH


def capped_batch(batch, num_samples: int, mesh) -> int:
  """``batch``, or the sample count (rounded up to the mesh's batch shards) when the batch
  is above both it and MAX_UNCAPPED_BATCH: a batch far above config.num_samples would only
  draw rows that are thrown away (and run out of memory). A smaller batch is kept: the
  samples depend on it."""
  if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
    return batch   # refused, with the field named, by SampleEvaluator
  shards = sharding.num_batch_shards(mesh)
  cap = -(-int(num_samples) // shards) * shards
  if batch > max(cap, MAX_UNCAPPED_BATCH):
    logging.info("config.batch=%d capped at %d (config.num_samples=%d)", batch, cap,
                 num_samples)
    return cap
  return int(batch)


def check_temperatures(values, own: float, process) -> tuple[float, ...]:
  """``config.temperatures`` as distinct finite numbers > 0 in increasing order; () = the
  sampler's own temperature only. A sweep must hold ``own`` (1, or LLaDA's
  ``config.llada.temperature``): the Tables 1-2 summary and the matched-entropy reference
  are read there."""
  field = "config.temperatures"
  if isinstance(values, (int, float)) and not isinstance(values, bool):
    values = (values,)
  try:
    taus = tuple(values)
  except TypeError:
    raise EvalError(f"{field} must be a list of numbers, got {values!r}") from None
  if not taus:
    return (own,)
  for t in taus:
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not (
        np.isfinite(t) and t > 0):
      raise EvalError(f"{field} must hold finite numbers > 0, got {t!r} in {taus}")
  taus = tuple(float(t) for t in taus)
  if len(set(taus)) != len(taus):
    raise EvalError(f"{field} has repeated values: {taus}")
  if own not in taus:
    what = ("config.llada.temperature" if process.name == "llada" else "1, the model's own "
            "distribution")
    raise EvalError(f"{field}={taus} must include {own:g} ({what}): the summary table and the "
                    f"matched-entropy reference are read at it")
  return tuple(sorted(taus))


def _tau_options(options: dict | None, tau: float) -> dict | None:
  """The sampler options at temperature ``tau``: MDLM/DUO take none at τ = 1 (the program
  without a temperature), else {"temperature": τ}; LLaDA's options with τ set."""
  if options is not None:
    return {**options, "temperature": tau}
  return None if tau == 1.0 else {"temperature": tau}


def _prompt_settings(config, process) -> tuple[int, str]:
  """(P, the prompt file) of ``config.prompt``; (0, "") for unconditional evaluation."""
  section = config.get("prompt") or ml_collections.ConfigDict(dict(tokens="", length=0))
  length, path = section.get("length", 0), str(section.get("tokens", "") or "")
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
    raise EvalError(f"config.prompt.length must be an integer >= 0, got {length!r}")
  if bool(length) != bool(path):
    raise EvalError("config.prompt.tokens and config.prompt.length go together: give both "
                    "(a prompt-conditioned evaluation) or neither (unconditional); got "
                    f"tokens={path!r}, length={length}")
  if length and not process.prompted:
    raise EvalError(f"config.prompt: prompt-conditioned sampling is built for LLaDA "
                    f"checkpoints only; this checkpoint's process is {process.name!r}")
  return int(length), os.path.abspath(os.path.expanduser(path)) if path else ""


def _llada_options(config, process, *, prompted: bool) -> dict | None:
  """generate.py's options from ``config.llada`` for a LLaDA checkpoint, else None (and an
  error when a non-default value would be ignored)."""
  section = config.get("llada")
  if section is None:
    return None
  defaults = eval_config.llada_sampler_config().to_dict()
  values = {k: section.get(k, v) for k, v in defaults.items()}
  if process.name != "llada":
    changed = sorted(k for k, v in values.items() if v != defaults[k])
    if changed:
      raise EvalError(f"config.llada.{changed[0]} only applies to LLaDA checkpoints; this "
                      f"one's process is {process.name!r}")
    return None
  block = values["block_length"]
  if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 0:
    raise EvalError(f"config.llada.block_length must be an integer >= 0 (0 = the whole "
                    f"sample), got {block!r}")
  for k in ("temperature", "cfg_scale"):
    if isinstance(values[k], bool) or not isinstance(values[k], (int, float)):
      raise EvalError(f"config.llada.{k} must be a number, got {values[k]!r}")
  if values["cfg_scale"] > 0 and not prompted:
    raise EvalError(f"config.llada.cfg_scale={values['cfg_scale']} guides by the prompt; "
                    f"unconditional samples have none (set config.prompt, or cfg_scale=0)")
  return {"block_length": int(block), "temperature": float(values["temperature"]),
          "remasking": str(values["remasking"]), "cfg_scale": float(values["cfg_scale"])}


def _read_prompts(path: str, length: int, num_samples: int, process=None) -> np.ndarray:
  """int32[num_samples, length]: the first ``length`` ids of the first ``num_samples`` rows
  of the .npy at ``path``; one-line errors naming config.prompt.tokens."""
  field = "config.prompt.tokens"
  if not os.path.isfile(path):
    raise EvalError(f"{field}={path!r}: no such file (an int .npy [N, >= {length}] of "
                    f"prompt token ids)")
  from tokendrift_jax.data import tokens  # pylint: disable=import-outside-toplevel
  try:   # empty, truncated, not a .npy, not integer: one line naming the file
    rows = tokens.load_npy(path, field)
  except ValueError as e:
    raise EvalError(str(e)) from e
  if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.integer):
    raise EvalError(f"{field}={path!r} must be an int array [N, >= {length}], got "
                    f"{rows.dtype}{list(rows.shape)}")
  if rows.shape[0] < num_samples or rows.shape[1] < length:
    raise EvalError(f"{field}={path!r} has shape {list(rows.shape)}; config.num_samples="
                    f"{num_samples} samples with config.prompt.length={length} need at least "
                    f"[{num_samples}, {length}]")
  prompts = np.asarray(rows[:num_samples, :length]).astype(np.int32)
  if prompts.min() < 0:
    raise EvalError(f"{field}={path!r} holds negative ids")
  if process is not None:   # ids past the vocabulary, or the mask: before the judge loads
    try:
      judges.check_text_ids(prompts, process)
    except EvalError as e:
      raise EvalError(f"{field}={path!r}: {e}") from e
    if process.mask_id is not None and np.any(prompts == process.mask_id):
      rows = int(np.any(prompts == process.mask_id, axis=1).sum())
      raise EvalError(f"{field}={path!r}: {rows} of {num_samples} prompts contain the mask id "
                      f"{process.mask_id}; a prompt must be clean text (its decoded prompt "
                      f"would drop the token)")
  return prompts


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


def _agreed_skip(done: dict, keys) -> list[tuple[int, int, float]]:
  """The saved (NFE, seed, τ) to skip, as process 0 sees them (every process must skip
  alike)."""
  if jax.process_count() == 1:
    return [k for k in keys if k in done]
  flags = multihost_utils.broadcast_one_to_all(np.asarray([k in done for k in keys], np.int32))
  return [k for k, f in zip(keys, flags) if f]


def _merge(new_rows: dict, new_samples: dict, done: dict, keys
           ) -> tuple[list[dict], list[dict]]:
  """Rows and samples of this run and of the saved (NFE, seed, τ), in ``keys``' order
  (temperature-major, then NFE-major as evaluate() orders)."""
  rows, samples = [], []
  for key in keys:
    if key in new_rows:
      rows.append(new_rows[key])
      samples.extend(new_samples.get(key, []))
    else:
      rows.append(done[key]["row"])
      samples.extend(done[key]["samples"] or [])
  return rows, samples


def _progress_path(progress_dir: str, nfe: int, seed: int, tau: float, own_tau: float) -> str:
  """One file per finished (NFE, seed, τ); the model's own τ keeps the name of runs without
  a sweep, so a sweep resumes them."""
  tag = "" if tau == own_tau else f"-tau{tau!r}"
  return os.path.join(progress_dir, f"nfe{int(nfe)}-seed{int(seed)}{tag}.json")


def _load_progress(progress_dir: str, fingerprint: dict, keys, own_tau: float) -> dict:
  """{(nfe, seed, τ): saved pair} for those an interrupted run of the same settings saved.

  A saved pair from other weights or settings is not reused (and is overwritten).
  """
  done = {}
  want = json.loads(json.dumps(fingerprint))  # as it reads back from JSON
  for nfe, seed, tau in keys:
    path = _progress_path(progress_dir, nfe, seed, tau, own_tau)
    if not os.path.isfile(path):
      continue
    try:
      with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
    if saved.get("fingerprint") == want:
      done[(nfe, seed, tau)] = saved
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
  except OSError as e:   # a disk that fills up, a directory that vanishes, ... mid-run
    print(f"error: writing the evaluation to {workdir} failed ({_one_line(e)}); the finished "
          f"(NFE, seed) pairs are in {os.path.join(str(workdir), PROGRESS_DIR)}: free space "
          f"and rerun the same command to resume", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    saved = _saved_pairs(workdir)
    print(f"error: interrupted (Ctrl-C); {saved} finished (NFE, seed) pairs are saved in "
          f"{os.path.join(os.path.abspath(str(workdir)), PROGRESS_DIR)}: rerun the same "
          f"command to resume", file=sys.stderr)
    return 130
  if not payload:  # processes other than 0 write and print nothing
    return 0
  print(report.markdown_table([(payload["label"], payload["summary"])], bold_best=False))
  print(f"wrote {os.path.join(workdir, RESULTS_JSON)}, {RESULTS_MD}"
        + (f", {SAMPLES_JSONL}" if config.write_samples else ""))
  return 0


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  if isinstance(e, OSError) and e.filename is not None:
    text = f"{e.filename}: {e.strerror or text}"
  return (text.splitlines() or [type(e).__name__])[0]


def _saved_pairs(workdir) -> int:
  try:
    return sum(1 for f in os.listdir(os.path.join(str(workdir), PROGRESS_DIR))
               if f.endswith(".json"))
  except (OSError, TypeError):
    return 0
