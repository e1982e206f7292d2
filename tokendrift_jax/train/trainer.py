"""The training loop: continuation or TokenDrift refinement of a converted backbone.

``train(config, workdir)`` is what ``launch/train.py`` runs. In order:

1. validate the config and the init checkpoint and build the data iterators (errors stop
   the run before anything is written to ``workdir``);
2. build the mesh, the train state (params, AdamW, EMA, the objective's state) sharded by
   :mod:`tokendrift_jax.sharding`, and the jitted step (:mod:`tokendrift_jax.train.step`);
3. resume from ``workdir/checkpoints`` when a checkpoint is there;
4. loop: step, log (``metrics.jsonl``, TensorBoard, tqdm), checkpoint, evaluate;
   a SIGTERM or a first Ctrl-C makes the loop checkpoint and stop after the current step
   (exit 143 / 130); a second Ctrl-C aborts at once (:class:`Interrupted`);
5. export the final weights as a backbone checkpoint (``workdir/backbone``).

Fault tolerance:

* every step computes on the device whether its update and metrics are finite (one bool,
  ``metrics["finite"]``); the host reads it at log steps and before every save (periodic,
  final, on a signal), so a non-finite state is never saved and never rotates a finite
  checkpoint out. ``config.train.nonfinite="stop"`` (default) then ends the run with
  :class:`NonFiniteError` after writing that step's metrics row; ``"skip"`` keeps the old
  state and counts the step (``skipped_steps``).
* resume restores the newest checkpoint that reads; a damaged one is reported in one line
  and the next older step is tried (:meth:`checkpointing.Checkpointer.restore_newest_intact`).
* shutdown (TensorBoard writer, checkpoint manager) waits a bounded time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from tokendrift_jax import checkpoints
from tokendrift_jax import fs
from tokendrift_jax import models
from tokendrift_jax import objectives
from tokendrift_jax import runtime
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import metrics as diff_metrics
from tokendrift_jax.train import builder
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import metrics_writer
from tokendrift_jax.train import optim
from tokendrift_jax.train import step as step_lib
from tokendrift_jax.train.builder import TrainError
from tokendrift_jax.train.preemption import EXIT_INTERRUPTED, EXIT_PREEMPTED, Preemption

__all__ = ["EXIT_INTERRUPTED", "EXIT_PREEMPTED", "Hook", "Interrupted",
           "NonFiniteError", "Run", "TrainError", "build", "train"]


class NonFiniteError(TrainError):
  """A step produced a non-finite state (config.train.nonfinite="stop"); nothing
  non-finite was saved. ``step``: where it was found; ``last_checkpoint``: what a rerun
  resumes from (None: no checkpoint)."""

  def __init__(self, message: str, step: int, last_checkpoint: int | None):
    super().__init__(message)
    self.step, self.last_checkpoint = step, last_checkpoint


class Interrupted(KeyboardInterrupt):
  """A second Ctrl-C: the run stopped at once, without saving."""


# ----------------------------------------------------------------------------- setup


def _offline_hint(path: str, family: models.Family, process: str) -> str:
  hub = family.hub_names.get(process, path)
  # The converter's default family is the DiT's; others name theirs.
  flag = "" if family.name == "dit" else f" --family {family.name}"
  return (f"this machine has no model hub: download {hub} elsewhere (e.g. `huggingface-cli "
          f"download {hub} --local-dir SRC`), convert it with `python -m convert SRC DST{flag}`, "
          f"and pass --config.init_checkpoint=DST")


def resolve_init_checkpoint(config: ml_collections.ConfigDict) -> tuple[Any, str | None]:
  """The architecture to train and the checkpoint to start from (None = from scratch).

  The checkpoint must be of the config's family and diffusion process, and agree with
  ``config.model`` in every field but the family's ``compatible_fields``; ``length`` may
  be shorter than the checkpoint's.
  """
  want = builder.model_config(config)
  family = models.family_of(want)
  process = str(config.diffusion.process)
  path = str(config.init_checkpoint or "")
  if not path:
    cls = objectives.get(str(config.objective))
    if cls.needs_init_checkpoint:
      raise TrainError(f"objective {cls.name!r} needs config.init_checkpoint: it starts from "
                       f"a trained backbone (its {cls.frozen_kind or 'teacher'} is a copy of "
                       f"the initial checkpoint)")
    return want, None
  if not os.path.isdir(path):
    raise TrainError(f"config.init_checkpoint={path!r} is not a directory. "
                     + _offline_hint(path, family, process))
  try:
    have, meta = checkpoints.read_backbone_config(path)
  except checkpoints.CheckpointError as e:
    raise TrainError(f"config.init_checkpoint: {e}") from e
  if meta["family"] != family.name:
    raise TrainError(f"config.init_checkpoint={path!r} is a {meta['family']!r} backbone but "
                     f"config.model.family={family.name!r}")
  if meta.get("process") and meta["process"] != process:
    raise TrainError(f"config.init_checkpoint={path!r} is a {meta['process']} backbone but "
                     f"config.diffusion.process={process!r}")
  skip = set(family.compatible_fields) | {"length"}
  bad = [f"model.{f}: checkpoint {getattr(have, f)!r} vs config {getattr(want, f)!r}"
         for f in (fl.name for fl in dataclasses.fields(want))
         if f not in skip and getattr(have, f) != getattr(want, f)]
  if want.length > have.length:
    bad.append(f"model.length: config {want.length} exceeds the checkpoint's {have.length}")
  if bad:
    raise TrainError(f"config.init_checkpoint={path!r} disagrees with the config: "
                     + "; ".join(bad))
  return want, path


def check_finite_params(params, path: str) -> None:
  """TrainError naming the first leaf of the (host, numpy) ``params`` loaded from
  ``config.init_checkpoint`` that holds an inf or NaN.

  The base case of the step's finite flag (:func:`tokendrift_jax.train.step.update_finite`
  reads only what a step can make non-finite from a finite state): a fresh initialisation
  is finite by construction and a checkpoint this trainer wrote was saved only with a true
  flag, so what enters from outside is checked here, once, where it is loaded."""
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    x = np.asarray(leaf)
    if np.issubdtype(x.dtype, np.inexact) and not np.all(np.isfinite(x)):
      bad = int(x.size - np.count_nonzero(np.isfinite(x)))
      raise TrainError(f"config.init_checkpoint={path!r}: parameter "
                       f"{jax.tree_util.keystr(keypath)} {list(x.shape)} holds {bad} inf or "
                       f"NaN entr{'y' if bad == 1 else 'ies'}; nothing was trained")


def make_data(config, seq_len: int, process):
  """(train iterator, eval iterator factory or None).

  The token ids of every split are checked against the model before training, the same
  way on every process (a per-batch failure on one process would leave the others
  waiting in the step's collectives).
  """
  kind = config.data.get("kind", "text")
  g, e = int(config.batch.global_batch), int(config.batch.eval_global_batch)
  # Imported here: the text pipeline pulls in tokenizers and datasets.
  # pylint: disable=import-outside-toplevel
  if kind == "text":
    from tokendrift_jax.data import input_pipeline
    return input_pipeline.make_datasets(config.data, global_batch=g, seq_len=seq_len,
                                        seed=int(config.seed), eval_global_batch=e,
                                        max_token_id=process.text_vocab_size - 1)
  if kind != "tokens":
    raise TrainError(f"config.data.kind must be 'text' or 'tokens', got {kind!r}")
  from tokendrift_jax.data import tokens
  try:
    return tokens.make_datasets(config.data, global_batch=g, eval_global_batch=e,
                                seq_len=seq_len, seed=int(config.seed), process=process,
                                prompt_lengths=config.get("prompt", {}).get("mode") == "data")
  except ValueError as err:
    raise TrainError(str(err)) from err


def check_eval_batches(config, eval_factory) -> None:
  """config.train.eval_batches must fit the validation split (checked before training)."""
  if int(config.train.eval_every) <= 0:
    return
  if eval_factory is None:
    raise TrainError("config.train.eval_every > 0 needs a validation split (data.valid_docs "
                     "> 0, or data.valid_tokens); set config.train.eval_every=0 to skip it")
  available = eval_factory.num_batches
  if not 1 <= int(config.train.eval_batches) <= available:
    raise TrainError(f"config.train.eval_batches={config.train.eval_batches} must be in "
                     f"[1, {available}] (full validation batches of "
                     f"config.batch.eval_global_batch={config.batch.eval_global_batch})")


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass
class Run:
  """A built run: its step, state, data and outputs (the trainer's own business).

  Hooks never see it; they get the step and the evaluated parameters.
  """
  config: ml_collections.ConfigDict
  workdir: str
  parts: builder.StepParts
  state: step_lib.TrainState
  frozen: Any  # the objective's frozen tree (e.g. TokenDrift's encoder), or None
  train_iter: Any
  eval_factory: Callable | None
  checkpointer: checkpointing.Checkpointer
  writer: metrics_writer.MetricsWriter
  init_checkpoint: str | None
  skipped_steps: int = 0  # non-finite updates skipped (config.train.nonfinite="skip")
  lock: fs.WorkdirLock | None = None  # the workdir's one-writer lock (process 0)

  @property
  def model_cfg(self):
    return self.parts.model_cfg

  @property
  def mesh(self):
    return self.parts.mesh

  @property
  def total_steps(self) -> int:
    return int(self.config.train.steps)


def _meta(config, model_cfg) -> dict:
  return {"config": json.loads(config.to_json_best_effort()), "model": model_cfg.to_dict(),
          "family": models.family_of(model_cfg).name,
          "process": str(config.diffusion.process), "objective": config.objective}


def _check_resume_meta(meta: dict, config, model_cfg, objective, where: str) -> None:
  problems = []
  if meta.get("model") != model_cfg.to_dict():
    problems.append(f"model {meta.get('model')} vs config {model_cfg.to_dict()}")
  saved_cfg = meta.get("config", {})
  # Checkpoints written before diffusion.process existed call it "backbone".
  process = meta.get("process", meta.get("backbone"))
  if process != config.diffusion.process:
    problems.append(f"diffusion.process {process!r} vs config {config.diffusion.process!r}")
  family = meta.get("family", checkpoints.LEGACY_FAMILY)
  if family != models.family_of(model_cfg).name:
    problems.append(f"model.family {family!r} vs config {models.family_of(model_cfg).name!r}")
  for key in ("objective", "seed", "init_checkpoint"):
    saved = saved_cfg.get(key, meta.get(key))
    if saved != config[key]:
      problems.append(f"{key} {saved!r} vs config {config[key]!r}")
  # The Adam moment's storage dtype is part of the state: a checkpoint restored onto the
  # other dtype would be cast silently.
  saved_mu = saved_cfg.get("optim", {}).get("mu_dtype", "float32")
  if saved_mu != optim.mu_dtype(config.optim):
    problems.append(f"optim.mu_dtype {saved_mu!r} vs config {optim.mu_dtype(config.optim)!r}")
  for field, want_value in objective.resume_fields().items():
    saved = saved_cfg
    for part in field.split("."):
      saved = saved.get(part, {}) if isinstance(saved, dict) else None
    if saved != want_value:
      problems.append(f"{field} {saved!r} vs config {want_value!r}")
  if problems:
    raise TrainError(f"{where} holds a checkpoint of a different run ("
                     + "; ".join(problems) + "); use another --workdir or delete it")


def check_config(config: ml_collections.ConfigDict) -> None:
  """The checks of the config's own values (no file, device or network is touched):
  TrainError naming the first refused field. :func:`build` starts with them; callers that
  prepare something slow before training (the sample-evaluation hook loads a judge) run
  them first."""
  builder.check_config_values(config)
  builder.check_objective_name(config)
  try:   # the objective's section (config.sdtt, config.dcd, ...), by its own table
    objectives.check_config(config)
  except ValueError as e:
    raise TrainError(str(e)) from e
  builder.nonfinite_policy(config)


def build(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Checks everything, then builds the step, the state and the data of a run.

  Every user error is raised (TrainError, CheckpointError, ...) before ``workdir`` is
  written to.
  """
  check_config(config)
  workdir = check_workdir(config, workdir)
  model_cfg, init_path = resolve_init_checkpoint(config)
  parts = builder.build_step(config, model_cfg)
  train_iter, eval_factory = make_data(config, model_cfg.length, parts.process)
  check_eval_batches(config, eval_factory)

  if config.train.resume:
    found = checkpointing.peek_latest_meta(workdir)
    if found is not None:
      _check_resume_meta(found[1], config, model_cfg, parts.objective,
                         os.path.join(workdir, "checkpoints"))

  # Inputs are valid: from here on the run writes to workdir, as its only writer.
  is_main = jax.process_index() == 0
  try:   # process 0 takes the lock; every process stops alike when it cannot
    lock = runtime.workdir_lock(workdir, "training")
  except fs.DestinationError as e:
    raise TrainError(str(e)) from e
  try:
    if is_main:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))

    if init_path is not None:
      _, params, _ = checkpoints.load_backbone_params(init_path)
      check_finite_params(params, init_path)
    else:
      params = models.init_params(model_cfg, int(config.seed))
    state = sharding.to_global(parts.init_state(params), parts.state_shardings)
    frozen = parts.objective.frozen(params)
    if frozen is not None:
      frozen = sharding.to_global(frozen, parts.frozen_shardings)
    ckpt = checkpointing.Checkpointer(workdir, max_to_keep=int(config.train.keep_checkpoints),
                                      save_every=int(config.train.checkpoint_every))
    writer = metrics_writer.MetricsWriter(workdir, enabled=is_main)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  return Run(config=config, workdir=workdir, parts=parts, state=state,
             frozen=frozen, train_iter=train_iter, eval_factory=eval_factory,
             checkpointer=ckpt, writer=writer, init_checkpoint=init_path, lock=lock)


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  if isinstance(e, OSError) and e.filename is not None:
    text = f"{e.filename}: {e.strerror or text}"
  return (text.splitlines() or [type(e).__name__])[0]


def check_workdir(config, workdir: str) -> str:
  """The absolute workdir, checked before anything heavy: no other run holds it, it can
  be created and written, and (with config.train.export_backbone) ``WORKDIR/backbone`` is
  absent or an earlier backbone checkpoint (the export replaces only those)."""
  workdir = os.path.abspath(workdir)
  try:
    runtime.check_workdir_free(workdir)   # process 0's view, on every process
    fs.check_writable_destination(workdir, kind="dir")
    if config.train.export_backbone:
      fs.check_replace(os.path.join(workdir, "backbone"), force=True, kind="dir",
                       what="the export WORKDIR/backbone",
                       flag="config.train.export_backbone")
  except fs.DestinationError as e:
    raise TrainError(f"--workdir: {e}") from e
  return workdir


def maybe_resume(run: Run) -> int:
  """Restores the newest intact checkpoint in workdir (if any and resume is on); returns
  the step. A damaged newer checkpoint is reported in one line (logging.warning) and
  skipped; TrainError listing the damage when no checkpoint reads."""
  if run.checkpointer.latest_step() is None or not run.config.train.resume:
    if run.writer.enabled:  # rows of a run that stopped before its first checkpoint
      metrics_writer.truncate_jsonl(run.writer.path, 0)
    return 0
  abstract = checkpointing.abstract_like(run.state)
  try:
    found = run.checkpointer.restore_newest_intact(abstract)
  except checkpointing.DamagedCheckpoints as e:
    raise TrainError(str(e)) from None
  if found is None:
    if run.writer.enabled:
      metrics_writer.truncate_jsonl(run.writer.path, 0)
    return 0
  latest, state, data_state, meta = found
  _check_resume_meta(meta, run.config, run.model_cfg, run.parts.objective,
                     run.checkpointer.directory)
  run.state = state
  run.skipped_steps = int(meta.get("skipped_steps", 0))
  run.train_iter.set_state(data_state)
  if run.writer.enabled:  # process 0 owns the log; others rewriting it would race
    metrics_writer.truncate_jsonl(run.writer.path, latest)
  logging.info("resumed from %s at step %d", run.checkpointer.directory, latest)
  return int(latest)


def save(run: Run, step: int) -> None:
  """Checkpoints ``run.state`` (the caller has checked that it is finite)."""
  # A step that is already on disk (e.g. the last periodic save) is not written twice.
  meta = _meta(run.config, run.model_cfg)
  meta["skipped_steps"] = int(run.skipped_steps)
  run.checkpointer.save(step, run.state, run.train_iter.get_state(), meta)


def eval_params(run: Run):
  """The weights that are evaluated and exported: raw or EMA (config.ema.evaluate)."""
  return run.state.ema_params if run.config.ema.evaluate == "ema" else run.state.params


def validation_nll(run: Run, num_batches: int) -> dict[str, float]:
  """NELBO-based validation NLL / bits / PPL over the first ``num_batches`` batches."""
  if run.eval_factory is None:
    return {}
  meter = diff_metrics.NLLMeter()
  params = eval_params(run)
  key = jax.random.PRNGKey(int(run.config.seed) + 1)
  for i, local in enumerate(run.eval_factory(num_batches)):
    batch = jax.make_array_from_process_local_data(run.parts.batch_sharding,
                                                   np.asarray(local, np.int32))
    meter.update(run.parts.eval_fn(params, batch, jax.random.fold_in(key, i)))
  return {f"val/{k}": v for k, v in meter.compute().items()}


def export_backbone(run: Run) -> str:
  """Writes the final (raw or EMA, per config.ema.evaluate) weights as a backbone ckpt."""
  params = eval_params(run)
  params = multihost_utils.process_allgather(params, tiled=True)
  path = os.path.join(run.workdir, "backbone")
  meta = {"process": str(run.config.diffusion.process), "source": run.workdir,
          "step": int(jax.device_get(run.state.step)), "weights": run.config.ema.evaluate,
          "objective": run.config.objective}
  checkpoints.save_backbone(path, run.model_cfg, jax.tree.map(np.asarray, params), meta=meta,
                            force=True)
  return path


# A hook is called after every step as hook(step, params) with the evaluated weights
# (raw or EMA), placed on the mesh; it decides itself whether it is due and returns
# scalars to log (or an empty dict).
Hook = Callable[[int, Any], dict]


def train(config: ml_collections.ConfigDict, workdir: str, hooks: Sequence[Hook] = ()) -> dict:
  """Runs (or resumes) a training run. Returns a summary dict.

  ``hooks`` are called after every step as ``hook(step, params)`` (see :data:`Hook`).
  """
  run = build(config, workdir)
  try:
    start = maybe_resume(run)
  except BaseException:
    run.checkpointer.close()
    run.writer.close()
    if run.lock is not None:
      run.lock.release()
    raise
  policy = builder.nonfinite_policy(config)
  total, log_every = run.total_steps, max(1, int(config.train.log_every))
  temperatures = run.parts.objective.metric_temperatures
  eval_every = int(config.train.eval_every)
  is_main = jax.process_index() == 0
  tokens_per_step = int(config.batch.global_batch) * run.model_cfg.length
  summary: dict[str, Any] = {"workdir": run.workdir, "start_step": start, "preempted": False}
  last_metrics: dict[str, float] = {}
  bar = tqdm(total=total, initial=start, desc=f"{config.objective}",
             disable=not (is_main and config.train.progress), dynamic_ncols=True)
  step = start
  last_saved = start or None
  # Device scalars, updated without a host sync: the state's finite flag (None: no step
  # ran, the state is the initial or restored one), the first step whose update was not
  # finite (0: none) and, for "skip", the number of skipped updates.
  finite, first_bad, skipped = None, None, None
  logged_step = -1

  def skipped_total() -> int:
    return run.skipped_steps + (0 if skipped is None else int(skipped))

  def save_checked(step, metrics):
    nonlocal skipped
    check_finite(step, metrics)
    run.skipped_steps, skipped = skipped_total(), None
    try:
      save(run, step)
    except checkpointing.SaveError as e:
      intact = (f"the newest intact checkpoint is step {last_saved} in "
                f"{run.checkpointer.directory}; free space (or fix the directory) and rerun "
                f"the same command to resume from it" if last_saved else
                "no checkpoint was written; free space (or fix the directory) and rerun to "
                "start over")
      raise TrainError(f"{e}; {intact}") from None

  def log_row(step, metrics, extra):
    nonlocal logged_step
    scalars = metrics_writer.flatten_metrics(metrics, temperatures)
    scalars.update(extra)
    if policy == "skip":
      scalars["skipped_steps"] = float(skipped_total())
    run.writer.write(step, scalars)
    logged_step = step
    return scalars

  def check_finite(step, metrics):
    """Before a save and at log steps: stop (policy "stop") on a non-finite state."""
    if finite is None or policy != "stop" or bool(finite):
      return
    scalars = (metrics_writer.flatten_metrics(metrics, temperatures) if logged_step == step
               else log_row(step, metrics, {}))
    # The loss first, then the metrics in their logged order.
    bad = sorted((k for k, v in scalars.items() if not np.isfinite(v)),
                 key=lambda k: not k.startswith("loss"))
    what = f"{bad[0]}={scalars[bad[0]]}" if bad else "the parameters or optimizer state"
    since = int(first_bad)
    where = f"step {since}" if since in (0, step) else f"step {since} (found at step {step})"
    resume = (f"rerun to resume from the checkpoint of step {last_saved}" if last_saved
              else "rerun to start over (no checkpoint was written)")
    raise NonFiniteError(
        f"non-finite training state at {where}: first non-finite metric {what}; nothing "
        f"non-finite was saved; lower config.optim.lr (or set config.train.nonfinite=skip) "
        f"and {resume}", step=step, last_checkpoint=last_saved)

  try:
    with Preemption() as preempt:
      t_last, n_since, t_compile = time.time(), 0, None
      stop = False
      metrics: dict = {}
      while step < total and not stop:
        # Token ids were checked for the whole split in make_data, on every process alike.
        local = np.asarray(next(run.train_iter), np.int32)
        batch = jax.make_array_from_process_local_data(run.parts.batch_sharding, local)
        run.state, metrics = run.parts.step_fn(run.state, batch, run.frozen)
        metrics = dict(metrics)
        ok = metrics.pop("finite")
        if policy == "skip":
          miss = 1 - ok.astype(np.int32)
          skipped = miss if skipped is None else skipped + miss
          # The state kept is the previous (finite) one.
        else:
          finite = ok if finite is None else finite & ok
          bad_now = jnp.where(ok, 0, step + 1).astype(jnp.int32)
          first_bad = bad_now if first_bad is None else jnp.where(first_bad > 0, first_bad,
                                                                  bad_now)
        step += 1
        n_since += 1
        bar.update(1)
        if step % log_every == 0 or step == total:
          extra = {}
          jax.block_until_ready(metrics)
          now = time.time()
          if t_compile is None:
            t_compile = now - t_last
            extra["compile_and_first_steps_s"] = t_compile
          else:
            extra["step_time_s"] = (now - t_last) / n_since
            extra["tokens_per_s"] = tokens_per_step / extra["step_time_s"]
          t_last, n_since = now, 0
          scalars = log_row(step, metrics, extra)
          check_finite(step, metrics)
          last_metrics = scalars
          bar.set_postfix(loss=f"{scalars['loss']:.4g}")
        if run.checkpointer.should_save(step):
          save_checked(step, metrics)
          last_saved = step
        ev = {}
        if eval_every > 0 and (step % eval_every == 0 or step == total):
          ev.update(validation_nll(run, int(config.train.eval_batches)))
        for hook in hooks:  # each hook decides whether it is due at this step
          ev.update(hook(step, eval_params(run)) or {})
        if ev:
          run.writer.write(step, ev)
          last_metrics.update(ev)
          t_last = time.time()
        stop = preempt.should_stop(step % log_every == 0)
      if stop and step < total:
        save_checked(step, metrics)
        summary["preempted"] = True
        summary["exit_code"] = 128 + preempt.signum
        summary["signal"] = "SIGINT" if summary["exit_code"] == EXIT_INTERRUPTED else "SIGTERM"
        logging.warning("%s: checkpointed step %d in %s", summary["signal"], step,
                        run.checkpointer.directory)
    if not summary["preempted"]:
      save_checked(step, metrics)
      last_saved = step
      if config.train.export_backbone:
        try:
          summary["backbone"] = export_backbone(run)
        except checkpoints.CheckpointError as e:
          raise TrainError(f"{_one_line(e)}; the training checkpoint of step {step} in "
                           f"{run.checkpointer.directory} is intact: rerun the same command "
                           f"to export it") from None
  except KeyboardInterrupt as e:
    if isinstance(e, Interrupted):
      raise
    resume = (f"the checkpoint of step {last_saved}" if last_saved else "the start")
    raise Interrupted(f"interrupted again (Ctrl-C) at step {step}: stopped without saving; "
                      f"a rerun resumes from {resume}") from None
  finally:
    bar.close()
    run.checkpointer.close()
    run.writer.close()
    if run.lock is not None:
      run.lock.release()
  summary.update(step=step, metrics=last_metrics)
  if policy == "skip":
    summary["skipped_steps"] = skipped_total()
  return summary
