"""Sample evaluation inside training (Fig. 2): a trainer hook.

``make_sample_eval_hook(config, workdir)`` returns ``hook(step, params) -> dict``; the
trainer calls it after every step with the weights it evaluates (raw or EMA per
``config.ema.evaluate``, already placed on the mesh), and the hook decides itself whether it
is due:

* every ``config.sample_eval.every`` steps and at the last step (``config.train.steps``);
* with ``eval_init`` (default), also once for the initial checkpoint
  (``config.init_checkpoint``), written as step 0, on the first call (when ``eval.jsonl``
  has no step-0 rows yet), so that the curve starts at the released weights.

When due, it samples ``num_samples`` sequences per NFE of ``config.sample_eval.nfe`` with
one seed (``sample_eval.seed``), judges them, appends one JSON row per NFE to
``WORKDIR/eval.jsonl`` (step, nfe, seed, gen_ppl, entropy, num_samples, nfe_model) and
re-renders ``WORKDIR/genppl_curve.png``; it returns ``{"sample/gen_ppl/nfe=4": ...,
"sample/entropy/nfe=4": ...}`` for the trainer's metrics. Every process samples and scores
(the computation is sharded over the global mesh); only process 0 writes files.

On resume, rows of ``eval.jsonl`` at or after the first step the hook sees are dropped
(they belong to steps past the restored checkpoint and are re-evaluated).

Everything the hook needs is derived from ``config`` when it is made (mesh, model config,
diffusion process, judge), so the judge is loaded and the judge / vocabulary / batch
settings are checked before training starts; the trainer passes nothing but the step and
the weights.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from tokendrift_jax import checkpoints
from tokendrift_jax import diffusion
from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.eval import assemble
from tokendrift_jax.eval import eval_config
from tokendrift_jax.eval import files
from tokendrift_jax.eval import judges
from tokendrift_jax.eval import plots
from tokendrift_jax.eval.eval_config import EvalError

EVAL_FILE = "eval.jsonl"
CURVE_FILE = "genppl_curve.png"
PREFIX = "config.sample_eval"

default_config = eval_config.sample_eval_config

Hook = Callable[[int, Any], dict]


def make_sample_eval_hook(config: ml_collections.ConfigDict, workdir: str) -> Hook:
  """The Fig. 2 hook for ``trainer.train(config, workdir, hooks=[...])``.

  Args:
    config: the full training config (uses ``model``, ``diffusion``, ``mesh``,
      ``objective``, ``train.steps``, ``init_checkpoint`` and ``sample_eval``).
    workdir: the training run's directory (eval.jsonl and the curve go there).

  Returns:
    ``hook(step, params) -> dict`` (empty when not due or when ``sample_eval.enabled`` is
    False); ``params`` are the evaluated weights, placed on the mesh of ``config.mesh``.

  Raises:
    EvalError: bad ``sample_eval`` settings, a judge that cannot be loaded
      (FileNotFoundError, with how to convert it), or a vocabulary mismatch.
  """
  se = config.sample_eval
  eval_config.check_sample_eval_config(se)   # every value's type and range, first
  if not se.enabled:
    return lambda step, params: {}
  every = int(se.every)
  nfes = eval_config.check_int_list(se.nfe, f"{PREFIX}.nfe", minimum=1)
  num_samples = eval_config.check_num_samples(se.num_samples, f"{PREFIX}.num_samples")
  seed = eval_config.check_int_list(se.seed, f"{PREFIX}.seed", minimum=0)[0]
  model_cfg = models.model_config(config.model)
  length = int(se.length) or int(model_cfg.length)
  # The run's own mesh (same devices, same shape), so the weights need no transfer.
  mesh = sharding.mesh_from_config(config.mesh)
  try:
    sharding.check_batch_divisible(int(se.batch), mesh, f"{PREFIX}.batch")
  except ValueError as e:
    raise EvalError(str(e)) from e
  process = diffusion.process_from_config(config, model_cfg)
  evaluator = assemble.build_evaluator(
      se, model_cfg=model_cfg, process=process, mesh=mesh, length=length,
      family=models.family_of(model_cfg), prefix=PREFIX, progress=bool(se.progress),
      attention_impl=str(config.model.get("attention_impl", "")))
  judge = evaluator.judge
  init_checkpoint = str(config.get("init_checkpoint", "") or "")
  total_steps = int(config.train.steps)
  title = (f"{str(config.diffusion.process).upper()} {config.objective}: Gen.-PPL during "
           f"training")
  path = os.path.join(workdir, EVAL_FILE)
  is_main = jax.process_index() == 0
  state = {"first": True}

  def evaluate(params, step: int) -> dict:
    ev = evaluator.evaluate(params, nfes, (seed,), num_samples, keep_samples=False)
    rows = [dict(step=int(step), nfe=r["nfe"], seed=r["seed"], gen_ppl=r["gen_ppl"],
                 entropy=r["entropy"], num_samples=r["num_samples"],
                 nfe_model=r["nfe_model"]) for r in ev.rows]
    if is_main:
      os.makedirs(workdir, exist_ok=True)
      files.append_jsonl(path, rows)
      plots.plot_training_curve(files.read_jsonl(path), os.path.join(workdir, CURVE_FILE),
                                title=title, judge=judges.label(judge))
    out = {}
    for r in rows:
      out[f"sample/gen_ppl/nfe={r['nfe']}"] = r["gen_ppl"]
      out[f"sample/entropy/nfe={r['nfe']}"] = r["entropy"]
    return out

  def evaluate_init(params) -> None:
    """Step 0: the initial checkpoint, placed like the trained weights (so the sampler
    compiled for it is reused later)."""
    logging.info("sample eval: initial checkpoint %s as step 0", init_checkpoint)
    _, init_params, _ = checkpoints.load_backbone_params(init_checkpoint)
    if params is not None:
      like = jax.tree.map(lambda x: x.sharding, params)
    else:
      like = sharding.param_sharding(init_params, mesh, "replicated")
    evaluate(sharding.to_global(init_params, like), 0)

  def first_call(step: int) -> bool:
    """Drops rows past the restored step; whether step 0 still needs evaluating."""
    rows = files.read_jsonl(path) if os.path.exists(path) else []
    kept = [r for r in rows if int(r["step"]) < step]
    if is_main and len(kept) != len(rows):
      files.write_jsonl(path, kept)
    need_init = bool(se.eval_init and init_checkpoint
                     and not any(int(r["step"]) == 0 for r in kept))
    if jax.process_count() > 1:
      # Process 0's file decides, so every process joins the same sampling collectives.
      need_init = bool(multihost_utils.broadcast_one_to_all(np.asarray(need_init)))
    return need_init

  def hook(step: int, params) -> dict:
    out = {}
    if state["first"]:
      state["first"] = False
      if first_call(step):
        evaluate_init(params)
    if step % every == 0 or step == total_steps:
      out.update(evaluate(params, step))
    return out

  return hook
