"""The training loop: continuation or TokenDrift refinement of a converted backbone.

``train(config, workdir)`` is what ``launch/train.py`` runs. In order:

1. validate the config and the init checkpoint and build the data iterators (errors stop
   the run before anything is written to ``workdir``);
2. build the mesh, the train state (params, AdamW, EMA, queues) sharded by
   :mod:`tokendrift_jax.sharding`, and the jitted step (:mod:`tokendrift_jax.train.step`);
3. resume from ``workdir/checkpoints`` when a checkpoint is there;
4. loop: step, log (``metrics.jsonl``, TensorBoard, tqdm), checkpoint, evaluate;
   a SIGTERM makes the loop checkpoint and stop after the current step;
5. export the final weights as a backbone checkpoint (``workdir/backbone``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from tokendrift_jax import checkpoints
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import make_process_for_model
from tokendrift_jax.diffusion import metrics as diff_metrics
from tokendrift_jax.drift import objective as obj_lib
from tokendrift_jax.models.dit import DiTConfig
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import losses
from tokendrift_jax.train import metrics_writer
from tokendrift_jax.train import optim
from tokendrift_jax.train import step as step_lib

OBJECTIVES = ("drift", "continuation")
SHAPE_FIELDS = ("vocab_size", "hidden_size", "cond_dim", "n_blocks", "n_heads", "mlp_ratio",
                "time_conditioning")
EXIT_PREEMPTED = 143


class TrainError(ValueError):
  """A configuration or input problem, reported as one line before anything is written."""


# ----------------------------------------------------------------------------- setup


def model_config(config: ml_collections.ConfigDict) -> DiTConfig:
  fields = {f.name for f in dataclasses.fields(DiTConfig)}
  try:
    return DiTConfig(**{k: config.model[k] for k in fields})
  except (KeyError, TypeError, ValueError) as e:
    raise TrainError(f"config.model: {e}") from e


def _offline_hint(path: str, backbone: str) -> str:
  hub = {"mdlm": "kuleshov-group/mdlm-owt", "duo": "s-sahoo/duo"}.get(backbone, path)
  return (f"this machine has no model hub: download {hub} elsewhere (e.g. `huggingface-cli "
          f"download {hub} --local-dir SRC`), convert it with `python -m convert SRC DST`, and "
          f"pass --config.init_checkpoint=DST")


def resolve_init_checkpoint(config: ml_collections.ConfigDict) -> tuple[DiTConfig, str | None]:
  """The architecture to train and the checkpoint to start from (None = from scratch)."""
  want = model_config(config)
  path = str(config.init_checkpoint or "")
  if not path:
    if config.objective == "drift":
      raise TrainError("objective 'drift' needs config.init_checkpoint: the frozen encoder "
                       "is a copy of the initial checkpoint")
    return want, None
  if not os.path.isdir(path):
    raise TrainError(f"config.init_checkpoint={path!r} is not a directory. "
                     + _offline_hint(path, config.backbone))
  try:
    have, meta = checkpoints.read_backbone_config(path)
  except checkpoints.CheckpointError as e:
    raise TrainError(f"config.init_checkpoint: {e}") from e
  if meta.get("arch") and meta["arch"] != config.backbone:
    raise TrainError(f"config.init_checkpoint={path!r} is a {meta['arch']} backbone but "
                     f"config.backbone={config.backbone!r}")
  bad = [f"model.{f}: checkpoint {getattr(have, f)!r} vs config {getattr(want, f)!r}"
         for f in SHAPE_FIELDS if getattr(have, f) != getattr(want, f)]
  if want.length > have.length:
    bad.append(f"model.length: config {want.length} exceeds the checkpoint's {have.length}")
  if bad:
    raise TrainError(f"config.init_checkpoint={path!r} disagrees with the config: "
                     + "; ".join(bad))
  return want, path


def check_batch_config(config, mesh, process_count: int) -> None:
  g, b = int(config.batch.global_batch), int(config.batch.micro_batch)
  shards = sharding.num_batch_shards(mesh)
  if g < 1 or b < 1:
    raise TrainError(f"config.batch.global_batch={g} and micro_batch={b} must be >= 1")
  if g % b:
    raise TrainError(f"config.batch.global_batch={g} is not divisible by "
                     f"config.batch.micro_batch={b}")
  if b % shards:
    raise TrainError(f"config.batch.micro_batch={b} is not divisible by the {shards} devices "
                     f"of the mesh {dict(mesh.shape)}; every micro-batch is spread over all "
                     f"devices")
  if g % process_count:
    raise TrainError(f"config.batch.global_batch={g} is not divisible by the "
                     f"{process_count} processes")
  e = int(config.batch.eval_global_batch)
  if e % shards or e % process_count:
    raise TrainError(f"config.batch.eval_global_batch={e} must be divisible by the {shards} "
                     f"devices and {process_count} processes")


def make_mesh(config):
  n = int(config.mesh.get("num_devices", 0) or 0)
  devices = jax.devices()
  if n > 0:
    if jax.process_count() > 1:
      raise TrainError("config.mesh.num_devices applies to single-process runs only")
    if n > len(devices):
      raise TrainError(f"config.mesh.num_devices={n} but only {len(devices)} devices exist")
    devices = devices[:n]
  try:
    return sharding.make_mesh(tuple(config.mesh.shape), devices)
  except ValueError as e:
    raise TrainError(f"config.mesh: {e}") from e


def check_ema_config(config) -> None:
  if config.ema.evaluate not in ("raw", "ema"):
    raise TrainError(f"config.ema.evaluate must be 'raw' or 'ema', got {config.ema.evaluate!r}")
  if config.ema.evaluate == "ema" and not config.ema.enabled:
    raise TrainError("config.ema.evaluate='ema' but config.ema.enabled is False")


def drift_config(config) -> obj_lib.DriftConfig:
  d = config.drift.to_dict()
  d["temperatures"] = tuple(d["temperatures"])
  try:
    return obj_lib.DriftConfig(**d)
  except (TypeError, ValueError) as e:
    raise TrainError(f"config.drift: {e}") from e


def make_data(config, seq_len: int, vocab_size: int, process):
  """(train iterator, eval iterator factory or None).

  The token ids of every split are checked against the model before training, the same
  way on every process (a per-batch failure on one process would leave the others
  waiting in the step's collectives).
  """
  kind = config.data.get("kind", "text")
  g, e = int(config.batch.global_batch), int(config.batch.eval_global_batch)
  if kind == "text":
    from tokendrift_jax.data import input_pipeline  # pylint: disable=import-outside-toplevel
    mask_id = getattr(process, "mask_id", None)
    max_id = vocab_size - 2 if mask_id == vocab_size - 1 else vocab_size - 1
    return input_pipeline.make_datasets(config.data, global_batch=g, seq_len=seq_len,
                                        seed=int(config.seed), eval_global_batch=e,
                                        max_token_id=max_id)
  if kind != "tokens":
    raise TrainError(f"config.data.kind must be 'text' or 'tokens', got {kind!r}")
  from tokendrift_jax.data import input_pipeline  # pylint: disable=import-outside-toplevel
  arrays = {}
  for split in ("train_tokens", "valid_tokens"):
    path = str(config.data.get(split, "") or "")
    if not path:
      continue
    if not os.path.isfile(path):
      raise TrainError(f"config.data.{split}={path!r}: no such file")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2 or arr.shape[0] == 0:
      raise TrainError(f"config.data.{split}={path!r}: expected a non-empty int [N, length] "
                       f"array, got shape {arr.shape}")
    if arr.shape[1] != seq_len:
      raise TrainError(f"config.data.{split}={path!r} has rows of length {arr.shape[1]}, the "
                       f"model trains on config.model.length={seq_len}")
    check_token_ids(arr, vocab_size, process, f"config.data.{split}={path!r}")
    arrays[split] = arr
  if "train_tokens" not in arrays:
    raise TrainError("config.data.kind='tokens' needs config.data.train_tokens")
  pi, pc = jax.process_index(), jax.process_count()
  train = input_pipeline.train_dataset(arrays["train_tokens"], global_batch=g,
                                       seed=int(config.seed), process_index=pi, process_count=pc)
  train_iter = iter(train.to_iter_dataset())
  if "valid_tokens" not in arrays:
    return train_iter, None
  valid = input_pipeline.eval_dataset(arrays["valid_tokens"], global_batch=e, process_index=pi,
                                      process_count=pc)

  def eval_factory(num_batches=None):
    ds = valid if num_batches is None else valid[:int(num_batches)]
    return iter(ds.to_iter_dataset())

  eval_factory.num_batches = len(valid)
  return train_iter, eval_factory


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


def check_token_ids(batch: np.ndarray, vocab_size: int, process, what: str) -> None:
  lo, hi = int(batch.min()), int(batch.max())
  if lo < 0 or hi >= vocab_size:
    raise TrainError(f"{what}: token ids span [{lo}, {hi}] but the model vocabulary is "
                     f"{vocab_size}; the tokenizer does not match the backbone")
  mask_id = getattr(process, "mask_id", None)
  if mask_id is not None and np.any(batch == mask_id):
    raise TrainError(f"{what}: clean data contains the mask id {mask_id}")


def process_for(config, model_cfg: DiTConfig):
  """The diffusion process of the config's backbone family."""
  try:
    return make_process_for_model(config.backbone, model_cfg, eps=config.diffusion.eps,
                                  sampling_eps=config.diffusion.sampling_eps,
                                  antithetic=config.diffusion.antithetic)
  except (TypeError, ValueError) as e:
    raise TrainError(f"config.backbone / config.diffusion: {e}") from e


def model_graphdef(config, model_cfg: DiTConfig):
  """The NNX graph of the backbone as config.model asks (dtype, attention, remat, scan)."""
  return checkpoints.graphdef(
      model_cfg, dtype=jnp.dtype(config.model.dtype),
      attention_impl=config.model.attention_impl or None, remat=bool(config.model.remat),
      remat_policy=str(config.model.get("remat_policy", "") or ""),
      scan_layers=bool(config.model.get("scan_layers", False)))


@dataclasses.dataclass
class StepParts:
  """The compiled-to-be pieces of a run, independent of data and checkpoints."""
  ctx: losses.StepContext
  optimizer: Any
  init_state: Callable[[Any], step_lib.TrainState]  # params -> TrainState (host)
  state_shardings: step_lib.TrainState
  encoder_shardings: Any                            # None for continuation
  step_fn: Callable                                 # jitted (state, batch, enc) -> ...
  eval_fn: Callable                                 # jitted (params, batch, key) -> sums


def build_step(config, model_cfg: DiTConfig, mesh, process,
               dcfg: obj_lib.DriftConfig | None) -> StepParts:
  """The sharded, jitted train and eval steps of ``config`` (shared with the benchmark)."""
  gdef = model_graphdef(config, model_cfg)
  total = int(config.train.steps)
  optimizer = optim.make_optimizer(config.optim, total)

  def init_state(params):
    return step_lib.init_state(
        params, optimizer, seed=int(config.seed), ema=bool(config.ema.enabled),
        queue_size=None if dcfg is None else dcfg.queue_size,
        feature_dim=2 * model_cfg.hidden_size)

  abstract = checkpoints.abstract_params(model_cfg)
  shardings = step_lib.state_sharding(jax.eval_shape(init_state, abstract), mesh,
                                      config.mesh.param_sharding)
  enc_shardings = None
  if dcfg is not None:
    enc_shardings = sharding.param_sharding(abstract, mesh, config.mesh.param_sharding)
  ctx = losses.StepContext(graphdef=gdef, process=process, drift=dcfg, mesh=mesh,
                           dropout=model_cfg.dropout > 0,
                           compute_dtype=jnp.dtype(config.model.dtype))
  scfg = step_lib.StepConfig(micro_batch=int(config.batch.micro_batch),
                             ema_decay=float(config.ema.decay) if config.ema.enabled else None,
                             lr_schedule=optim.learning_rate_schedule(config.optim, total),
                             ema_warmup=bool(config.ema.get("warmup", True)))
  step_fn = step_lib.jit_train_step(step_lib.make_train_step(ctx, optimizer, scfg), shardings,
                                    mesh, enc_shardings)
  eval_fn = jax.jit(step_lib.make_eval_step(ctx),
                    in_shardings=(shardings.params, sharding.batch_sharding(mesh),
                                  sharding.replicated(mesh)),
                    out_shardings=sharding.replicated(mesh))
  return StepParts(ctx=ctx, optimizer=optimizer, init_state=init_state,
                   state_shardings=shardings, encoder_shardings=enc_shardings,
                   step_fn=step_fn, eval_fn=eval_fn)


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  model_cfg: DiTConfig
  process: Any
  ctx: losses.StepContext
  state: step_lib.TrainState
  state_shardings: Any
  step_fn: Callable
  eval_fn: Callable
  encoder_params: Any
  train_iter: Any
  eval_factory: Callable | None
  checkpointer: checkpointing.Checkpointer
  writer: metrics_writer.MetricsWriter
  total_steps: int
  temperatures: tuple[float, ...]
  init_checkpoint: str | None


def _meta(config, model_cfg: DiTConfig) -> dict:
  return {"config": json.loads(config.to_json_best_effort()), "model": model_cfg.to_dict(),
          "backbone": config.backbone, "objective": config.objective}


def _check_resume_meta(meta: dict, config, model_cfg: DiTConfig, where: str) -> None:
  problems = []
  if meta.get("model") != model_cfg.to_dict():
    problems.append(f"model {meta.get('model')} vs config {model_cfg.to_dict()}")
  for key in ("backbone", "objective", "seed", "init_checkpoint"):
    saved = meta.get("config", {}).get(key, meta.get(key))
    if saved != config[key]:
      problems.append(f"{key} {saved!r} vs config {config[key]!r}")
  if config.objective == "drift":
    q = meta.get("config", {}).get("drift", {}).get("queue_size")
    if q != config.drift.queue_size:
      problems.append(f"drift.queue_size {q} vs config {config.drift.queue_size}")
  if problems:
    raise TrainError(f"{where} holds a checkpoint of a different run ("
                     + "; ".join(problems) + "); use another --workdir or delete it")


def build(config: ml_collections.ConfigDict, workdir: str) -> Run:
  if config.objective not in OBJECTIVES:
    raise TrainError(f"config.objective must be one of {OBJECTIVES}, got {config.objective!r}")
  model_cfg, init_path = resolve_init_checkpoint(config)
  mesh = make_mesh(config)
  check_batch_config(config, mesh, jax.process_count())
  check_ema_config(config)
  dcfg = drift_config(config) if config.objective == "drift" else None
  process = process_for(config, model_cfg)
  train_iter, eval_factory = make_data(config, model_cfg.length, model_cfg.vocab_size,
                                        process)
  check_eval_batches(config, eval_factory)

  workdir = os.path.abspath(workdir)
  if config.train.resume:
    found = checkpointing.peek_latest_meta(workdir)
    if found is not None:
      _check_resume_meta(found[1], config, model_cfg, os.path.join(workdir, "checkpoints"))

  # Inputs are valid: from here on the run writes to workdir.
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  parts = build_step(config, model_cfg, mesh, process, dcfg)
  if init_path is not None:
    _, params, _ = checkpoints.load_backbone_params(init_path)
  else:
    params = checkpoints.init_params(model_cfg, int(config.seed))
  state = sharding.to_global(parts.init_state(params), parts.state_shardings)
  encoder_params = None
  if dcfg is not None:
    encoder_params = sharding.to_global(params, parts.encoder_shardings)
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=int(config.train.keep_checkpoints),
                                    save_every=int(config.train.checkpoint_every))
  writer = metrics_writer.MetricsWriter(workdir, enabled=is_main)
  return Run(config=config, workdir=workdir, mesh=mesh, model_cfg=model_cfg, process=process,
             ctx=parts.ctx, state=state, state_shardings=parts.state_shardings,
             step_fn=parts.step_fn, eval_fn=parts.eval_fn, encoder_params=encoder_params,
             train_iter=train_iter, eval_factory=eval_factory, checkpointer=ckpt,
             writer=writer, total_steps=int(config.train.steps),
             temperatures=() if dcfg is None else dcfg.temperatures, init_checkpoint=init_path)


def maybe_resume(run: Run) -> int:
  """Restores the latest checkpoint in workdir (if any and resume is on); returns the step."""
  latest = run.checkpointer.latest_step()
  if latest is None or not run.config.train.resume:
    return 0
  abstract = checkpointing.abstract_like(run.state)
  state, data_state, meta = run.checkpointer.restore(latest, abstract)
  _check_resume_meta(meta, run.config, run.model_cfg, run.checkpointer.directory)
  run.state = state
  run.train_iter.set_state(data_state)
  if run.writer.enabled:  # process 0 owns the log; others rewriting it would race
    metrics_writer.truncate_jsonl(run.writer.path, latest)
  logging.info("resumed from %s at step %d", run.checkpointer.directory, latest)
  return int(latest)


def save(run: Run, step: int) -> None:
  # A step that is already on disk (e.g. the last periodic save) is not written twice.
  run.checkpointer.save(step, run.state, run.train_iter.get_state(),
                        _meta(run.config, run.model_cfg))


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
  shard = sharding.batch_sharding(run.mesh)
  for i, local in enumerate(run.eval_factory(num_batches)):
    batch = jax.make_array_from_process_local_data(shard, np.asarray(local, np.int32))
    meter.update(run.eval_fn(params, batch, jax.random.fold_in(key, i)))
  return {f"val/{k}": v for k, v in meter.compute().items()}


def export_backbone(run: Run) -> str:
  """Writes the final (raw or EMA, per config.ema.evaluate) weights as a backbone ckpt."""
  params = eval_params(run)
  params = multihost_utils.process_allgather(params, tiled=True)
  path = os.path.join(run.workdir, "backbone")
  cfg = run.model_cfg
  meta = {"arch": run.config.backbone, "source": run.workdir,
          "step": int(jax.device_get(run.state.step)), "weights": run.config.ema.evaluate,
          "objective": run.config.objective}
  checkpoints.save_backbone(path, cfg, jax.tree.map(np.asarray, params), meta=meta, force=True)
  return path


class _Preemption:
  """SIGTERM -> finish the current step, checkpoint, stop.

  With several processes the stop must happen at the same step everywhere (the step and
  the save are collectives): the flag is agreed on with an all-gather at log steps, where
  the host already waits for the device, so a signal that reaches any process stops all of
  them at the next log step. A single process stops after the current step.
  """

  def __init__(self):
    self.requested = False
    self._old = None

  def should_stop(self, at_log_step: bool) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if not at_log_step:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.requested, np.int32))
    return bool(np.any(flags))

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._old = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


Hook = Callable[["Run", int], dict]


def train(config: ml_collections.ConfigDict, workdir: str, hooks: Sequence[Hook] = ()) -> dict:
  """Runs (or resumes) a training run. Returns a summary dict.

  ``hooks`` are called after every step as ``hook(run, step)``; each decides whether it is
  due and returns scalars to log (or an empty dict).
  """
  run = build(config, workdir)
  start = maybe_resume(run)
  total, log_every = run.total_steps, max(1, int(config.train.log_every))
  eval_every = int(config.train.eval_every)
  is_main = jax.process_index() == 0
  batch_shard = sharding.batch_sharding(run.mesh)
  tokens_per_step = int(config.batch.global_batch) * run.model_cfg.length
  summary: dict[str, Any] = {"workdir": run.workdir, "start_step": start, "preempted": False}
  last_metrics: dict[str, float] = {}
  bar = tqdm(total=total, initial=start, desc=f"{config.objective}",
             disable=not (is_main and config.train.progress), dynamic_ncols=True)
  step = start
  try:
    with _Preemption() as preempt:
      t_last, n_since, t_compile = time.time(), 0, None
      stop = False
      while step < total and not stop:
        # Token ids were checked for the whole split in make_data, on every process alike.
        local = np.asarray(next(run.train_iter), np.int32)
        batch = jax.make_array_from_process_local_data(batch_shard, local)
        run.state, metrics = run.step_fn(run.state, batch, run.encoder_params)
        step += 1
        n_since += 1
        bar.update(1)
        if step % log_every == 0 or step == total:
          scalars = metrics_writer.flatten_metrics(metrics, run.temperatures)
          now = time.time()
          if t_compile is None:
            t_compile = now - t_last
            scalars["compile_and_first_steps_s"] = t_compile
          else:
            scalars["step_time_s"] = (now - t_last) / n_since
            scalars["tokens_per_s"] = tokens_per_step / scalars["step_time_s"]
          t_last, n_since = now, 0
          if not all(math.isfinite(v) for v in scalars.values()):
            raise FloatingPointError(f"non-finite metrics at step {step}: {scalars}")
          run.writer.write(step, scalars)
          last_metrics = scalars
          bar.set_postfix(loss=f"{scalars['loss']:.4g}")
        if run.checkpointer.should_save(step):
          save(run, step)
        ev = {}
        if eval_every > 0 and (step % eval_every == 0 or step == total):
          ev.update(validation_nll(run, int(config.train.eval_batches)))
        for hook in hooks:  # each hook decides whether it is due at this step
          ev.update(hook(run, step) or {})
        if ev:
          run.writer.write(step, ev)
          last_metrics.update(ev)
          t_last = time.time()
        stop = preempt.should_stop(step % log_every == 0)
      if stop and step < total:
        save(run, step)
        summary["preempted"] = True
        logging.warning("SIGTERM: checkpointed step %d in %s", step, run.checkpointer.directory)
    if not summary["preempted"]:
      save(run, step)
      if config.train.export_backbone:
        summary["backbone"] = export_backbone(run)
  finally:
    bar.close()
    run.checkpointer.close()
    run.writer.close()
  summary.update(step=step, metrics=last_metrics)
  return summary
