"""The controlled comparison of the paper on a synthetic language with an exact judge.

Stages (each resumable: a finished stage is skipped when the command is run again, an
interrupted training stage resumes from its last checkpoint):

1. ``data``: the language (:mod:`tokendrift_jax.data.synthetic`) and train / validation
   corpora drawn from it by seed, saved as int32 ``.npy`` arrays;
2. ``pretrain``: a small backbone trained from scratch with its own diffusion loss
   (MDLM NELBO or DUO ELBO) -- the stand-in for the released checkpoint;
3. ``continuation`` and ``drift`` for every refinement seed: the same budget from the
   same pretrained weights, with the backbone's loss or with TokenDrift;
   the distillation ``baselines`` of ``refine.baselines`` (SDTT for MDLM, DCD for DUO:
   :mod:`tokendrift_jax.objectives`) from the same weights at the TokenDrift stage's model
   FLOPs (:mod:`tokendrift_jax.perf.budget`), their teacher rounds spread evenly over it;
   further named ``variants`` (ablations) are TokenDrift runs with config overrides;
4. ``eval``: samples at each NFE and each sampling temperature of
   ``evaluation.temperatures`` judged by the language's exact likelihood (Gen-PPL = exp
   of the mean per-token NLL) plus entropy; the pretrained model is sampled with the same
   seeds. The table reads τ = 1, and under it each seed's Gen-PPL with a verdict counted
   over seeds (:func:`verdict_report`), since one seed of a short refinement can flip on
   another CPU; with a sweep, every method is also read at the pretrained model's entropy
   (:mod:`tokendrift_jax.eval.frontier`) and the frontier is plotted. Results:
   ``WORKDIR/results.json``, ``results.md``, ``frontier.png``.

Refinement curves (``refine.curve_every`` > 0; off by default): every refinement stage
runs the in-training sample evaluation (:mod:`tokendrift_jax.eval.hook`) with the
language's exact judge at ``evaluation.nfe``, ``refine.curve_samples`` samples and the
stage's seed, every ``curve_every`` steps, at the last step and at step 0 (the pretrained
weights); its rows (``STAGE/eval.jsonl``) go to results.json (``"curves"``: method -> seed
-> rows) and ``WORKDIR/curves_nfe{N}.png`` (Gen-PPL and entropy against step, mean ± SD
over seeds, every method). The curves are presentation: the hook samples with its own key
and never touches the training state or its RNG (step s trains with fold_in(rng, s)), so a
stage's weights are bitwise the same with and without them and the curve settings are not
in its digest. A stage that trained (in part or whole) without the curves now asked for
cannot have them afterwards (only its last checkpoints are kept): that is an error naming
the stage directory to delete, never a silently curve-less result.

Seeds: refinement seed s trains continuation / drift with run seed s and samples them
with sampling seed s; the pretrained model is sampled with every sampling seed. Mean ± SD
over seeds therefore covers both training and sampling randomness.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from tokendrift_jax import checkpoints
from tokendrift_jax import objectives
from tokendrift_jax import sharding
from tokendrift_jax.data import synthetic
from tokendrift_jax.diffusion import make_process_for_model
from tokendrift_jax.train import builder
from tokendrift_jax.train import checkpointing
from tokendrift_jax.eval import entropy
from tokendrift_jax.eval import files
from tokendrift_jax.eval import frontier
from tokendrift_jax.eval import hook as hook_lib
from tokendrift_jax.eval import judges
from tokendrift_jax.eval import plots
from tokendrift_jax.eval import report
from tokendrift_jax.eval import sampling_eval
from tokendrift_jax.perf import budget
from tokendrift_jax.train import trainer

def language(config) -> synthetic.SyntheticLanguage:
  try:
    return synthetic.language_from_config(config.language)
  except ValueError as e:
    raise trainer.TrainError(f"config.language: {e}") from e


def check_vocab(config, lang) -> None:
  """The backbone's text ids must be the language's tokens (the process's vocabulary rule)."""
  model_cfg = builder.model_config(config)
  process = builder.process_for(config, model_cfg)
  if process.text_vocab_size != lang.vocab_size:
    raise trainer.TrainError(
        f"config.model.vocab_size={config.model.vocab_size} gives a "
        f"{config.diffusion.process} model {process.text_vocab_size} text ids but the "
        f"language has {lang.vocab_size} tokens (an MDLM backbone needs one more id for "
        f"the mask)")


def prepare_data(config, workdir: str, lang) -> dict[str, str]:
  """Draws the corpora once (by seed) and stores them under WORKDIR/data."""
  d = os.path.join(workdir, "data")
  paths = {"train": os.path.join(d, "train.npy"), "valid": os.path.join(d, "valid.npy")}
  if all(os.path.exists(p) for p in paths.values()):
    return paths
  os.makedirs(d, exist_ok=True)
  c = config.corpus
  for split, n, seed in (("train", c.train_sequences, c.seed),
                         ("valid", c.valid_sequences, c.seed + 1)):
    tokens = synthetic.sample_corpus(lang, int(seed), int(n), int(config.model.length))
    tmp = paths[split] + ".tmp.npy"
    np.save(tmp, tokens.astype(np.int32))
    os.replace(tmp, paths[split])
  return paths


def _stage_config(config, *, objective: str, init: str, seed: int, data: dict,
                  stage: ml_collections.ConfigDict, overrides: dict | None = None
                  ) -> ml_collections.ConfigDict:
  """A trainer config for one stage, derived from the experiment config."""
  c = copy.deepcopy(config)
  with c.unlocked():
    for key in ("experiment", "language", "corpus", "pretrain", "refine", "variants",
                "evaluation", "workdir"):
      if key in c:
        del c[key]
    c.objective = objective
    c.init_checkpoint = init
    c.seed = int(seed)
    c.data.kind = "tokens"
    c.data.train_tokens = data["train"]
    c.data.valid_tokens = data["valid"]
    c.optim.lr = float(stage.lr)
    c.optim.warmup_steps = int(stage.warmup_steps)
    c.train.steps = int(stage.steps)
    c.batch.global_batch = int(stage.global_batch)
    c.batch.micro_batch = int(stage.micro_batch)
    _apply_overrides(c, overrides or {}, "config")
  return c


def _apply_overrides(node, overrides: dict, where: str) -> None:
  """Sets existing fields of ``node`` from a nested dict (unknown fields are errors)."""
  for key, value in overrides.items():
    if key not in node:
      raise trainer.TrainError(f"variant override {where}.{key}: no such config field")
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      _apply_overrides(node[key], dict(value), f"{where}.{key}")
    else:
      node[key] = value


# Fields that change what is printed or kept on disk, not what is computed.
_PRESENTATION = {"train": ("progress", "log_every", "checkpoint_every", "keep_checkpoints",
                          "eval_every", "eval_batches", "resume")}


# Options added after experiments had run, with the value that reproduces the program
# they ran: left out of the digest at that value, so finished stages keep their digests.
# A key maps to (its neutral value, the keys it makes irrelevant at that value).
_ADDED_AT_DEFAULT = {"drift": {"scale_mode": ("rms", ("fixed_scale",)),
                               "temperature_mode": ("absolute", ())}}


def config_hash(cfg, context: dict) -> str:
  """Digest of everything that determines a stage's result.

  The stage config without presentation fields, with its workdir-dependent paths (the
  corpus files, the init checkpoint) replaced by what they stand for (``context``: the
  language and corpus settings, and the digest of the stage it starts from), so that a
  copied or moved experiment directory keeps its digests; options added later are left
  out at their neutral value (``_ADDED_AT_DEFAULT``).
  """
  d = json.loads(cfg.to_json_best_effort())
  for section, keys in _PRESENTATION.items():
    for k in keys:
      d.get(section, {}).pop(k, None)
  for section, options in _ADDED_AT_DEFAULT.items():
    sec = d.get(section, {})
    for k, (neutral, irrelevant) in options.items():
      if k in sec and sec[k] == neutral:
        for gone in (k,) + irrelevant:
          sec.pop(gone, None)
  for name in objectives.names():  # the sections of the objectives the stage does not run
    section = objectives.get(name).section
    if section and name != d.get("objective"):
      d.pop(section, None)
  d.get("data", {}).pop("train_tokens", None)
  d.get("data", {}).pop("valid_tokens", None)
  d.pop("init_checkpoint", None)
  d["context"] = context
  return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Stage:
  name: str                      # directory under the workdir
  method: str                    # "pretrain", "continuation", "drift", a baseline or variant
  config: ml_collections.ConfigDict
  digest: str
  seeds: tuple[int, ...]         # sampling seeds of its evaluation
  shared: str = ""               # trained in this other experiment's workdir (read only)


def pretrain_root(config, workdir: str) -> str:
  """The workdir whose ``pretrain`` stage this experiment starts from.

  ``config.pretrain.workdir`` ("" = this one) lets experiments on one testbed share a
  finished pretraining stage (e.g. the study's factor runs start from the main study's
  model); its digest must match this config's pretraining, and it is only read.
  """
  shared = str(config.pretrain.get("workdir", "") or "")
  if not shared:
    return workdir
  shared = os.path.abspath(shared)
  return workdir if shared == os.path.abspath(workdir) else shared


def stage_path(stage: Stage, workdir: str) -> str:
  """Where ``stage`` trains (its checkpoints, DONE, backbone, curves)."""
  return os.path.join(stage.shared or workdir, stage.name)


def plan(config, workdir: str, data: dict) -> list[Stage]:
  """Every training stage of the experiment, in run order, with its config and digest."""
  context = {"language": config.language.to_dict(), "corpus": config.corpus.to_dict(),
             "length": int(config.model.length)}
  seeds = tuple(int(s) for s in config.refine.seeds)
  pre = _stage_config(config, objective="continuation", init="", seed=int(config.seed),
                      data=data, stage=config.pretrain)
  with pre.unlocked():
    pre.ema.evaluate = config.pretrain.weights
  root = pretrain_root(config, workdir)
  stages = [Stage("pretrain", "pretrain", pre, config_hash(pre, context), seeds,
                  shared=root if root != workdir else "")]
  init = os.path.join(root, "pretrain", "backbone")
  refine_context = dict(context, init=stages[0].digest)
  variants = config.get("variants", ml_collections.ConfigDict()).to_dict()
  baselines = tuple(str(b) for b in config.refine.get("baselines", ()))
  for seed in seeds:
    todo = [(m, m, None) for m in ("continuation", "drift")]
    todo += [(b, b, None) for b in baselines]
    todo += [(v, "drift", o) for v, o in variants.items()]
    for method, objective, overrides in todo:
      cfg = _stage_config(config, objective=objective, init=init, seed=seed, data=data,
                          stage=config.refine, overrides=overrides)
      if method in baselines:
        drift = _stage_config(config, objective="drift", init=init, seed=seed, data=data,
                              stage=config.refine)
        cfg = matched_baseline(cfg, drift, config.refine.get("baseline_rounds", {}).get(method))
      stages.append(Stage(f"{method}_seed{seed}", method, cfg,
                          config_hash(cfg, refine_context), (seed,)))
  return stages


def matched_baseline(cfg, drift_cfg, rounds: int | None):
  """``cfg`` (a distillation stage) with the most steps whose model FLOPs fit the
  TokenDrift stage ``drift_cfg``'s, a multiple of ``rounds``, split into ``rounds`` equal
  teacher rounds (at most the rounds its config allows, ``Objective.max_rounds``)."""
  objective = str(cfg.objective)
  try:
    kind = objectives.get(objective)
  except ValueError as e:
    raise trainer.TrainError(f"refine.baselines: {e}") from e
  if kind.round_field is None:
    distill = sorted(n for n in objectives.names() if objectives.get(n).round_field)
    raise trainer.TrainError(f"refine.baselines: {objective!r} is not a distillation "
                             f"objective; expected some of {distill}")
  section, field = kind.round_field
  if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
    raise trainer.TrainError(f"refine.baseline_rounds[{objective!r}] must be an int >= 1 "
                             f"(the baseline's teacher rounds), got {rounds!r}")
  allowed = kind.max_rounds(cfg)
  if allowed is not None and not 1 <= rounds <= allowed:
    raise trainer.TrainError(f"refine.baseline_rounds[{objective!r}]={rounds} must be in "
                             f"[1, {allowed}] (the rounds config.{section} allows)")
  c = copy.deepcopy(cfg)
  # One round while counting: the FLOPs of a step do not depend on the round length.
  c[section][field] = c.train.steps = 1
  try:
    steps = budget.matched_steps(drift_cfg, c, multiple=rounds)
  except ValueError as e:
    raise trainer.TrainError(f"refine.baselines ({objective}): {e}") from e
  c.train.steps, c[section][field] = steps, steps // rounds
  return c


# The curve settings a stage's eval.jsonl was written with (beside it in the stage dir).
CURVE_SETTINGS = "curve_settings.json"


def curve_settings(config, stage: Stage) -> dict | None:
  """The refinement-curve settings of ``stage`` (None: no curves for it).

  Curves are drawn for the refinement stages (not the pretraining) when
  ``refine.curve_every`` > 0: every ``curve_every`` steps, the last step and step 0, at the
  experiment's NFEs, with ``refine.curve_samples`` samples and the stage's seed.
  """
  refine = config.refine
  every = refine.get("curve_every", 0)
  samples = refine.get("curve_samples", 64)
  for field, value, low in (("curve_every", every, 0), ("curve_samples", samples, 1)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise trainer.TrainError(f"config.refine.{field} must be an int >= {low}, got "
                               f"{value!r}")
  if every == 0 or stage.method == "pretrain":
    return None
  settings = {"every": int(every), "num_samples": int(samples),
              "nfe": [int(n) for n in config.evaluation.nfe], "seed": int(stage.seeds[0]),
              "batch": min(int(config.evaluation.batch), int(samples)),
              "language": config.language.to_dict(), "steps": int(stage.config.train.steps),
              "digest": stage.digest}
  return json.loads(json.dumps(settings))   # as read back from CURVE_SETTINGS


def curve_steps(settings: dict) -> list[int]:
  """The steps a complete curve has: 0, every ``every`` steps, and the last step."""
  total, every = settings["steps"], settings["every"]
  return sorted({0, total} | set(range(every, total + 1, every)))


def _curve_hook(config, stage: Stage, stage_dir: str, settings: dict):
  """The in-training sample evaluation of ``stage`` with the language's exact judge.

  Built from a copy of the stage config (the stage's own config, and so its digest, does
  not carry the curve settings).
  """
  c = copy.deepcopy(stage.config)
  with c.unlocked():
    se = c.sample_eval
    se.update(dict(enabled=True, every=settings["every"], nfe=tuple(settings["nfe"]),
                   num_samples=settings["num_samples"], batch=settings["batch"],
                   seed=settings["seed"], length=0, eval_init=True, progress=False,
                   judge_kind="synthetic"))
    se.synthetic = ml_collections.ConfigDict(config.language.to_dict())
  try:
    return hook_lib.make_sample_eval_hook(c, stage_dir)
  except hook_lib.EvalError as e:
    raise trainer.TrainError(f"refinement curves of stage {stage.name}: {e}") from e


def _read_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def curve_rows(stage_dir: str, settings: dict) -> list[dict]:
  """The complete curve of a finished stage, or a TrainError naming the directory."""
  path = os.path.join(stage_dir, hook_lib.EVAL_FILE)
  recorded = _read_json(os.path.join(stage_dir, CURVE_SETTINGS))
  rows = files.read_jsonl(path) if os.path.exists(path) else []
  have = {(int(r["step"]), int(r["nfe"])) for r in rows}
  missing = [(st, n) for st in curve_steps(settings) for n in settings["nfe"]
             if (st, n) not in have]
  if recorded != settings or missing:
    why = ("it was trained without them" if recorded is None else
           "it was trained with other curve settings" if recorded != settings else
           f"its {hook_lib.EVAL_FILE} lacks (step, NFE) {missing[:3]}")
    raise trainer.TrainError(
        f"refinement curves (config.refine.curve_every={settings['every']}, curve_samples="
        f"{settings['num_samples']}) are asked for, but stage directory {stage_dir} has "
        f"none: {why}, and they cannot be drawn after training; delete {stage_dir} to "
        f"retrain it with curves (the weights come out bitwise the same), or set "
        f"config.refine.curve_every=0")
  wanted = set(curve_steps(settings))
  return sorted((r for r in rows if int(r["step"]) in wanted),
                key=lambda r: (int(r["step"]), int(r["nfe"])))


def check_curves_possible(config, stages: list[Stage], workdir: str) -> None:
  """Before anything trains: with curves asked for, every stage that has trained (in part or
  whole) must have been trained with these curve settings; one TrainError lists those
  that were not (their directories to delete), so no stage is trained in vain first."""
  stale = []
  for st in stages:
    settings = curve_settings(config, st)
    if settings is None:
      continue
    stage_dir = stage_path(st, workdir)
    done = os.path.exists(os.path.join(stage_dir, "DONE"))
    if done:
      try:
        curve_rows(stage_dir, settings)
      except trainer.TrainError:
        stale.append(stage_dir)
    elif (_read_json(os.path.join(stage_dir, CURVE_SETTINGS)) != settings
          and checkpointing.peek_latest_meta(stage_dir) is not None):
      stale.append(stage_dir)
  if stale:
    raise trainer.TrainError(
        f"refinement curves (config.refine.curve_every={int(config.refine.curve_every)}, "
        f"curve_samples={int(config.refine.curve_samples)}) are asked for, but "
        f"{len(stale)} stage(s) trained without them (they cannot be drawn afterwards): "
        f"delete {' '.join(stale)} to retrain them with curves (the weights come out "
        f"bitwise the same), or set config.refine.curve_every=0")


def _train_stage(stage: Stage, workdir: str, config=None) -> str:
  """Runs (or resumes, or skips) one training stage; returns its exported backbone.

  A finished stage is reused only if it was run with the same config (a digest is kept in
  its DONE file); otherwise this is an error, never a silent reuse of stale results. With
  refinement curves asked for (``config.refine.curve_every``), a stage is run with the
  sample-evaluation hook, and a stage that trained without it (or with other curve
  settings) is an error (:func:`curve_rows`).
  """
  name, cfg, digest = stage.name, stage.config, stage.digest
  stage_dir = stage_path(stage, workdir)
  backbone = os.path.join(stage_dir, "backbone")
  done = os.path.join(stage_dir, "DONE")
  curves = None if config is None else curve_settings(config, stage)
  if stage.shared and not (os.path.isdir(backbone) and os.path.exists(done)):
    raise trainer.TrainError(
        f"config.pretrain.workdir={stage.shared!r}: its stage {name!r} is not finished "
        f"({done} missing); run the experiment that owns it first (this one only reads it)")
  if os.path.isdir(backbone) and os.path.exists(done):
    with open(done) as f:
      recorded = json.load(f).get("config_hash")
    if recorded != digest:
      where = (f"config.pretrain.workdir={stage.shared!r} holds a different pretraining"
               if stage.shared else f"stage {name!r} in {workdir} was run with a different "
               "config")
      raise trainer.TrainError(
          f"{where} (digest {recorded} vs {digest}); "
          + ("point it at a workdir pretrained with this config" if stage.shared else
             f"delete {stage_dir} to rerun it, or use another --workdir"))
    if curves is not None:
      curve_rows(stage_dir, curves)
    logging.info("stage %s: done, skipping", name)
    return backbone
  hooks = ()
  settings_path = os.path.join(stage_dir, CURVE_SETTINGS)
  if curves is not None:
    started = checkpointing.peek_latest_meta(stage_dir) is not None
    if _read_json(settings_path) != curves:
      if started:
        curve_rows(stage_dir, curves)   # raises: steps already trained without these curves
      eval_file = os.path.join(stage_dir, hook_lib.EVAL_FILE)
      if os.path.exists(eval_file):     # rows of other settings (the hook keeps step 0's)
        os.unlink(eval_file)
    hooks = (_curve_hook(config, stage, stage_dir, curves),)
    os.makedirs(stage_dir, exist_ok=True)
    files.write_json(settings_path, curves)
  elif os.path.exists(settings_path):
    # Training goes on without the hook: the curve on disk will not be complete.
    os.unlink(settings_path)
  t0 = time.time()
  summary = trainer.train(cfg, stage_dir, hooks=hooks)
  if summary.get("preempted"):
    raise KeyboardInterrupt(f"stage {name} preempted at step {summary['step']}")
  with open(done, "w") as f:
    json.dump({"seconds": time.time() - t0, "step": summary["step"], "config_hash": digest,
               "metrics": summary["metrics"]}, f)
  return backbone


_EVALUATORS: dict = {}


def baseline_label(name: str) -> str:
  """A baseline's row label: its objective's ``label``."""
  return objectives.get(name).label or name


def temperatures(config) -> tuple[float, ...]:
  """The sampling temperatures of ``config.evaluation`` (default: τ = 1 only)."""
  taus = tuple(float(t) for t in config.evaluation.get("temperatures", (1.0,)))
  if not taus or any(not t > 0 for t in taus) or len(set(taus)) != len(taus):
    raise trainer.TrainError(f"config.evaluation.temperatures must be distinct numbers > 0, "
                             f"got {taus}")
  return taus


def _evaluate(config, backbone: str, lang, seeds, mesh, taus=None) -> list[dict]:
  """Rows of ``backbone`` at every (temperature in ``taus``, NFE, seed); ``taus`` defaults
  to the config's temperatures. Each temperature's rows depend on nothing else."""
  cfg, params, meta = checkpoints.load_backbone_params(backbone)
  ev = config.evaluation
  process_name = checkpoints.checkpoint_process(meta, backbone)
  params = sharding.to_global(params, sharding.replicated(mesh))
  rows = []
  for tau in (temperatures(config) if taus is None else taus):
    # The language by all its fields (two languages of one seed differ in the others).
    language_key = tuple(sorted(synthetic.language_fields(config.language).items()))
    key = (cfg, process_name, language_key, int(ev.batch), id(mesh), tau)
    if key not in _EVALUATORS:  # one compiled sampler per temperature for every backbone
      process = make_process_for_model(process_name, cfg)
      judge = judges.SyntheticJudge(lang, process=process, progress=False)
      _EVALUATORS[key] = sampling_eval.SampleEvaluator(
          cfg, process, judge, mesh=mesh, batch=int(ev.batch), progress=False,
          sampler_options=None if tau == 1.0 else {"temperature": tau})
    rows += _EVALUATORS[key].evaluate(params, tuple(ev.nfe), tuple(seeds),
                                      int(ev.num_samples), keep_samples=False).rows
  return rows


def _eval_key(trained: str, evaluation: dict, config, seeds) -> str:
  return hashlib.sha256(json.dumps(
      [trained, evaluation, config.language.to_dict(), list(seeds)],
      sort_keys=True, default=list).encode()).hexdigest()[:16]


def _row_tau(row: dict) -> float:
  return float(row.get("temperature", 1.0))


def reference_temperatures(config) -> tuple[float, ...]:
  """The pretrained model's sweep: ``evaluation.temperatures`` plus
  ``evaluation.reference_temperatures`` (only it is sampled at those: the reference frontier
  of :func:`frontier.against_reference` must reach the refined models' entropies)."""
  extra = tuple(float(t) for t in config.evaluation.get("reference_temperatures", ()))
  if any(not t > 0 for t in extra):
    raise trainer.TrainError(f"config.evaluation.reference_temperatures must be numbers > 0, "
                             f"got {extra}")
  taus = temperatures(config)
  return taus + tuple(t for t in dict.fromkeys(extra) if t not in taus)


def _eval_stage(stage: Stage, config, backbone: str, lang, workdir: str, mesh
                ) -> list[dict]:
  """Evaluation rows of one stage, kept in this experiment's workdir (a shared pretraining
  stage's directory is only read) and reused where they were computed with the same
  settings: each temperature's rows are independent of the others, so a sweep extended
  by new temperatures computes only those (the cached rows' own key is recomputed from
  the temperatures they hold, so files written before this reuse count too)."""
  seeds = stage.seeds
  path = os.path.join(workdir, stage.name, "eval_rows.json")
  with open(os.path.join(stage_path(stage, workdir), "DONE")) as f:
    trained = json.load(f).get("config_hash")
  ev = config.evaluation.to_dict()
  ev.pop("reference_temperatures", None)   # the sweep is per temperature, below
  wanted = reference_temperatures(config) if stage.method == "pretrain" else temperatures(config)

  def key_of(taus) -> str:   # the file's key: these settings at the temperatures it holds
    return _eval_key(trained, dict(ev, temperatures=tuple(taus)), config, seeds)

  have, seconds = {}, 0.0
  cached = _read_json(path)
  if isinstance(cached, dict) and isinstance(cached.get("rows"), list):
    held = list(dict.fromkeys(_row_tau(r) for r in cached["rows"]))
    if cached.get("key") == key_of(held):
      for r in cached["rows"]:
        have.setdefault(_row_tau(r), []).append(r)
      seconds = float(cached.get("seconds") or 0.0)
  missing = tuple(t for t in wanted if t not in have)
  if missing:
    t0 = time.time()
    for r in _evaluate(config, backbone, lang, seeds, mesh, missing):
      have.setdefault(_row_tau(r), []).append(r)
    seconds += time.time() - t0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_json(path, {"key": key_of(have), "rows": [r for v in have.values() for r in v],
                            "seconds": seconds})
  return [r for t in wanted for r in have[t]]


def reference_rows(config, lang, seeds) -> list[dict]:
  """The language's own samples judged like the models': the best attainable Gen-PPL."""
  rows = []
  for seed in seeds:
    tokens = synthetic.sample_corpus(lang, 10_000 + int(seed), int(config.evaluation.num_samples),
                                     int(config.model.length))
    for nfe in config.evaluation.nfe:
      rows.append(dict(nfe=int(nfe), seed=int(seed), gen_ppl=synthetic.gen_ppl(lang, tokens),
                       entropy=float(entropy.mean_entropy(tokens)),
                       num_samples=int(tokens.shape[0])))
  return rows


def _recorded_seconds(workdir: str, stages: list[Stage]) -> dict[str, float]:
  """Training and evaluation seconds that each stage recorded when it ran, by method."""
  out: dict[str, float] = {}
  for st in stages:
    method, stage = st.method, st.name
    with open(os.path.join(stage_path(st, workdir), "DONE")) as f:
      train_s = json.load(f).get("seconds")
    if train_s is not None and not st.shared:   # a shared stage's time is its owner's
      out[method] = out.get(method, 0.0) + float(train_s)
    ev = os.path.join(workdir, stage, "eval_rows.json")
    if os.path.exists(ev):
      with open(ev) as f:
        out["eval"] = out.get("eval", 0.0) + float(json.load(f).get("seconds") or 0.0)
  out["total"] = sum(out.values())
  return out


def _describe(overrides: dict, prefix: str = "") -> str:
  """{"drift": {"lift": "hard"}} -> "drift.lift=hard"."""
  parts = []
  for k, v in overrides.items():
    if isinstance(v, dict):
      parts.append(_describe(v, f"{prefix}{k}."))
    else:
      parts.append(f"{prefix}{k}={v:g}" if isinstance(v, float) else f"{prefix}{k}={v}")
  return ", ".join(parts)


def paired_gen_ppl(rows_a: list[dict], rows_b: list[dict], *,
                   metric: str = "gen_ppl") -> list[dict]:
  """Per NFE, the Gen-PPL (or another ``metric`` of the rows) of two methods paired by seed
  (the seeds both have).

  Args:
    rows_a, rows_b: (NFE, seed) rows, each a dict with ``nfe``, ``seed`` and ``metric``
      (the rows of :meth:`SampleEvaluator.evaluate` or of results.json).
    metric: the row field compared ("gen_ppl"; "entropy" for :func:`entropy_line`).

  Returns:
    one dict per NFE that both have, in increasing NFE: ``nfe``, ``seeds`` [n] (sorted),
    ``a`` [n] and ``b`` [n] (the metric per seed), ``wins`` (seeds with a < b), ``n``.
  """
  def index(rows):
    return {(int(r["nfe"]), int(r["seed"])): float(r[metric]) for r in rows}
  ia, ib = index(rows_a), index(rows_b)
  out = []
  for nfe in sorted({k[0] for k in ia} & {k[0] for k in ib}):
    seeds = sorted(s for (n, s) in ia if n == nfe and (n, s) in ib)
    if not seeds:
      continue
    a = [ia[(nfe, s)] for s in seeds]
    b = [ib[(nfe, s)] for s in seeds]
    out.append(dict(nfe=nfe, seeds=seeds, a=a, b=b, n=len(seeds),
                    wins=sum(x < y for x, y in zip(a, b))))
  return out


def _nfe_list(nfes: list[int]) -> str:
  """[4] -> "NFE 4"; [4, 8, 16] -> "NFE 4, 8 and 16"."""
  if len(nfes) == 1:
    return f"NFE {nfes[0]}"
  return "NFE " + ", ".join(map(str, nfes[:-1])) + f" and {nfes[-1]}"


def verdict_line(vs_continuation: list[dict]) -> str:
  """One sentence that claims only what the per-seed pairs show.

  An NFE counts for TokenDrift only if it is below continuation in every seed, against it
  only if it is above in every seed; anything else is called mixed, with its count. Mean
  Gen-PPL is deliberately not the criterion: at this scale one diverging seed moves the
  mean of three by more than the effect.

  Args:
    vs_continuation: :func:`paired_gen_ppl` of (TokenDrift, continuation).
  """
  if not vs_continuation:
    raise ValueError("no (NFE, seed) pair of TokenDrift and continuation to compare")
  n = min(c["n"] for c in vs_continuation)
  every = [c["nfe"] for c in vs_continuation if c["wins"] == c["n"]]
  never = [c["nfe"] for c in vs_continuation if c["wins"] == 0]
  mixed = [c for c in vs_continuation if 0 < c["wins"] < c["n"]]
  seeds = "the one seed" if n == 1 else f"every one of {n} seeds"
  parts = []
  if len(every) == len(vs_continuation):
    parts.append(f"TokenDrift had lower Gen-PPL than continuation at every NFE "
                 f"({', '.join(map(str, every))}) in {seeds}")
  else:
    if every:
      parts.append(f"TokenDrift had lower Gen-PPL than continuation in {seeds} at "
                   f"{_nfe_list(every)}")
    if never:
      parts.append(f"higher in {seeds} at {_nfe_list(never)}" if parts else
                   f"TokenDrift had higher Gen-PPL than continuation in {seeds} at "
                   f"{_nfe_list(never)}")
    if mixed:
      counts = ", ".join(f"NFE {c['nfe']}: lower in {c['wins']} of {c['n']}" for c in mixed)
      parts.append(f"mixed across seeds ({counts})" if parts else
                   f"TokenDrift against continuation was mixed across seeds ({counts})")
  text = "Verdict: " + "; ".join(parts) + "."
  if n == 1:
    text += (" One seed of a short refinement is one draw of a chaotic process (another "
             "CPU can flip it); run several seeds before reading anything into it.")
  return text


def verdict_report(results: dict[str, list[dict]]) -> tuple[str, dict]:
  """The per-seed comparison printed under the table, and its record for results.json.

  Args:
    results: method -> (NFE, seed) rows; needs "drift", "continuation" and "pretrained".

  Returns:
    (text: one line per NFE with the per-seed Gen-PPL of TokenDrift, continuation and the
    pretrained model, the seeds where TokenDrift is lower, then :func:`verdict_line`;
    record: {"vs_continuation": pairs, "vs_pretrained": pairs, "verdict": the line}).
  """
  vs_cont = paired_gen_ppl(results["drift"], results["continuation"])
  vs_pre = paired_gen_ppl(results["drift"], results["pretrained"])
  pre_by_nfe = {c["nfe"]: c for c in vs_pre}
  seeds = vs_cont[0]["seeds"] if vs_cont else []
  lines = [f"Per refinement seed {seeds} (Gen.-PPL; TokenDrift / continuation / pretrained "
           f"sampled with the same seed):", ""]
  def per_seed(values):
    return " / ".join(f"{v:.1f}" for v in values)
  for c in vs_cont:
    pre = pre_by_nfe.get(c["nfe"])
    line = (f"* NFE {c['nfe']}: {per_seed(c['a'])} vs {per_seed(c['b'])}"
            + (f" vs {per_seed(pre['b'])}" if pre else "")
            + f"; TokenDrift lower than continuation in {c['wins']} of {c['n']} seeds")
    if pre:
      line += f", than the pretrained model in {pre['wins']} of {pre['n']}"
    lines.append(line)
  verdict = verdict_line(vs_cont)
  entropy = entropy_line(paired_gen_ppl(results["drift"], results["continuation"],
                                        metric="entropy"),
                         paired_gen_ppl(results["drift"], results["pretrained"],
                                        metric="entropy"))
  lines += ["", verdict, entropy]
  return "\n".join(lines) + "\n", {"vs_continuation": vs_cont, "vs_pretrained": vs_pre,
                                     "verdict": verdict, "entropy": entropy}


def entropy_line(vs_continuation: list[dict], vs_pretrained: list[dict]) -> str:
  """The entropy side of the verdict: how often TokenDrift's samples had lower entropy.

  Gen-PPL alone rewards a colder sampler (a lower temperature lowers Gen-PPL and entropy
  together), so a Gen-PPL count says little without this one; the matched-entropy reading
  (eval/frontier.py) is the comparison that controls for it.

  Args:
    vs_continuation, vs_pretrained: :func:`paired_gen_ppl` with ``metric="entropy"`` of
      (TokenDrift, continuation) and (TokenDrift, pretrained); ``wins`` counts the pairs in
      which TokenDrift's entropy is the lower.
  """
  if not vs_continuation:
    raise ValueError("no (NFE, seed) pair of TokenDrift and continuation to compare")
  lower = sum(c["wins"] for c in vs_continuation)
  total = sum(c["n"] for c in vs_continuation)
  text = (f"Entropy: TokenDrift's samples had lower entropy than continuation's in {lower} "
          f"of {total} (NFE, seed) pairs")
  if vs_pretrained:
    ratios = [a / b for c in vs_pretrained for a, b in zip(c["a"], c["b"]) if b > 0]
    if ratios:
      text += (f", {100 * min(ratios):.0f}-{100 * max(ratios):.0f} % of the pretrained "
               f"model's")
  return (text + "; a lower Gen-PPL at lower entropy can be a colder sampler rather than a "
          "better model (read them at matched entropy: configs/frontier_small_mdlm.py).")


def _use_compilation_cache(workdir: str) -> None:
  """Keeps compiled programs in ``workdir/xla_cache`` unless a cache is already configured.

  The stages of one experiment compile the same programs again (each refinement seed
  builds its own trainer; a rerun after an interruption rebuilds everything), and on a
  2-core CPU compilation is a third of a refinement stage. XLA's persistent cache returns
  the executable compiled for the identical program, so results are unchanged.
  ``JAX_COMPILATION_CACHE_DIR`` (or jax's config) set by the user wins.
  """
  if jax.config.jax_compilation_cache_dir:
    return
  jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))


def run(config: ml_collections.ConfigDict, workdir: str) -> int:
  """Runs every stage (skipping finished ones) and prints the Table-1-shaped result."""
  t_start = time.time()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  _use_compilation_cache(workdir)
  lang = language(config)
  check_vocab(config, lang)
  data = prepare_data(config, workdir, lang)
  seeds = tuple(int(s) for s in config.refine.seeds)
  stages = plan(config, workdir, data)
  check_curves_possible(config, stages, workdir)
  backbones = {st.name: _train_stage(st, workdir, config) for st in stages}
  curves: dict[str, dict[str, list[dict]]] = {}
  for st in stages:
    settings = curve_settings(config, st)
    if settings is not None:
      curves.setdefault(st.method, {})[str(st.seeds[0])] = curve_rows(
          stage_path(st, workdir), settings)

  mesh = builder.make_mesh(config)
  results: dict[str, list[dict]] = {}
  # Minutes per stage on a CPU (every temperature x NFE x seed), so a bar; cached stages
  # pass at once.
  bar = tqdm(stages, desc="evaluation", unit="stage")
  for st in bar:
    bar.set_postfix_str(st.name)
    method = "pretrained" if st.method == "pretrain" else st.method
    results.setdefault(method, []).extend(
        _eval_stage(st, config, backbones[st.name], lang, workdir, mesh))
  variants = config.get("variants", ml_collections.ConfigDict()).to_dict()
  baselines = tuple(str(b) for b in config.refine.get("baselines", ()))
  results["language samples"] = reference_rows(config, lang, seeds)

  # The tables read τ = 1 (the model's own distribution); the sweep feeds the frontier.
  at_one = {k: [r for r in v if float(r.get("temperature", 1.0)) == 1.0]
            for k, v in results.items()}
  summary = {k: report.summarize(v) for k, v in at_one.items()}
  main = [("Pretrained", summary["pretrained"]), ("Cont. learning", summary["continuation"]),
          ("TokenDrift", summary["drift"])]
  main += [(baseline_label(b), summary[b]) for b in baselines]
  table = report.markdown_table(main)
  floor = {s["nfe"]: s for s in summary["language samples"]}
  any_nfe = next(iter(floor.values()))
  table += (f"\nJudge floor (the language's own samples): Gen.-PPL "
            f"{report.fmt(any_nfe['gen_ppl_mean'], any_nfe['gen_ppl_sd'])}, entropy "
            f"{report.fmt(any_nfe['entropy_mean'], any_nfe['entropy_sd'])}.\n")
  if variants:
    ablation = [("TokenDrift (default)", summary["drift"])] + [
        (f"{v}: {_describe(o)}", summary[v]) for v, o in variants.items()]
    table += "\nAblations (TokenDrift, same budget and seeds):\n\n" + report.markdown_table(
        ablation)
  comparison, verdict = verdict_report(at_one)
  table += "\n" + comparison
  matched = against = None
  if len(temperatures(config)) > 1:
    reference = frontier.reference_entropy(results["pretrained"])
    methods = [("Pretrained", "pretrained"), ("Cont. learning", "continuation"),
               ("TokenDrift", "drift")] + [(baseline_label(b), b) for b in baselines]
    labelled = [(label, results[m]) for label, m in methods]
    # The ablations are read at matched entropy too (tables only: the figure stays the
    # main methods'), each against the same pretrained sweep.
    with_variants = methods + [(f"{v} (ablation)", v) for v in variants]
    table += (f"\nAt matched entropy (temperatures {list(temperatures(config))}; each seed's "
              f"sweep read at the pretrained model's τ = 1 entropy, never extrapolated):\n\n"
              + frontier.markdown([(label, results[m]) for label, m in with_variants],
                                  reference) + "\n")
    matched = {m: frontier.matched(results[m], reference) for _, m in with_variants}
    refined = with_variants[1:]
    against = {m: frontier.against_reference(results[m], results["pretrained"])
               for _, m in refined}
    table += ("\nThe other direction: each method's τ = 1 Gen.-PPL over the pretrained "
              "model's frontier (its sweep "
              f"{sorted(reference_temperatures(config))}, same seed) read at that sample's "
              "entropy (< 1: better than the pretrained model cooled or heated to the same "
              "entropy; never extrapolated):\n\n"
              + frontier.against_reference_markdown(
                  [(label, against[m]) for label, m in refined], "pretrained") + "\n")
    plots.plot_frontier(labelled, reference, os.path.join(workdir, "frontier.png"),
                        title=f"{str(config.diffusion.process).upper()}: Gen-PPL vs entropy")
  if curves:
    labels = {"continuation": "Cont. learning", "drift": "TokenDrift"}
    labels.update({b: baseline_label(b) for b in baselines})
    labelled = [(labels.get(m, m), per_seed) for m, per_seed in curves.items()]
    table += (f"\nRefinement curves ({int(config.refine.curve_samples)} samples per point, "
              f"the stage's seed; mean ± SD over seeds; WORKDIR/curves_nfe{{N}}.png):\n")
    for nfe in config.evaluation.nfe:
      table += f"\nNFE = {int(nfe)}:\n\n" + report.curves_markdown(labelled, int(nfe))
    for nfe in config.evaluation.nfe:
      plots.plot_refinement_curves(
          labelled, int(nfe), os.path.join(workdir, f"curves_nfe{int(nfe)}.png"),
          judge="synthetic language",
          title=(f"{str(config.diffusion.process).upper()}, NFE = {int(nfe)}: refinement "
                 f"curves ({int(config.refine.curve_samples)} samples per point)"))
  timings = _recorded_seconds(workdir, stages)
  payload = {"process": str(config.diffusion.process), "family": str(config.model.family),
             "language": config.language.to_dict(),
             "seeds": list(seeds), "nfe": list(config.evaluation.nfe),
             "rows": results, "summary": summary, "verdict": verdict,
             "matched_entropy": matched,
             "against_pretrained_frontier": against,
             "curves": curves or None,
             "seconds": timings}
  files.write_json(os.path.join(workdir, "results.json"), payload)
  header = (f"# {str(config.diffusion.process).upper()} on the synthetic language: Gen.-PPL (exact "
            f"likelihood judge) and entropy, mean ± SD over seeds {list(seeds)}\n\n")
  files.write_text(os.path.join(workdir, "results.md"), header + table + "\n")
  print("\n" + header + table)
  print("\ncompute time recorded by the stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; this invocation {time.time() - t_start:.0f} s"
        + f"\nresults: {os.path.join(workdir, 'results.md')}")
  return 0


def experiment_config() -> ml_collections.ConfigDict:
  """The experiment-only sections (the rest is a training config, configs/base.py)."""
  c = ml_collections.ConfigDict()
  c.language = ml_collections.ConfigDict(dict(
      seed=0, vocab_size=250, n_topics=8, order=1, successors=4, topic_vocab_size=64,
      concentration=1.0, floor=0.01))
  c.corpus = ml_collections.ConfigDict(dict(train_sequences=20_000, valid_sequences=512,
                                            seed=0))
  # workdir: start from another experiment's finished pretraining stage of the same config
  # ("" = pretrain here); it is only read (see pretrain_root).
  c.pretrain = ml_collections.ConfigDict(dict(steps=600, lr=1e-3, warmup_steps=50,
                                              global_batch=64, micro_batch=64,
                                              weights="raw", workdir=""))
  # baselines: distillation objectives run at the TokenDrift stage's model FLOPs, their
  # teacher rounds (baseline_rounds) spread evenly over it.
  # curve_every > 0: refinement curves (Gen-PPL and entropy against step) of every
  # refinement stage, from curve_samples samples per (step, NFE); see the module docstring.
  c.refine = ml_collections.ConfigDict(dict(steps=100, lr=1e-4, warmup_steps=0,
                                            global_batch=64, micro_batch=8, seeds=(0,),
                                            baselines=(), baseline_rounds=dict(sdtt=7, dcd=5),
                                            curve_every=0, curve_samples=64))
  c.variants = ml_collections.ConfigDict()
  # temperatures: a sweep > 1 value adds the matched-entropy table and frontier.png.
  # reference_temperatures: more temperatures for the pretrained model only (its frontier
  # read at the refined models' entropies, frontier.against_reference).
  c.evaluation = ml_collections.ConfigDict(dict(nfe=(4, 8, 16), num_samples=256, batch=64,
                                                temperatures=(1.0,),
                                                reference_temperatures=()))
  return c
