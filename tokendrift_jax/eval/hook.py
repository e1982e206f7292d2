"""Sample evaluation inside training (Fig. 2): a trainer hook.

``make_sample_eval_hook(config)`` returns ``hook(run, step)``; the trainer calls it after
every step and it decides itself whether it is due:

* every ``config.sample_eval.every`` steps and at the last step (``run.total_steps``);
* with ``eval_init`` (default), also once for the initial checkpoint, written as step 0,
  on the first call (when ``eval.jsonl`` has no step-0 rows yet), so that the curve
  starts at the released weights.

When due, it samples ``num_samples`` sequences per NFE of ``config.sample_eval.nfe`` with
one seed (``sample_eval.seed``), using ``trainer.eval_params(run)`` (raw or EMA weights per
``config.ema.evaluate``), judges them, appends one JSON row per NFE to
``WORKDIR/eval.jsonl`` (step, nfe, seed, gen_ppl, entropy, num_samples, nfe_model) and
re-renders ``WORKDIR/genppl_curve.png``; it returns ``{"sample/gen_ppl/nfe=4": ...,
"sample/entropy/nfe=4": ...}`` for the trainer's metrics. Every process samples and scores
(the computation is sharded over the global mesh); only process 0 writes files.

On resume, rows of ``eval.jsonl`` at or after the first step the hook sees are dropped
(they belong to steps past the restored checkpoint and are re-evaluated).

The judge is loaded, and the judge / vocabulary / batch settings are checked, when the hook
is made, i.e. before training starts.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from tokendrift_jax import checkpoints
from tokendrift_jax import sharding
from tokendrift_jax.eval import eval_config
from tokendrift_jax.eval import plots
from tokendrift_jax.eval import report
from tokendrift_jax.eval import sampling_eval

EVAL_FILE = "eval.jsonl"
CURVE_FILE = "genppl_curve.png"
PREFIX = "config.sample_eval"


default_config = eval_config.sample_eval_config


def _judge_label(judge) -> str:
  if judge.kind == "synthetic":
    return "synthetic language"
  return os.path.basename(str(judge.name).rstrip("/")) or str(judge.name)


def make_sample_eval_hook(config: ml_collections.ConfigDict
                          ) -> Callable[[object, int], dict]:
  """The Fig. 2 hook for ``trainer.train(config, workdir, hooks=[...])``.

  Args:
    config: the full training config (uses ``backbone``, ``model``, ``mesh``,
      ``init_checkpoint`` and ``sample_eval``).

  Returns:
    ``hook(run, step) -> dict`` (empty when not due or when ``sample_eval.enabled`` is
    False).

  Raises:
    sampling_eval.EvalError: bad ``sample_eval`` settings, a judge that cannot be loaded
      (FileNotFoundError, with how to convert it), or a vocabulary mismatch.
  """
  se = config.sample_eval
  if not se.enabled:
    return lambda run, step: {}
  every = int(se.every)
  if every < 1:
    raise sampling_eval.EvalError(f"{PREFIX}.every must be >= 1, got {se.every}")
  nfes = sampling_eval.check_int_list(se.nfe, f"{PREFIX}.nfe", minimum=1)
  num_samples = sampling_eval.check_num_samples(se.num_samples, f"{PREFIX}.num_samples")
  seed = sampling_eval.check_int_list(se.seed, f"{PREFIX}.seed", minimum=0)[0]
  length = int(se.length) or int(config.model.length)
  from tokendrift_jax.train import trainer  # pylint: disable=import-outside-toplevel
  mesh = trainer.make_mesh(config)  # the run's own mesh (same devices, same shape)
  try:
    sharding.check_batch_divisible(int(se.batch), mesh, f"{PREFIX}.batch")
  except ValueError as e:
    raise sampling_eval.EvalError(str(e)) from e
  judge = sampling_eval.build_judge(se, arch=str(config.backbone),
                                    vocab_size=int(config.model.vocab_size), max_length=length,
                                    mesh=mesh, prefix=PREFIX, progress=bool(se.progress))
  state = {"evaluator": None, "first": True}

  def evaluator(run):
    if state["evaluator"] is None:
      state["evaluator"] = sampling_eval.SampleEvaluator(
          run.model_cfg, run.process, judge, mesh=run.mesh, batch=int(se.batch),
          length=length, noise_removal=str(se.noise_removal) or None,
          sampler_precision=str(se.sampler_precision) or None,
          model_dtype=str(se.model_dtype),
          attention_impl=str(run.config.model.get("attention_impl", "")) or None,
          progress=bool(se.progress), prefix=PREFIX)
    return state["evaluator"]

  def evaluate(run, params, step: int) -> dict:
    ev = evaluator(run).evaluate(params, nfes, (seed,), num_samples, keep_samples=False)
    rows = [dict(step=int(step), nfe=r["nfe"], seed=r["seed"], gen_ppl=r["gen_ppl"],
                 entropy=r["entropy"], num_samples=r["num_samples"],
                 nfe_model=r["nfe_model"]) for r in ev.rows]
    path = os.path.join(run.workdir, EVAL_FILE)
    if jax.process_index() == 0:
      with open(path, "a", encoding="utf-8") as f:
        for r in rows:
          f.write(json.dumps(r, allow_nan=False) + "\n")
      plots.plot_training_curve(
          report.read_jsonl(path), os.path.join(run.workdir, CURVE_FILE),
          title=f"{run.config.backbone.upper()} {run.config.objective}: Gen.-PPL during "
                f"training", judge=_judge_label(judge))
    out = {}
    for r in rows:
      out[f"sample/gen_ppl/nfe={r['nfe']}"] = r["gen_ppl"]
      out[f"sample/entropy/nfe={r['nfe']}"] = r["entropy"]
    return out

  def hook(run, step: int) -> dict:
    from tokendrift_jax.train import trainer  # pylint: disable=import-outside-toplevel
    path = os.path.join(run.workdir, EVAL_FILE)
    out = {}
    if state["first"]:
      state["first"] = False
      rows = report.read_jsonl(path) if os.path.exists(path) else []
      kept = [r for r in rows if int(r["step"]) < step]
      if jax.process_index() == 0 and len(kept) != len(rows):
        report.write_jsonl(path, kept)
      need_init = bool(se.eval_init and run.init_checkpoint
                       and not any(int(r["step"]) == 0 for r in kept))
      if jax.process_count() > 1:
        # Process 0's file decides, so every process joins the same sampling collectives.
        need_init = bool(multihost_utils.broadcast_one_to_all(np.asarray(need_init)))
      if need_init:
        logging.info("sample eval: initial checkpoint %s as step 0", run.init_checkpoint)
        _, init_params, _ = checkpoints.load_backbone_params(run.init_checkpoint)
        # Placed like the trained weights, so the sampler compiled here is reused later.
        like = trainer.eval_params(run)
        init_params = sharding.to_global(init_params, jax.tree.map(lambda x: x.sharding, like))
        evaluate(run, init_params, 0)
    if step % every == 0 or step == run.total_steps:
      out.update(evaluate(run, trainer.eval_params(run), step))
    return out

  return hook
