"""The trainer: device-count invariance, bitwise resume, the full 170M config."""

from __future__ import annotations

import os
import time

import chex
import jax
import numpy as np
import pytest

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.train import builder
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import trainer


# ------------------------------------------------------------------ device invariance


def _one_vs_eight(names, tiny_dir, tmp_path, tiny_run_config, read_losses, exported_params,
                  max_abs_diff):
  """3 TokenDrift steps on 1 device == on the 8-device meshes ``names``, within 1e-5."""
  meshes = {"one": ((1, 1), 1, "replicated"), "dp8": ((8, 1), 8, "replicated"),
            "fsdp": ((4, 2), 8, "fsdp")}
  runs = {}
  for name in ("one",) + tuple(names):
    shape, n, rule = meshes[name]
    cfg = tiny_run_config(tiny_dir, mesh_shape=shape, num_devices=n, param_sharding=rule)
    trainer.train(cfg, str(tmp_path / name))
    runs[name] = (read_losses(str(tmp_path / name)), exported_params(str(tmp_path / name)))
  ref_losses, ref_params = runs["one"]
  assert len(ref_losses) == 3
  init = checkpoints.load_backbone_params(os.path.join(tiny_dir, "init"))[1]
  # max_abs_diff is kept for the lower bound; closeness goes through chex.
  assert max_abs_diff(ref_params, init) > 1e-4, "parameters must move for the test to mean much"
  for name in names:
    losses, params = runs[name]
    # float32 reductions are split differently over devices; 1e-5 is the bound and
    # ~100x the observed differences.
    # Keyed by the run's name, so that a failure names the run and the leaf.
    chex.assert_trees_all_close({name: losses}, {name: ref_losses}, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close({name: params}, {name: ref_params}, rtol=0, atol=1e-5)


def test_one_device_equals_eight_devices_fsdp(tiny_dir, tmp_path, tiny_run_config,
                                              read_losses, exported_params, max_abs_diff):
  """3 TokenDrift steps on 1 device == on (4, 2) + FSDP (the batch over data x fsdp, the
  parameters split over fsdp), within 1e-5."""
  _one_vs_eight(("fsdp",), tiny_dir, tmp_path, tiny_run_config, read_losses, exported_params,
                max_abs_diff)


@pytest.mark.slow
def test_one_device_equals_eight_devices_dp_and_fsdp(tiny_dir, tmp_path, tiny_run_config,
                                                     read_losses, exported_params, max_abs_diff):
  """The same on (8, 1) data parallel as well. Slow: data parallelism is in the suite
  through (4, 2) above and the two-process (4, 1) launch of tests/launch/test_train.py."""
  _one_vs_eight(("dp8", "fsdp"), tiny_dir, tmp_path, tiny_run_config, read_losses,
                exported_params, max_abs_diff)


# ------------------------------------------------------------------ tensor meshes
# One step of builder.build_step's jitted step (the step the trainer runs, two micro-steps
# of 8) on a 3-axis mesh with the logical-axis rules, against the same step on one device.
# The one-device steps are the programs that the test above (drift) and
# tests/train/test_faults.py (continuation) compile, so the session's compilation cache
# serves them; each mesh costs one compile (~10 s on 2 shared cores, remat adds ~3 s). The
# suite runs TokenDrift on (1, 2, 4), which splits over both fsdp and tensor; the rest of
# the matrix, remat under the tensor axis included, is slow (the suite's time budget).

TENSOR_CASES = [
    # (objective, mesh shape, remat policy or None)
    pytest.param("drift", (1, 2, 4), None, id="drift-1x2x4"),
    pytest.param("drift", (1, 2, 4), "dots_with_no_batch_dims_saveable",
                 id="drift-1x2x4-remat", marks=pytest.mark.slow),
    pytest.param("drift", (2, 2, 2), None, id="drift-2x2x2", marks=pytest.mark.slow),
    pytest.param("continuation", (1, 2, 4), "nothing_saveable", id="continuation-1x2x4-remat",
                 marks=pytest.mark.slow),
    pytest.param("drift", (8, 1, 1), None, id="drift-8x1x1", marks=pytest.mark.slow),
    pytest.param("continuation", (8, 1, 1), None, id="continuation-8x1x1",
                 marks=pytest.mark.slow),
    pytest.param("continuation", (2, 2, 2), "dots_saveable", id="continuation-2x2x2-remat",
                 marks=pytest.mark.slow),
]


def _one_step_config(tiny_run_config, tiny_dir, objective, shape, remat_policy):
  n = int(np.prod(shape))
  c = tiny_run_config(tiny_dir, objective=objective, mesh_shape=shape, num_devices=n,
                      param_sharding="replicated" if n == 1 else "rules")
  c.model.remat, c.model.remat_policy = remat_policy is not None, remat_policy or ""
  return c


def _one_step(config):
  """(parts, state after one step, encoder params, metrics): the step from the init
  checkpoint on the first global batch of the training rows."""
  parts = builder.build_step(config)
  _, params, _ = checkpoints.load_backbone_params(config.init_checkpoint)
  state = sharding.to_global(parts.init_state(params), parts.state_shardings)
  encoder = parts.objective.frozen(params)
  if encoder is not None:
    encoder = sharding.to_global(encoder, parts.frozen_shardings)
  rows = np.load(config.data.train_tokens)[:int(config.batch.global_batch)]
  state, metrics = parts.step_fn(state, sharding.to_global(rows, parts.batch_sharding),
                                 encoder)
  return parts, state, encoder, metrics


@pytest.fixture(scope="module")
def one_device_step(tiny_dir, tiny_run_config):
  """``get(objective) -> (state, metrics)`` on the host: the one-device step, once."""
  cache = {}

  def get(objective):
    if objective not in cache:
      t0 = time.time()
      _, state, _, metrics = _one_step(_one_step_config(tiny_run_config, tiny_dir, objective,
                                                        (1, 1), None))
      cache[objective] = jax.device_get((state, metrics))
      print(f"one-device {objective} step: {time.time() - t0:.1f} s")
    return cache[objective]
  return get


def _assert_first_adam_step_close(got, ref, got_mu, ref_mu, lr, b1, eps):
  """Params (or their EMA) after one AdamW step from the same start, given the first
  moments mu = (1 - b1)·G (G the clipped gradient) of the two runs; weight decay 0.

  The step moves an entry by lr·G/(|G| + eps), whose slope in G, eps/(|G| + eps)², reaches
  1/eps at G = 0: where G is near 0, the 1e-5 agreement of the gradients does not carry
  over to the params with the same bound (an entry whose G differs by 1e-9 moves up to
  lr·0.1 apart). The bound per entry is that slope's maximum between the two G's (mean
  value theorem) times |ΔG|, plus the float32 rounding of both runs: of the update
  lr·m̂/(sqrt(v̂) + eps), |m̂/(sqrt(v̂) + eps)| <= 1, about 6 roundings of 2^-24 each, and of
  p - update, one ulp of the entry each (the EMA's 1 - d <= 1 factor only shrinks it).
  """
  def one(path, p_got, p_ref, m_got, m_ref):
    g_got, g_ref = (np.asarray(m, np.float64) / (1 - b1) for m in (m_got, m_ref))
    nearest = np.where(np.sign(g_got) == np.sign(g_ref),
                       np.minimum(np.abs(g_got), np.abs(g_ref)), 0.0)
    bound = (lr * eps / (nearest + eps) ** 2 * np.abs(g_got - g_ref)
             + 2 * 6 * 2.0 ** -24 * lr + 2 * np.spacing(np.abs(np.asarray(p_ref, np.float32))))
    diff = np.abs(np.asarray(p_got, np.float64) - np.asarray(p_ref, np.float64))
    assert np.all(diff <= bound), (jax.tree_util.keystr(path), float(np.max(diff - bound)))
    return float(np.max(diff))
  worst = jax.tree_util.tree_map_with_path(one, got, ref, got_mu, ref_mu)
  print(f"max |params diff| {max(jax.tree.leaves(worst)):.2e}")


def _shard_shape(x):
  return x.addressable_shards[0].data.shape


@pytest.mark.parametrize("objective, shape, remat_policy", TENSOR_CASES)
def test_one_device_equals_tensor_meshes(objective, shape, remat_policy, tiny_dir,
                                         tiny_run_config, one_device_step):
  """One step with param_sharding="rules" on 8 devices == on 1 device: loss and metrics,
  the gradient (as Adam's first moment after one step, (1 - b1)·clipped g), the updated
  params and EMA, and the TokenDrift queues, within 1e-5; remat policies under the
  tensor axis give the same numbers."""
  ref_state, ref_metrics = one_device_step(objective)
  t0 = time.time()
  parts, state, encoder, metrics = _one_step(
      _one_step_config(tiny_run_config, tiny_dir, objective, shape, remat_policy))
  got_state, got_metrics = jax.device_get((state, metrics))
  print(f"{objective} step on {shape}: {time.time() - t0:.1f} s")

  # Placement: the arrays are where the rules put them; Adam's moments and the EMA sit
  # with their parameters; the frozen encoder is the generator's placement less its output
  # layer (replicated 0-element placeholders) and holds no optimizer state.
  param_shardings = parts.state_shardings.params
  assert jax.tree.map(lambda a: a.sharding, state.params) == param_shardings
  assert jax.tree.map(lambda a: a.sharding, state.ema_params) == param_shardings
  adam = state.opt_state[1][0]
  assert jax.tree.map(lambda a: a.sharding, (adam.mu, adam.nu)) == (param_shardings,) * 2
  if encoder is not None:
    body = lambda t: {k: v for k, v in t.items() if k != "output_layer"}
    assert body(parts.frozen_shardings) == body(param_shardings)
    assert jax.tree.map(lambda a: a.sharding, encoder) == parts.frozen_shardings
    chex.assert_trees_all_equal_structs(encoder, state.params)
    assert all(a.size == 0 and a.sharding.spec == jax.sharding.PartitionSpec()
               for a in jax.tree.leaves(encoder["output_layer"]))
  block = state.params["blocks"][0]
  d, t = shape[1], shape[2]   # fsdp and tensor sizes; the tiny DiT has d = 32, 4d = 128
  assert _shard_shape(block["attn_qkv"]["kernel"]) == (32 // d, 96 // t)
  assert _shard_shape(block["mlp"][0]["kernel"]) == (32 // d, 128 // t)
  assert _shard_shape(block["mlp"][1]["kernel"]) == (128 // t, 32 // d)
  assert _shard_shape(adam.mu["blocks"][0]["attn_qkv"]["kernel"]) == (32 // d, 96 // t)

  # float32 reductions are split differently over the devices (and over the tensor shards
  # of each matmul); 1e-5 is the bound, as in the test above.
  floats = lambda m: {k: v for k, v in m.items() if k != "finite"}
  assert bool(got_metrics["finite"]) and bool(ref_metrics["finite"])
  chex.assert_trees_all_close(floats(got_metrics), floats(ref_metrics), rtol=1e-5, atol=1e-6)
  ref_adam, got_adam = ref_state.opt_state[1][0], got_state.opt_state[1][0]
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_adam.mu))
  assert scale > 0   # a lower bound: the gradient is not vacuous
  # The gradient to 1e-5 of its largest entry (test_losses' bound). nu = (1 - b2)·g² with
  # g = mu / (1 - b1) = 10·mu: that bound gives |Δnu| <= 1e-3·2·g_max·1e-5·g_max
  # = 2e-6·scale².
  chex.assert_trees_all_close(got_adam.mu, ref_adam.mu, rtol=0, atol=1e-5 * scale)
  chex.assert_trees_all_close(got_adam.nu, ref_adam.nu, rtol=0, atol=2e-6 * scale ** 2)
  c = parts.config.optim
  for got, ref in [(got_state.params, ref_state.params),
                   (got_state.ema_params, ref_state.ema_params)]:
    _assert_first_adam_step_close(got, ref, got_adam.mu, ref_adam.mu, c.lr, c.b1, c.eps)
  if objective == "drift":
    # Unit-norm features (test_losses' bound); pointer and count exactly.
    chex.assert_trees_all_close(got_state.aux, ref_state.aux, rtol=0, atol=1e-6)
    assert int(got_state.aux["gen"].count) == 16   # 2 micro-steps of 8


# ------------------------------------------------------------------ resume


def _state_at(workdir, step, like_cfg):
  run = trainer.build(like_cfg, workdir)
  state, _, _ = run.checkpointer.restore(step, checkpointing.abstract_like(run.state))
  run.checkpointer.close()
  return state


@pytest.mark.slow
def test_resume_is_bitwise_identical(tiny_dir, tmp_path, tiny_run_config, read_losses):
  """6 steps == 3 steps, restart, 3 more: losses, params and queues bitwise equal. Slow:
  the suite's exact-resume check is tests/train/test_faults.py's resume past a damaged
  checkpoint (3 steps == resumed from step 2, the whole TokenDrift state bitwise)."""
  full, split = str(tmp_path / "full"), str(tmp_path / "split")
  trainer.train(tiny_run_config(tiny_dir, steps=6), full)
  first = trainer.train(tiny_run_config(tiny_dir, steps=3), split)
  assert first["step"] == 3
  second = trainer.train(tiny_run_config(tiny_dir, steps=6), split)
  assert second["start_step"] == 3 and second["step"] == 6
  # Exact float equality, JSON round trip included.
  chex.assert_trees_all_equal(read_losses(full), read_losses(split))
  a = _state_at(full, 6, tiny_run_config(tiny_dir, steps=6))
  b = _state_at(split, 6, tiny_run_config(tiny_dir, steps=6))
  chex.assert_trees_all_equal(a, b)
  assert int(a.aux["gen"].count) == 24  # 6 steps x 2 micro-steps x 8 > 24: wrapped


def test_resume_refuses_another_first_moment_dtype(tiny_dir, tmp_path, tiny_run_config):
  """The Adam moment's storage dtype is part of the state: a resume with the other
  optim.mu_dtype is refused before anything is written; a checkpoint written before the
  field existed counts as float32. (steps=0 saves the initial state without compiling a
  step.)"""
  wd = str(tmp_path / "wd")
  legacy = tiny_run_config(tiny_dir, objective="continuation", steps=0)
  del legacy.optim["mu_dtype"]
  trainer.train(legacy, wd)
  c = tiny_run_config(tiny_dir, objective="continuation", steps=0)
  c.optim.mu_dtype = "bfloat16"
  with pytest.raises(trainer.TrainError,
                     match="optim.mu_dtype 'float32' vs config 'bfloat16'") as e:
    trainer.train(c, wd)
  assert "\n" not in str(e.value)


# ------------------------------------------------------------------ the full 170M config


def _shipped_170m_config():
  """configs/mdlm_drift.py as shipped (170M; dtype "auto", float32 on CPU) at length 16,
  FSDP over 8 devices."""
  from configs import mdlm_drift  # pylint: disable=import-outside-toplevel
  c = mdlm_drift.get_config()
  c.model.length = 16
  c.batch.global_batch, c.batch.micro_batch = 8, 8
  c.drift.queue_size = 16
  # FSDP over all 8 simulated devices: replicated float32 state (params, Adam moments, EMA,
  # encoder; ~3.4 GB) on 8 CPU "devices" would need 8 copies.
  c.mesh.shape, c.mesh.param_sharding = (1, 8), "fsdp"
  return c


@pytest.mark.slow
def test_full_170m_drift_config_compiles():
  """The shipped 170M config's step builds, shards and compiles (abstract arguments, nothing
  allocated). Slow (~20 s): the suite compiles the shipped LLaDA-8B step the same way
  (tests/perf/test_memory_plan.py), the DiT's pieces are compiled by the tiny tests."""
  from tokendrift_jax.train import builder  # pylint: disable=import-outside-toplevel
  parts = builder.build_step(_shipped_170m_config())
  assert parts.model_cfg.num_params() == 169_627_218
  compiled = parts.step_fn.lower(*parts.abstract_args()).compile()
  assert compiled.as_text()


@pytest.mark.slow
def test_full_170m_drift_config_runs_one_micro_step(tmp_path, make_tokens):
  """configs/mdlm_drift.py as shipped (170M, bf16), short length: builds, shards, steps.
  Slow (a 170M checkpoint written and loaded, a 2.7 GB training checkpoint saved); the suite
  keeps the compile-only version above."""
  from tokendrift_jax.models.dit import mdlm_small
  cfg170 = mdlm_small()
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda x: np.asarray(x) + 0.02 * rng.standard_normal(np.shape(x)).astype(np.float32),
      models.init_params(cfg170, 0))
  init = str(tmp_path / "mdlm170m")
  checkpoints.save_backbone(init, cfg170, params, meta={"process": "mdlm"})
  del params
  make_tokens(str(tmp_path / "train.npy"), 16, 16, 50257, seed=3)
  c = _shipped_170m_config()
  c.init_checkpoint = init
  c.data.kind, c.data.train_tokens = "tokens", str(tmp_path / "train.npy")
  c.train.steps, c.train.log_every, c.train.eval_every = 1, 1, 0
  c.train.export_backbone, c.train.progress = False, False
  out = trainer.train(c, str(tmp_path / "wd"))
  m = out["metrics"]
  assert out["step"] == 1 and np.isfinite(m["loss"]) and m["grad_norm"] > 0
  assert 0 < m["pos_weight_frac/tau=0.02"] < 1 and m["queue_fill_gen"] == 8 / 16
