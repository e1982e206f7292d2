"""TokenDrift and continuation on a tiny LLaDA through the real step and the trainer.

* A prompt-conditioned TokenDrift run (per-row prompts, completion pooling: every piece
  of the unconditional step and the prompt's) through ``trainer.train`` on one device:
  finite losses, the prompt metrics, checkpoints; resumed from its step-1 checkpoint on
  (4, 2) + FSDP, step 2 equals the one-device step 2 (loss, parameters, queues).
* ``--runslow``: one step of each objective, unconditional and prompted, on 1 device ==
  on (8, 1) and (4, 2) + FSDP; unconditional runs of both objectives through the trainer;
  a TokenDrift run on SFT pairs whose prompts differ in length, left-padded
  (``config.prompt.pad_id``).

The SFT loss of the prompted continuation micro-step and the prompt's masks, lift and
gradients are checked in tests/train/test_losses.py.

The init checkpoint is a random tiny LLaDA with every leaf perturbed (its RMSNorm weights
start at one), written by ``checkpoints.save_backbone`` (tests/helpers/tiny_run.py).
"""

from __future__ import annotations

import os
import shutil
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import checkpoints
from tokendrift_jax import sharding
from tokendrift_jax.data import tokens as tokens_lib
from tokendrift_jax.train import builder
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import metrics_writer
from tokendrift_jax.train import prompt as prompt_lib
from tokendrift_jax.train import trainer

MESHES = {"one": ((1, 1), 1, "replicated"), "dp8": ((8, 1), 8, "replicated"),
          "fsdp": ((4, 2), 8, "fsdp"),
          # (data, fsdp, tensor) with the family's logical-axis rules (docs/SHARDING.md).
          "rules811": ((8, 1, 1), 8, "rules"), "rules222": ((2, 2, 2), 8, "rules"),
          "rules124": ((1, 2, 4), 8, "rules")}


def _first_batch(config, parts) -> np.ndarray:
  """The run's first global batch from its own data pipeline (with the prompt column)."""
  train_iter, _ = trainer.make_data(config, parts.model_cfg.length, parts.process)
  return np.asarray(next(train_iter), np.int32)


def _one_step(config):
  """(loss, params, queues) after one step of ``config``'s jitted step from its init."""
  parts = builder.build_step(config)
  params = checkpoints.load_backbone_params(config.init_checkpoint)[1]
  state = sharding.to_global(parts.init_state(params), parts.state_shardings)
  encoder = parts.objective.frozen(params)
  if encoder is not None:
    encoder = sharding.to_global(encoder, parts.frozen_shardings)
  batch = jax.make_array_from_process_local_data(parts.batch_sharding,
                                                 _first_batch(config, parts))
  state, metrics = parts.step_fn(state, batch, encoder)
  assert bool(metrics["finite"])
  return jax.device_get((metrics["loss"], state.params, state.aux)), params, state


def _config(tiny_dir, tiny_llada_run_config, objective, mesh="one", prompt=False, **over):
  shape, n, rule = MESHES[mesh]
  extra = dict(prompt_mode="data", pool="completion" if objective == "drift" else "all")
  cfg = tiny_llada_run_config(tiny_dir, objective, mesh_shape=shape, num_devices=n,
                              param_sharding=rule, **(extra if prompt else {}), **over)
  # Adam's first update is lr·g/(|g| + ε): with ε = 1e-8 a gradient entry of size ~ε
  # turns the ~1e-8 rounding of the reduction order into an update change of up to lr
  # (seen: 1e-4 on 1 of 6144 entries), a conditioning of the problem, not a sharding
  # error. With ε = 1e-4 an update moves by at most lr/ε = 10x the gradient's change.
  cfg.optim.eps = 1e-4
  cfg.ema.enabled = False  # not what these tests look at; a smaller step to compile
  return cfg


def _check_meshes(objective, prompt, names, tiny_dir, tiny_llada_run_config, max_abs_diff):
  runs = {}
  for name in ("one",) + tuple(names):
    cfg = _config(tiny_dir, tiny_llada_run_config, objective, name, prompt)
    t = time.time()
    runs[name], init, _ = _one_step(cfg)
    print(f"{objective} prompt={prompt} {name}: {time.time() - t:.1f}s")
  loss1, params1, queues1 = runs["one"]
  assert np.isfinite(loss1) and loss1 > 0
  assert max_abs_diff(params1, init) > 1e-4, "parameters must move for the test to mean much"
  if objective == "drift":
    assert int(queues1["gen"].count) == 16  # two micro-steps of 8 pushed
  else:
    assert queues1 is None
  for name in names:
    loss, params, queues = runs[name]
    # float32 reductions split over 8 devices (and FSDP's sharded matmuls) reorder the
    # additions; 1e-5 is the bound (observed ≤ 8e-7 for params and queues).
    # Keyed by the mesh, so that a failure names it.
    chex.assert_trees_all_close({name: loss}, {name: loss1}, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close({name: params}, {name: params1}, rtol=0, atol=1e-5)
    chex.assert_trees_all_close({name: queues}, {name: queues1}, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("objective,prompt,names", [
    ("drift", False, ("dp8", "fsdp")), ("continuation", False, ("dp8", "fsdp")),
    ("drift", True, ("dp8",)), ("continuation", True, ("dp8", "fsdp")),
    ("drift", False, ("rules811", "rules222", "rules124")),
    ("continuation", False, ("rules811", "rules222", "rules124"))])
def test_llada_one_device_equals_eight_devices(objective, prompt, names, tiny_dir,
                                               tiny_llada_run_config, max_abs_diff):
  """One step: 1 device == (8, 1) data parallel, (4, 2) + FSDP, and the tensor meshes
  (8, 1, 1), (2, 2, 2), (1, 2, 4) with rule-based parameter sharding."""
  _check_meshes(objective, prompt, names, tiny_dir, tiny_llada_run_config, max_abs_diff)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["drift", "continuation"])
def test_unconditional_llada_run(objective, tiny_dir, tmp_path, tiny_llada_run_config,
                                 read_losses, exported_params, max_abs_diff):
  """Unconditional TokenDrift / continuation (LLaDA's pretraining loss) through
  trainer.train on 8 devices: finite losses, moved and exported parameters."""
  cfg = _config(tiny_dir, tiny_llada_run_config, objective, "dp8", steps=2)
  workdir = str(tmp_path / objective)
  trainer.train(cfg, workdir)
  losses = read_losses(workdir)
  assert len(losses) == 2 and all(np.isfinite(losses))
  init = checkpoints.load_backbone_params(cfg.init_checkpoint)[1]
  assert max_abs_diff(exported_params(workdir), init) > 1e-4


def _restored(workdir, step, config):
  """(params, queues) of the checkpoint of ``step`` in ``workdir``, read onto ``config``'s
  shardings (StepParts.abstract_args: nothing is traced or compiled)."""
  abstract_state = builder.build_step(config).abstract_args()[0]
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    state, _, _ = ckpt.restore(step, abstract_state)
  finally:
    ckpt.close()
  return jax.device_get((state.params, state.aux))


def test_prompted_drift_run_resumes_on_fsdp_4x2_as_on_one_device(
    tiny_dir, tmp_path, tiny_llada_run_config, read_losses, max_abs_diff):
  """Prompt-conditioned TokenDrift (per-row prompts, completion pooling) through
  trainer.train: 2 steps on one device, checkpointed at each; a copy holding only the
  step-1 checkpoint resumes on (4, 2) + FSDP (batch over both mesh axes, parameters
  split) and runs step 2 (queues half full from step 1). Its step 2 (loss, parameters,
  queues) == the one-device step 2."""
  def config(mesh):
    c = _config(tiny_dir, tiny_llada_run_config, "drift", mesh, prompt=True, steps=2)
    c.train.checkpoint_every = 1
    c.train.export_backbone = False
    return c

  one, fsdp = str(tmp_path / "one"), str(tmp_path / "fsdp")
  t = time.time()
  assert trainer.train(config("one"), one)["step"] == 2
  print(f"one device, 2 steps: {time.time() - t:.1f}s")
  losses = read_losses(one)
  assert len(losses) == 2 and all(np.isfinite(losses))
  rows = [r for r in metrics_writer.read_jsonl(os.path.join(one, "metrics.jsonl"))
          if "loss" in r]
  for r in rows:
    # Prompts of 1..15 of the 16 tokens: the completion is pooled, a part of it predicted.
    assert 1 <= r["prompt_per_row"] <= 15
    chex.assert_trees_all_close(r["pooled_per_row"], 16 - r["prompt_per_row"], rtol=1e-6,
                                atol=0)
    assert 0 < r["predicted_per_row"] <= r["pooled_per_row"]

  shutil.copytree(one, fsdp)
  shutil.rmtree(os.path.join(fsdp, "checkpoints", "2"))
  t = time.time()
  resumed = trainer.train(config("fsdp"), fsdp)
  print(f"(4, 2) + FSDP, resumed for step 2: {time.time() - t:.1f}s")
  assert resumed["start_step"] == 1 and resumed["step"] == 2
  losses_fsdp = read_losses(fsdp)
  assert len(losses_fsdp) == 2 and losses_fsdp[0] == losses[0]  # step 1's row, kept

  params, queues = _restored(one, 2, config("one"))
  params_fsdp, queues_fsdp = _restored(fsdp, 2, config("one"))
  init = checkpoints.load_backbone_params(config("one").init_checkpoint)[1]
  assert max_abs_diff(params, init) > 1e-4, "parameters must move for the test to mean much"
  assert int(queues["gen"].count) == 24  # 2 steps x 2 micro-steps x 8, capacity 24: wrapped
  # As in _check_meshes: the 1e-5 (observed ≤ 8e-7 after one step).
  chex.assert_trees_all_close(losses_fsdp[1], losses[1], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(params_fsdp, params, rtol=0, atol=1e-5)
  chex.assert_trees_all_close(queues_fsdp, queues, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["llada_drift", "llada_continuation", "llada_drift_prompt",
                                  "llada_continuation_prompt"])
def test_shipped_llada_configs_build(name):
  """The shipped 8B configs: LLaDA-8B-Base's architecture, LLaDA's process settings, the
  paper's optimizer and batch; build_step's checks accept them (without building the 8B
  step: its abstract state alone takes seconds) and a missing checkpoint points at the
  LLaDA converter."""
  import importlib  # pylint: disable=import-outside-toplevel
  from tokendrift_jax import models  # pylint: disable=import-outside-toplevel
  c = importlib.import_module(f"configs.{name}").get_config()
  eight_b = dict(models.get_family("llada").sizes["8b"], length=1024)
  assert {k: c.model[k] for k in eight_b} == eight_b
  assert (c.model.family, c.model.dtype, c.model.remat) == ("llada", "bfloat16", True)
  assert (c.diffusion.process, c.diffusion.sampling_eps, c.diffusion.antithetic) == (
      "llada", 0.0, False)
  assert (c.optim.lr, c.optim.weight_decay, c.batch.global_batch) == (3e-5, 0.0, 512)
  assert c.objective == ("drift" if "drift" in name else "continuation")
  assert (c.prompt.mode, c.prompt.length) == (("prefix", 256) if "prompt" in name
                                              else ("none", 0))
  model_cfg = builder.model_config(c)
  assert model_cfg == models.get_family("llada").config_cls(**eight_b)
  builder.check_batch_config(c, builder.make_mesh(c), 1)
  process = builder.process_for(c, model_cfg)
  assert (process.name, process.mask_id, process.sampling_eps) == ("llada", 126336, 0.0)
  if c.objective == "drift":
    assert builder.objective_for(c, model_cfg, process).config.pool == "all"
  spec = prompt_lib.from_config(c, model_cfg.length, process)
  assert spec.active == ("prompt" in name)
  with pytest.raises(trainer.TrainError,
                     match=r"download GSAI-ML/LLaDA-8B-Base elsewhere .* `python -m convert "
                           r"SRC DST --family llada`"):
    trainer.resolve_init_checkpoint(c)


@pytest.mark.slow
def test_padded_sft_drift_run(tiny_dir, tmp_path, tiny_llada_run_config):
  """SFT pairs whose prompts differ in length, left-padded with ``config.prompt.pad_id``
  so that every completion starts in column 6 (P_i = 6 counts the pads), through
  trainer.train: finite losses and the padding metric (the micro-step's padded == unpadded
  values are tests/objectives/test_padding.py)."""
  cfg = tiny_llada_run_config(tiny_dir, "drift", prompt_mode="data", pool="completion")
  rows = np.load(cfg.data.train_tokens)
  plen = np.load(tokens_lib.prompt_lengths_path(cfg.data.train_tokens))
  length, width, pad = rows.shape[1], 6, 251   # 251: neither text (< 250) nor the mask
  assert len(set(np.minimum(plen, width).tolist())) > 1   # prompts of different lengths
  padded = np.full_like(rows, pad)
  for i, (row, p) in enumerate(zip(rows, np.minimum(plen, width))):
    padded[i, width - p:width] = row[:p]
    padded[i, width:] = row[p:p + length - width]
  path = str(tmp_path / "sft_padded.npy")
  np.save(path, padded)
  np.save(tokens_lib.prompt_lengths_path(path), np.full(len(rows), width, np.int32))
  cfg.data.train_tokens = path
  cfg.prompt.pad_id = pad
  cfg.train.steps = 2
  workdir = str(tmp_path / "run")
  trainer.train(cfg, workdir)
  logged = [r for r in metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if "loss" in r]
  assert len(logged) == 2 and all(np.isfinite(r["loss"]) for r in logged)
  # Rows hold 16 − (6 − min(P_i, 6)) real tokens: fewer than 16 on average.
  assert all(10 <= r["real_per_row"] < length for r in logged)
