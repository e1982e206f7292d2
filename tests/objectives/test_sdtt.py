"""objectives/sdtt: SDTT's teacher targets (both time grids), its four losses, the full
micro-step and the round schedule, against the float64 PyTorch reference written from the
public code (tests/references/torch_sdtt.py); the config checks, the matched-budget config;
and (--runslow) the trainer's jitted step refreshing the teacher at a round boundary.

The denoiser is the tiny random DiT (every leaf perturbed; time-conditioned, so the σ each
teacher step feeds is checked too). The reference sees it only as a fixed function returning
numpy logits: what is independent is the target / loss / schedule logic around it. The
Gumbel uniforms are fixed and shared.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from tests.references import torch_sdtt as ref
from tokendrift_jax import models
from tokendrift_jax.diffusion.mdlm import MDLMProcess
from tokendrift_jax.objectives import sdtt
from tokendrift_jax.train import losses

B = 6
EPS = 1e-3  # process eps and sampling_eps


@pytest.fixture(scope="module")
def tiny(tiny_model_config, random_params):
  cfg = tiny_model_config("mdlm", time_conditioning=True)
  gdef = models.graphdef(cfg)
  process = MDLMProcess(vocab_size=cfg.vocab_size, eps=EPS, sampling_eps=EPS)
  apply = jax.jit(lambda p, x, s: models.merge(gdef, p)(x, s))

  def denoiser(params):
    """The network as the reference sees it: numpy in, float64 numpy logits out."""
    return lambda x, sigma: np.asarray(
        apply(params, jnp.asarray(x, jnp.int32), jnp.asarray(sigma, jnp.float32)), np.float64)

  return dict(cfg=cfg, gdef=gdef, process=process, denoiser=denoiser,
              student=random_params(cfg, 3), teacher=random_params(cfg, 4))


def _no_mask_col(a, mask_id):
  # The mask column is logit − 1e6 − lse: float32 holds it to an ulp of 1e6 (0.0625), so it
  # is compared on its own (it must stay near −1e6), the rest elementwise.
  return np.delete(np.asarray(a, np.float64), mask_id, axis=-1)


def test_teacher_targets_both_grids(tiny):
  process, cfg = tiny["process"], tiny["cfg"]
  mask = process.mask_id
  rng = np.random.default_rng(0)
  length, vocab = cfg.length, cfg.vocab_size
  # Times from near 1 to near sampling_eps and a large dt (0.1), so that tokens unmask at
  # step 0, at step 1 and not at all, and some rows' steps end below 0 (every mask goes).
  t = np.array([0.95, 0.7, 0.45, 0.3, 0.12, 0.02], np.float32)
  dt = np.float32(0.1)
  x0 = rng.integers(0, vocab - 1, size=(B, length))
  xt = np.where(rng.random((B, length)) < t[:, None], mask, x0).astype(np.int32)
  u = rng.random((2, B, length, vocab)).astype(np.float32)
  teacher_fn = lambda x, s: models.merge(tiny["gdef"], tiny["teacher"])(x, s)

  @jax.jit
  def both(xt, t, dt, u):
    return {g: sdtt.teacher_targets(process, teacher_fn, xt, t, dt, u, num_steps=2, grid=g)
            for g in sdtt.TEACHER_GRIDS}

  got = jax.device_get(both(xt, t, dt, u))
  is_mask = xt == mask
  for grid in sdtt.TEACHER_GRIDS:
    want, want_x, step_of = ref.teacher_logprobs_on_mask(
        tiny["denoiser"](tiny["teacher"]), xt, t, float(dt), u, mask_index=mask, n=2,
        sampling_eps=EPS, eps=EPS, grid=grid)
    targets, x_end = got[grid]
    # The teacher's draws are the reference's (the same uniforms, float32 vs float64 q).
    chex.assert_trees_all_equal(x_end, want_x.astype(np.int32))
    # Every path is exercised: unmasked at step 0, at step 1, and never.
    for k in (0, 1, -1):
      assert np.any(is_mask & (step_of == k)), (grid, k)
    # float32 log-softmax of the same float32 logits vs float64: ~1e-6 absolute at most.
    chex.assert_trees_all_close(_no_mask_col(np.where(is_mask[..., None], targets, 0), mask),
                                _no_mask_col(np.where(is_mask[..., None], want, 0), mask),
                                atol=1e-5, rtol=0)
    assert np.all(targets[..., mask][is_mask] < -9e5)
  # The two grids are different grids: the targets differ.
  assert np.max(np.abs(got["described"][0] - got["released"][0])[is_mask]) > 1e-2


def test_teacher_times():
  t = jnp.array([0.9, 0.5, 0.15, 0.001], jnp.float32)
  dt = 0.1
  for grid in sdtt.TEACHER_GRIDS:
    want = ref.teacher_times(torch.tensor(np.asarray(t, np.float64)), dt, 2, EPS,
                             grid).numpy()
    # float32 arithmetic on t ~ 1: an ulp of 6e-8.
    chex.assert_trees_all_close(np.asarray(sdtt.teacher_times(t, dt, 2, grid, EPS)), want,
                                atol=1e-6, rtol=0)
  # The described grid is t, t − dt (clamped); the released one t + (1 − t)(t − 2dt), ...
  chex.assert_trees_all_close(np.asarray(sdtt.teacher_times(t, dt, 2, "described", EPS)),
                              np.array([[0.9, 0.5, 0.15, 0.001], [0.8, 0.4, 0.05, 0.001]]),
                              atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", sdtt.DISTILL_MODES)
def test_losses_float64(mode):
  """The four reductions, mask column included, in float64 (1e-12 relative)."""
  rng = np.random.default_rng(1)
  vocab, length, mask = 9, 7, 8
  xt = np.where(rng.random((3, length)) < 0.6, mask, rng.integers(0, mask, (3, length)))
  student = ref.student_logprobs(3 * rng.standard_normal((3, length, vocab)), xt, mask)
  target = ref.student_logprobs(3 * rng.standard_normal((3, length, vocab)), xt, mask)
  is_mask = xt == mask
  want = ref.distill_loss(mode, student, target, is_mask)
  with jax.enable_x64(True):
    got = float(jax.jit(sdtt.distill_loss, static_argnums=0)(
        mode, jnp.asarray(student), jnp.asarray(target), jnp.asarray(is_mask)))
    none = float(sdtt.distill_loss(mode, jnp.asarray(student), jnp.asarray(target),
                                   jnp.zeros_like(jnp.asarray(is_mask))))
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=0)
  assert none == 0.0   # nothing masked: 0 (torch's batchmean would divide by zero)


def test_microstep_matches_reference(tiny):
  """The full micro-step (kl-bwd, described grid, round 2 of a 16-step grid: dt ≈ 1/4) vs
  the reference fed the same t, x_t and uniforms."""
  process, gdef, cfg = tiny["process"], tiny["gdef"], tiny["cfg"]
  obj = sdtt.SDTT(distill_mode="kl-bwd", initial_sampling_steps=16, min_sampling_steps=1,
                  round_steps=5, teacher_grid="described", sampling_eps=EPS)
  ctx = losses.StepContext(graphdef=gdef, process=process, mesh=None, dropout=False)
  aux = {"teacher": tiny["teacher"], "round": jnp.int32(2)}
  rng = np.random.default_rng(2)
  x0 = rng.integers(0, cfg.vocab_size - 1, size=(B, cfg.length)).astype(np.int32)
  key = jax.random.PRNGKey(5)

  # The micro-step's documented draws: k_t, k_x, k_teacher, k_drop = split(key, 4).
  k_t, k_x, k_teacher, _ = jax.random.split(key, 4)
  t = process.sample_t(k_t, B)
  xt = np.asarray(process.corrupt(k_x, jnp.asarray(x0), t))
  u = [np.asarray(jax.random.uniform(jax.random.fold_in(k_teacher, k),
                                     (B, cfg.length, cfg.vocab_size))) for k in range(2)]
  dt = (1 - EPS) / 16 * 2 ** 2
  want_targets, _, _ = ref.teacher_logprobs_on_mask(
      tiny["denoiser"](tiny["teacher"]), xt, np.asarray(t), dt, u, mask_index=process.mask_id,
      n=2, sampling_eps=EPS, eps=EPS, grid="described")
  sigma = np.asarray(ref.loglinear_sigma(torch.tensor(np.asarray(t, np.float64))))
  student = ref.student_logprobs(tiny["denoiser"](tiny["student"])(xt, sigma), xt,
                                 process.mask_id)
  is_mask = xt == process.mask_id
  want = ref.distill_loss("kl-bwd", student, want_targets, is_mask)

  # The targets depend on the teacher only (aux), so the gradient is the student's alone:
  # the loss matching the reference and a nonzero gradient are what is checked.
  loss, grads, new_aux, metrics = jax.device_get(
      jax.jit(lambda p, a, x, k: obj.microstep(ctx, p, None, a, x, k))(
          tiny["student"], aux, x0, key))
  # float32 forward + log-softmax + KL sum over V vs float64 on the same logits.
  chex.assert_trees_all_close(float(loss), want, rtol=1e-5, atol=0)
  chex.assert_trees_all_close(float(metrics["loss"]), want, rtol=1e-5, atol=0)
  chex.assert_trees_all_close(float(metrics["masked_frac"]), float(is_mask.mean()), rtol=1e-6,
                              atol=0)
  assert max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads)) > 1e-4
  # The micro-step leaves the teacher and the round alone.
  chex.assert_trees_all_equal(new_aux, jax.device_get(aux))


def test_round_schedule():
  """dt, teacher refresh and round, step by step, against the released training_step; the
  run length the minimum step count allows."""
  obj = sdtt.SDTT(initial_sampling_steps=64, num_distill_steps=2, min_sampling_steps=8,
                  round_steps=3, sampling_eps=EPS)
  params = lambda s: {"w": jnp.full((2, 3), float(s), jnp.float32), "b": jnp.full((3,), -s)}
  aux = obj.init_aux(params(0))
  schedule = ref.RoundSchedule(initial_sampling_steps=64, num_distill_steps=2,
                               min_sampling_steps=8, grow_dt_every=3, sampling_eps=EPS,
                               teacher=jax.device_get(params(0)))
  end_step = jax.jit(obj.end_step)
  # Rounds of 64, 32, 16, 8 teacher steps: 4 rounds of 3 steps, then the released run stops.
  for s in range(12):
    assert not schedule.before_step(s, jax.device_get(params(s)))
    # float32 dt vs float64: one rounding of a power of two times (1 - eps) / 64.
    chex.assert_trees_all_close(float(obj.dt(aux["round"])), schedule.dt, rtol=1e-7, atol=0)
    assert int(aux["round"]) == schedule.round
    chex.assert_trees_all_equal(jax.device_get(aux["teacher"]), schedule.teacher)
    aux, metrics = end_step(aux, params(s + 1), jnp.int32(s + 1))
    assert int(metrics["sdtt_round"]) == (s + 1) // 3
    chex.assert_trees_all_close(float(metrics["sdtt_dt"]), (1 - EPS) / 64 * 2 ** ((s + 1) // 3),
                                rtol=1e-7, atol=0)
  assert schedule.before_step(12, None)
  # A boundary step whose update was skipped (train.nonfinite="skip" keeps the old aux) is
  # caught up at the next step: round 1, the teacher that step's parameters.
  aux0 = obj.init_aux(params(0))
  aux1, _ = end_step(aux0, params(3), jnp.int32(2))
  chex.assert_trees_all_equal(aux1, aux0)
  aux4, _ = end_step(aux1, params(4), jnp.int32(4))   # the step-3 update was not applied
  assert int(aux4["round"]) == 1
  chex.assert_trees_all_equal(aux4["teacher"], params(4))
  assert sdtt.rounds_allowed(sampling_eps=EPS, initial_sampling_steps=64, num_distill_steps=2,
                             min_sampling_steps=8) == 4
  # The public schedule: 1024 -> 8 teacher steps is 8 rounds (the README's 80k steps).
  assert sdtt.rounds_allowed(sampling_eps=1e-5, initial_sampling_steps=1024,
                             num_distill_steps=2, min_sampling_steps=8) == 8


def _config(**sdtt_over):
  c = ml_collections.ConfigDict()
  c.objective = "sdtt"
  c.sdtt = sdtt.default_config()
  c.sdtt.update(sdtt_over)
  c.train = ml_collections.ConfigDict(dict(steps=12))
  return c


@pytest.mark.parametrize("field,value", [
    ("distill_mode", "kl"), ("teacher_grid", "paper"), ("num_distill_steps", 1),
    ("initial_sampling_steps", 0), ("min_sampling_steps", 2048), ("round_steps", 0),
    ("round_steps", 1),   # 1 step per round: 12 steps reach round 8
])
def test_from_config_rejects(field, value):
  with pytest.raises(ValueError, match=f"config.sdtt.{field}"):
    sdtt.SDTT.from_config(_config(**{field: value}), None, MDLMProcess(vocab_size=33))


def test_from_config_and_bookkeeping(tiny):
  process = MDLMProcess(vocab_size=33, sampling_eps=1e-5)
  obj = sdtt.SDTT.from_config(_config(round_steps=3, teacher_grid="released"), None, process)
  assert (obj.round_steps, obj.teacher_grid, obj.sampling_eps) == (3, "released", 1e-5)
  assert obj.resume_fields()["sdtt.round_steps"] == 3
  with pytest.raises(ValueError, match="config.diffusion.process"):
    sdtt.SDTT.from_config(_config(), None, type("P", (), {"name": "duo"})())
  with pytest.raises(ValueError, match="config.sdtt.bogus"):
    sdtt.SDTT.from_config(_config(bogus=1), None, process)
  cfg = tiny["cfg"]
  fm = models.family_of(cfg).flops(cfg)
  terms, recompute = obj.extra_flops(fm, cfg, length=16, micro_batch=4, n_micro=3,
                                     remat_policy="")
  assert terms == {"teacher_fwd": 2 * 12 * fm.forward(16, output_layer=True)}
  assert recompute == 0


# A whole jitted train step (teacher, student, optimizer) to compile: ~7 s alone on a quiet
# 2-core machine, over this file's budget, so it runs with --runslow.
@pytest.mark.slow
def test_build_step_refreshes_the_teacher_at_the_round_boundary(tiny_dir, tiny_run_config):
  """The trainer's jitted step with objective "sdtt": 2 steps, rounds of 2 steps. After
  step 1 the teacher is still the initial checkpoint (the parameters moved); after step 2
  it is the step-2 parameters and the round (hence dt) has grown."""
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax import checkpoints
  from tokendrift_jax import sharding
  from tokendrift_jax.train import builder
  if not hasattr(builder, "objective_for"):
    pytest.skip("the objective contract's builder has not landed")
  c = tiny_run_config(tiny_dir, "mdlm", "sdtt", steps=2, mesh_shape=(1, 1), num_devices=1,
                      global_batch=8, micro_batch=4)
  c.sdtt = sdtt.default_config()
  c.sdtt.round_steps = 2
  c.ema.enabled = False   # not looked at here; a smaller program to compile
  parts = builder.build_step(c)
  assert isinstance(parts.objective, sdtt.SDTT) and parts.objective.round_steps == 2
  params0 = checkpoints.load_backbone_params(c.init_checkpoint)[1]
  state = sharding.to_global(parts.init_state(params0), parts.state_shardings)
  batch = jax.make_array_from_process_local_data(parts.batch_sharding,
                                                 np.load(c.data.train_tokens)[:8])
  state, m1 = parts.step_fn(state, batch, None)
  s1 = jax.device_get(state)
  state, m2 = parts.step_fn(state, batch, None)
  s2 = jax.device_get(state)
  assert bool(m1["finite"]) and bool(m2["finite"])
  chex.assert_trees_all_equal(s1.aux["teacher"], jax.device_get(params0))
  assert int(s1.aux["round"]) == 0 and int(m1["sdtt_round"]) == 0
  chex.assert_trees_all_equal(s2.aux["teacher"], s2.params)
  assert int(s2.aux["round"]) == 1 and int(m2["sdtt_round"]) == 1
  # float32 dt vs the float64 schedule: one rounding.
  chex.assert_trees_all_close(float(m2["sdtt_dt"]), 2 * (1 - 1e-3) / 1024, rtol=1e-7, atol=0)
  # The parameters did move at step 1 (so the unchanged teacher is a real check).
  assert max(float(np.max(np.abs(a - b))) for a, b in
             zip(jax.tree.leaves(s1.params), jax.tree.leaves(jax.device_get(params0)))) > 1e-5


def test_matched_budget_config():
  """configs/mdlm_sdtt.py: 7 equal rounds whose model FLOPs (perf/flops.py, the teacher's
  forwards included) are at most, and within 7 steps of, the TokenDrift run's; the public
  recipe's values in configs/mdlm_sdtt_public.py."""
  # pylint: disable=import-outside-toplevel
  from configs import mdlm_drift, mdlm_sdtt, mdlm_sdtt_public
  from tokendrift_jax import objectives
  from tokendrift_jax.diffusion import process_from_config
  from tokendrift_jax.perf import flops
  pub = mdlm_sdtt_public.get_config()
  assert (pub.objective, pub.sdtt.round_steps, pub.train.steps, pub.batch.global_batch,
          pub.optim.lr, pub.optim.warmup_steps, pub.ema.decay, pub.diffusion.sampling_eps,
          pub.sdtt.distill_mode, pub.sdtt.num_distill_steps, pub.sdtt.initial_sampling_steps,
          pub.sdtt.min_sampling_steps) == ("sdtt", 10_000, 70_000, 128, 3e-4, 2500, 0.9999,
                                           1e-5, "kl-bwd", 2, 1024, 8)

  def step_model_flops(c):
    mcfg = models.model_config(c.model)
    obj = objectives.from_config(c, mcfg, process_from_config(c, mcfg))
    return flops.step_flops(mcfg, objective=obj, length=c.model.length,
                            micro_batch=c.batch.micro_batch,
                            n_micro=c.batch.global_batch // c.batch.micro_batch).model

  drift, ours = mdlm_drift.get_config(), mdlm_sdtt.get_config()
  budget = drift.train.steps * step_model_flops(drift)
  per_step = step_model_flops(ours)
  assert ours.train.steps == 7 * ours.sdtt.round_steps
  assert ours.train.steps * per_step <= budget < (ours.train.steps + 7) * per_step
  assert ours.init_checkpoint == drift.init_checkpoint and ours.data == drift.data
  assert ours.model == drift.model


@pytest.mark.parametrize("mode,pad_id,match", [("prefix", -1, "config.prompt.mode"),
                                               ("none", 0, "config.prompt.pad_id=0")])
def test_prompts_and_padding_are_refused_when_the_run_is_built(mode, pad_id, match):
  c = _config()
  c.prompt = ml_collections.ConfigDict(dict(mode=mode, length=4, pad_id=pad_id))
  with pytest.raises(ValueError, match=match):
    sdtt.SDTT.from_config(c, None, MDLMProcess(vocab_size=33))
