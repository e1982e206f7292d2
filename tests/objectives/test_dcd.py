"""DUO's discrete consistency distillation (objectives/dcd.py) against the PyTorch float64
reference of the public code (tests/references/torch_dcd.py)."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

from tests.helpers import tiny_run
from tests.references import torch_dcd
from tokendrift_jax import models
from tokendrift_jax import objectives
from tokendrift_jax.diffusion.duo import DUOProcess
from tokendrift_jax.objectives import dcd
from tokendrift_jax.train import losses

V = tiny_run.TINY["vocab_size"]   # 33
L = tiny_run.TINY["length"]       # 16


def _config(steps=100, **over):
  c = ml_collections.ConfigDict()
  c.objective = "dcd"
  # A plain dict: the validation tests put values of the wrong type in.
  c.dcd = ml_collections.ConfigDict({**dcd.default_config().to_dict(), **over})
  c.train = ml_collections.ConfigDict(dict(steps=steps))
  return c


def _objective(vocab=V, steps=100, **over):
  return objectives.from_config(_config(steps, **over), None, DUOProcess(vocab_size=vocab))


# ---------------------------------------------------------------------- the γ → α integral


@pytest.mark.parametrize("vocab", [V, 50258])
def test_alpha_table_matches_direct_integral(vocab):
  obj = _objective(vocab)
  # Grid nodes of the table: the trapezoid quadrature against scipy quad (tol 1e-13); both
  # float64, so agreement to 1e-11 (measured < 5e-14) shows the quadrature is converged.
  grid = np.linspace(-4.0, -1.0, obj.table_points)[::2048]
  ref = torch_dcd.alpha_of_gamma(vocab, torch.tensor(grid)).numpy()
  np.testing.assert_allclose(dcd.alpha_from_gamma_np(vocab, grid), ref, rtol=0, atol=1e-11)
  # Off the grid, in the jitted float32 path: σ = −log α interpolated in log σ. Bound:
  # float32 rounding (~1e-7 relative) + interpolation (≤ ~3e-7 relative at 8193 points).
  gammas = np.random.default_rng(0).uniform(-4.0, -1.0, size=5).astype(np.float32)
  gammas = np.concatenate([gammas, np.float32([-4.0, -1.0])])
  got = np.asarray(jax.jit(obj.sigma)(jnp.asarray(gammas)))
  ref_sigma = -np.log(torch_dcd.alpha_of_gamma(vocab, torch.tensor(gammas, dtype=torch.float64))
                      .numpy())
  chex.assert_trees_all_close(got.astype(np.float64), ref_sigma, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------- the trajectory pair


def _embed_summary(summary, x0, seed):
  """A full ε [b, L, V] whose summary at x0 is ``summary`` (other ids strictly below M)."""
  e0, m, j = (np.asarray(a) for a in (summary.e0, summary.m, summary.j))
  rng = np.random.default_rng(seed)
  eps = m[..., None] - 1.0 - np.abs(rng.standard_normal((*x0.shape, V)))
  np.put_along_axis(eps, j[..., None], m[..., None], axis=-1)
  np.put_along_axis(eps, np.asarray(x0)[..., None], e0[..., None], axis=-1)
  return eps


@pytest.mark.parametrize("mode", dcd.NOISE_MODES)
def test_trajectory_pair_matches_reference(mode):
  rng = np.random.default_rng(1)
  b = 6
  x0 = jnp.asarray(rng.integers(0, V, size=(b, L)), jnp.int32)
  t0 = jnp.asarray(rng.uniform(1e-3, 1.0, size=b), jnp.float32)
  dt = 0.25
  _, _, gamma_t, gamma_s = dcd.times(t0, dt, -4.0, -1.0)
  key = jax.random.key(3)
  if mode == "full":
    eps = np.asarray(jax.random.normal(key, (b, L, V), jnp.float32))
    summary = dcd.noise_summary(jnp.asarray(eps), x0)
  else:
    summary = dcd.sample_noise_summary(key, x0, V)
    eps = _embed_summary(summary, x0, seed=2)
  xt, xs = jax.jit(dcd.trajectory_tokens)(x0, summary, gamma_t, gamma_s)
  _, rgt, rgs = torch_dcd.times(torch.tensor(np.asarray(t0)), dt, -4.0, -1.0)
  zt, zs = torch_dcd.sample_trajectory(torch.tensor(np.asarray(x0)).long(), rgt, rgs,
                                       torch.tensor(eps))
  chex.assert_trees_all_equal((np.asarray(xt), np.asarray(xs)),
                              (zt.argmax(-1).numpy().astype(np.int32),
                               zs.argmax(-1).numpy().astype(np.int32)))
  # γ in float32 vs float64 (one rounding of t0 + dt and of the affine map).
  chex.assert_trees_all_close(np.asarray(gamma_t, np.float64), rgt.numpy(), rtol=0, atol=1e-6)
  # Both rows kept and changed tokens occur (the pair is not trivial).
  assert 0 < float(jnp.mean(xt == x0)) < 1 and float(jnp.mean(xs == x0)) > float(jnp.mean(xt == x0))


def test_noise_modes_have_the_same_law():
  """The O(b·L) draw of "max" against the table and against the full draw: the rates of
  x_t = x₀, x_s = x₀ and x_t = x_s. Statistical bound: 5 standard errors."""
  x0 = jnp.asarray(np.random.default_rng(4).integers(0, V, size=(64, 64)), jnp.int32)
  gamma_t = jnp.full((64,), -1.6, jnp.float32)
  gamma_s = jnp.full((64,), -2.4, jnp.float32)

  def rates(mode, key):
    if mode == "full":
      summary = dcd.noise_summary(jax.random.normal(key, (*x0.shape, V), jnp.float32), x0)
    else:
      summary = dcd.sample_noise_summary(key, x0, V)
    xt, xs = dcd.trajectory_tokens(x0, summary, gamma_t, gamma_s)
    return jnp.stack([jnp.mean(xt == x0), jnp.mean(xs == x0), jnp.mean(xt == xs)])

  keys = jax.random.split(jax.random.key(5), 16)
  full = np.asarray(jax.jit(jax.vmap(lambda k: rates("full", k)))(keys)).mean(0)
  fast = np.asarray(jax.jit(jax.vmap(lambda k: rates("max", k)))(keys)).mean(0)
  n = 16 * x0.size
  p_t, p_s = (((V - 1) * dcd.alpha_from_gamma_np(V, [g]) + 1) / V for g in (-1.6, -2.4))
  se = np.sqrt(0.25 / n)
  np.testing.assert_array_less(np.abs(fast[:2] - [p_t[0], p_s[0]]), 5 * se)
  np.testing.assert_array_less(np.abs(full[:2] - [p_t[0], p_s[0]]), 5 * se)
  np.testing.assert_array_less(np.abs(full - fast), 5 * np.sqrt(2) * se)


# ---------------------------------------------------------------------- the loss


def _torch_denoiser(fn, params):
  """The tiny JAX DiT ``fn(params, x, sigma)`` as a torch denoiser for the reference."""

  def denoiser(tokens, sigma):
    logits = fn(params, jnp.asarray(tokens.numpy(), jnp.int32),
                jnp.asarray(sigma.numpy(), jnp.float32))
    return torch.tensor(np.asarray(logits, np.float64))
  return denoiser


def test_microstep_loss_matches_reference():
  """One micro-step ("full" noise, KL(student ‖ teacher), round 2 of T = 64) against the
  reference run on the same tiny random DiTs and the same noise; the "max" noise and
  "kl-fwd" are shown on their pure functions (above and below)."""
  mode, loss_type, round_ = "full", "kl-bwd", 2
  cfg = tiny_run.tiny_model_config("duo")
  student = tiny_run.random_params(cfg, 1)
  teacher = tiny_run.random_params(cfg, 2)
  process = DUOProcess(vocab_size=V)
  obj = _objective(noise=mode, loss_type=loss_type, T=64, update_teacher_every=20)
  ctx = losses.StepContext(graphdef=models.graphdef(cfg), process=process, mesh=None,
                           dropout=False)
  b = 4
  x0 = jnp.asarray(np.random.default_rng(6).integers(0, V, size=(b, L)), jnp.int32)
  aux = obj.init_aux(teacher)
  aux["round"] = jnp.int32(round_)
  key = jax.random.key(7)
  step = jax.jit(lambda p, a, x, k: obj.microstep(ctx, p, None, a, x, k))
  loss, grads, new_aux, metrics = step(student, aux, x0, key)
  chex.assert_trees_all_equal(new_aux, aux)
  chex.assert_trees_all_equal_structs(grads, student)

  # The microstep's documented randomness, replayed for the reference.
  k_t, k_eps, _, _ = jax.random.split(key, 4)
  t0 = process.sample_t(k_t, b)
  if mode == "full":
    eps = np.asarray(jax.random.normal(k_eps, (b, L, V), jnp.float32))
  else:
    eps = _embed_summary(dcd.sample_noise_summary(k_eps, x0, V), x0, seed=8)
  dt = 2.0 ** round_ / 64
  gdef = models.graphdef(cfg)
  apply = jax.jit(lambda p, x, s: models.merge(gdef, p)(x, s))  # one compile, both nets
  ref = torch_dcd.dcd_loss(_torch_denoiser(apply, student), _torch_denoiser(apply, teacher),
                           torch.tensor(np.asarray(x0)).long(), torch.tensor(np.asarray(t0)),
                           torch.tensor(eps), dt, vocab_size=V, loss_type=loss_type)
  xt, xs, sigma_t, sigma_s = jax.jit(obj.draw)(k_eps, x0, t0, jnp.float32(dt))
  chex.assert_trees_all_equal((np.asarray(xt), np.asarray(xs)),
                              (ref["xt"].numpy().astype(np.int32),
                               ref["xs"].numpy().astype(np.int32)))
  # σ: float32 interpolation vs the float64 direct integral (see the table test).
  chex.assert_trees_all_close(
      (np.asarray(sigma_t, np.float64), np.asarray(sigma_s, np.float64)),
      (ref["sigma_t"].numpy(), ref["sigma_s"].numpy()), rtol=1e-5, atol=0)
  # Loss: float32 network and KL vs float64 KL of the same float32 logits (at σ a few 1e-7
  # apart): ~1e-6 observed.
  chex.assert_trees_all_close(float(loss), float(ref["loss"]), rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(float(metrics["loss"]), float(loss), rtol=0, atol=0)
  assert float(loss) > 1e-3   # student ≠ teacher: a non-trivial KL

  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0


@pytest.mark.parametrize("loss_type", dcd.LOSS_TYPES)
def test_kl_matches_reference(loss_type):
  """Both KL directions on fixed student / teacher logits (float32 vs float64 KL)."""
  rng = np.random.default_rng(9)
  s_logits, t_logits = (3 * rng.standard_normal((2, 4, V)) for _ in range(2))
  got = dcd.kl_per_token(jax.nn.log_softmax(jnp.asarray(s_logits, jnp.float32)),
                         jax.nn.log_softmax(jnp.asarray(t_logits, jnp.float32)), loss_type)
  x0 = torch.zeros((2, 4), dtype=torch.long)
  ref = torch_dcd.dcd_loss(lambda x, s: torch.tensor(s_logits), lambda x, s: torch.tensor(t_logits),
                           x0, torch.tensor([0.3, 0.6]), torch.zeros((2, 4, V)), 0.1,
                           vocab_size=V, loss_type=loss_type)
  chex.assert_trees_all_close(np.asarray(got, np.float64), ref["per_token"].numpy(),
                              rtol=1e-5, atol=1e-6)


def test_prompts_are_refused():
  from tokendrift_jax.train import prompt as prompt_lib  # pylint: disable=import-outside-toplevel
  cfg = tiny_run.tiny_model_config("duo")
  ctx = losses.StepContext(graphdef=models.graphdef(cfg), process=DUOProcess(vocab_size=V),
                           mesh=None, prompt=prompt_lib.PromptSpec(mode="prefix", length=2))
  obj = _objective()
  params = tiny_run.random_params(cfg, 1)
  with pytest.raises(ValueError, match="prompt mode 'prefix'"):
    obj.microstep(ctx, params, None, obj.init_aux(params), jnp.zeros((2, L), jnp.int32),
                  jax.random.key(0))


# ---------------------------------------------------------------------- the schedule


def test_schedule_step_by_step():
  """dt and the teacher's weights at every step against the replayed Lightning schedule
  (K = 3, T = 8, 11 steps): the teacher changes exactly at steps 3, 6, 9."""
  obj = _objective(steps=11, T=8, update_teacher_every=3)
  params_at = lambda g: {"w": jnp.full((2, 3), float(g)), "b": jnp.full((3,), -float(g))}
  aux = obj.init_aux(params_at(0))
  end_step = jax.jit(obj.end_step)
  ref = torch_dcd.replay_schedule(11, 3, 8)
  for g, (ref_dt, teacher_from) in enumerate(ref):
    # What step g's micro-steps see.
    assert float(obj.dt(aux["round"])) == ref_dt, g
    chex.assert_trees_all_equal(aux["teacher"], params_at(teacher_from))
    aux, metrics = end_step(aux, params_at(g + 1), jnp.int32(g + 1))
    assert int(metrics["dcd_round"]) == g // 3 and float(metrics["dcd_dt"]) == ref_dt, g
    chex.assert_type(aux["round"], jnp.int32)


# ---------------------------------------------------------------------- contract bookkeeping


@pytest.mark.parametrize("field,value,match", [
    ("T", 0, "config.dcd.T"), ("update_teacher_every", 2.5, "config.dcd.update_teacher_every"),
    ("gamma_min", -0.5, "config.dcd.gamma_min"), ("gamma_max", float("nan"), "config.dcd.gamma_max"),
    ("loss_type", "mse", "config.dcd.loss_type"), ("noise", "gumbel", "config.dcd.noise"),
    ("table_points", 1, "config.dcd.table_points"),
    ("teacher_dropout", "no", "config.dcd.teacher_dropout")])
def test_config_validation(field, value, match):
  with pytest.raises(ValueError, match=match):
    _objective(**{field: value})


def test_config_refuses_dt_above_one_and_other_processes():
  c = _config(steps=31, T=4, update_teacher_every=10)   # last step 30: round 3, dt = 8/4 > 1
  with pytest.raises(ValueError, match="config.dcd.update_teacher_every"):
    objectives.from_config(c, None, DUOProcess(vocab_size=V))
  c.train.steps = 30   # round 2, dt = 1
  objectives.from_config(c, None, DUOProcess(vocab_size=V))
  from tokendrift_jax.diffusion.mdlm import MDLMProcess  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="config.diffusion.process"):
    objectives.from_config(_config(), None, MDLMProcess(vocab_size=V))


def test_contract_bookkeeping():
  assert objectives.get("dcd") is dcd.DCD and dcd.OBJECTIVE is dcd.DCD
  obj = _objective()
  assert obj.needs_init_checkpoint and obj.section == "dcd" and obj.name == "dcd"
  assert obj.resume_fields()["dcd.update_teacher_every"] == 10_000
  assert obj.resume_fields()["dcd.T"] == 512
  cfg = tiny_run.tiny_model_config("duo")
  fm = models.family_of(cfg).flops(cfg)
  terms, recompute = obj.extra_flops(fm, cfg, length=L, micro_batch=4, n_micro=3,
                                     remat_policy="nothing_saveable")
  assert terms == {"teacher_fwd": 12 * fm.forward(L, output_layer=True)} and recompute == 0
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
  params = models.abstract_params(cfg)
  aux = jax.eval_shape(obj.init_aux, params)
  marker = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  shard = obj.aux_shardings(aux, mesh, jax.tree.map(lambda _: marker, params))
  assert all(s is marker for s in jax.tree.leaves(shard["teacher"]))
  assert shard["round"].spec == jax.sharding.PartitionSpec()


def test_matched_budget_config():
  """configs/duo_dcd.py: its step count is the TokenDrift run's model FLOPs (perf/flops.py,
  the objectives' own passes included) over one DCD step's; the public recipe's values."""
  # pylint: disable=import-outside-toplevel
  from configs import duo_dcd, duo_dcd_public, duo_drift
  from tokendrift_jax.perf import flops
  pub = duo_dcd_public.get_config()
  assert (pub.dcd.T, pub.dcd.update_teacher_every, pub.train.steps, pub.batch.global_batch,
          pub.optim.lr, pub.ema.decay, pub.objective) == (512, 10_000, 50_000, 128, 6e-5,
                                                          0.999, "dcd")
  assert pub.sample_eval.noise_removal == "greedy"

  def step_model_flops(c):
    mcfg = models.model_config(c.model)
    process = DUOProcess(vocab_size=c.model.vocab_size)
    obj = objectives.from_config(c, mcfg, process)
    return flops.step_flops(mcfg, objective=obj, length=c.model.length,
                            micro_batch=c.batch.micro_batch,
                            n_micro=c.batch.global_batch // c.batch.micro_batch).model

  drift, ours = duo_drift.get_config(), duo_dcd.get_config()
  drift_total = drift.train.steps * step_model_flops(drift)
  assert ours.train.steps == drift_total // step_model_flops(ours)
  assert ours.init_checkpoint == drift.init_checkpoint and ours.data == drift.data
  assert ours.model == drift.model


@pytest.mark.parametrize("mode,pad_id,match", [("data", -1, "config.prompt.mode"),
                                               ("none", 3, "config.prompt.pad_id=3")])
def test_prompts_and_padding_are_refused_when_the_run_is_built(mode, pad_id, match):
  c = _config()
  c.prompt = ml_collections.ConfigDict(dict(mode=mode, length=0, pad_id=pad_id))
  with pytest.raises(ValueError, match=match):
    objectives.from_config(c, None, DUOProcess(vocab_size=V))
