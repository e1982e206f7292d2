"""The accumulated train step against a hand-written float64 NumPy reference.

Checks what a device-count comparison cannot: the micro-batch split (rows m·(G/b) + j),
the mean of the micro-batch gradients, global-norm clipping, AdamW (optax.adamw's
decoupled weight decay), the EMA of models/ema.py with its (1 + n) / (10 + n) warm-up, and
the per-step keys fold_in(fold_in(rng, step), j) that make resuming exact.
"""

from __future__ import annotations

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tokendrift_jax import models
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.objectives.continuation import Continuation
from tokendrift_jax.train import losses
from tokendrift_jax.train import optim
from tokendrift_jax.train import step as step_lib

LR, B1, B2, EPS, WD, CLIP, DECAY = 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.05, 0.9999


def _micro_grad(ctx):
  """jax.grad of the backbone's loss on one micro-batch, jitted: run op by op, the four
  gradients of the test cost ~15 s of per-primitive dispatch; one compile serves them all
  (the same computation: the accumulation, clipping and AdamW stay in NumPy)."""
  model = lambda p: models.merge(ctx.graphdef, p)
  return jax.jit(jax.grad(
      lambda p, x0, key: ctx.process.loss(lambda x, s: model(p)(x, s), x0, key)[0]))


def _reference_grads(ctx, params, batch, rng, step, micro, grad_fn):
  """Mean over micro-batches of jax.grad of the backbone's loss, rows j::n, float64."""
  n = batch.shape[0] // micro
  base = jax.random.fold_in(rng, step)
  total = None
  for j in range(n):
    x0 = batch[j::n]                    # rows {m·n + j}
    k_loss, _ = jax.random.split(jax.random.fold_in(base, j))
    g = grad_fn(params, x0, k_loss)
    g = jax.tree.map(lambda a: np.asarray(a, np.float64), g)
    total = g if total is None else jax.tree.map(np.add, total, g)
  return jax.tree.map(lambda a: a / n, total)


@pytest.mark.parametrize("micro", [4, 8])   # 2 micro-batches (the scan), 1 (no accumulator)
def test_two_steps_match_numpy_adamw_clip_and_ema(tiny_model_config, random_params, micro):
  cfg = tiny_model_config("mdlm", dropout=0.0)
  params0 = random_params(cfg, seed=21)
  process = make_process("mdlm", cfg.vocab_size)
  batch = np.random.default_rng(2).integers(0, cfg.vocab_size - 1, (8, cfg.length)).astype(
      np.int32)
  ocfg = ml_collections.ConfigDict(dict(lr=LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD,
                                        warmup_steps=0, grad_clip=CLIP, schedule="constant"))
  optimizer = optim.make_optimizer(ocfg, total_steps=10)
  ctx = losses.StepContext(graphdef=models.graphdef(cfg), process=process, mesh=None,
                           dropout=False)
  scfg = step_lib.StepConfig(micro_batch=micro, ema_decay=DECAY,
                             lr_schedule=optim.learning_rate_schedule(ocfg, 10))
  step_fn = jax.jit(step_lib.make_train_step(ctx, Continuation(), optimizer, scfg))
  state = step_lib.init_state(params0, optimizer, seed=5, ema=True)
  rng = state.rng
  grad_fn = _micro_grad(ctx)

  # Reference state in float64.
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params0)
  m = jax.tree.map(np.zeros_like, p)
  v = jax.tree.map(np.zeros_like, p)
  ema = jax.tree.map(np.copy, p)
  clipped_any = False
  for s in range(2):
    state, metrics = step_fn(state, jnp.asarray(batch), None)
    g = _reference_grads(ctx, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p),
                         jnp.asarray(batch), rng, s, micro=micro, grad_fn=grad_fn)
    norm = np.sqrt(sum(np.sum(a * a) for a in jax.tree.leaves(g)))
    chex.assert_trees_all_close(float(metrics["grad_norm"]), norm, rtol=1e-5, atol=0)
    if norm > CLIP:
      clipped_any = True
      g = jax.tree.map(lambda a: a * (CLIP / norm), g)
    t = s + 1
    m = jax.tree.map(lambda mi, gi: B1 * mi + (1 - B1) * gi, m, g)
    v = jax.tree.map(lambda vi, gi: B2 * vi + (1 - B2) * gi * gi, v, g)
    p = jax.tree.map(
        lambda pi, mi, vi: pi - LR * ((mi / (1 - B1 ** t)) / (np.sqrt(vi / (1 - B2 ** t)) + EPS)
                                      + WD * pi), p, m, v)
    d = min(DECAY, (1 + t) / (10 + t))
    ema = jax.tree.map(lambda e, pi: e - (1 - d) * (e - pi), ema, p)
  assert clipped_any, "the clip threshold must be active for the test to check clipping"
  assert int(state.step) == 2
  # Each step moves a parameter by ~lr = 1e-3 (Adam's m/sqrt(v) is O(1)); an error in the
  # logic (rows, clip, bias correction, decay, EMA warm-up) shows at that order on most
  # entries (a wrong mean shows in grad_norm above: Adam itself is scale-invariant). What
  # remains is float32 arithmetic: the jitted and the reference gradients differ by
  # rounding, which Adam's normalisation amplifies on near-zero gradient entries (observed
  # up to ~2e-6 on a few of them); the bound 1e-5 is 1% of a step.
  chex.assert_trees_all_close(state.params, p, rtol=0, atol=1e-5)
  chex.assert_trees_all_close(state.ema_params, ema, rtol=0, atol=1e-5)
  # A lower bound (the two steps must move the parameters): chex has no "differs" assert.
  moved = max(float(np.max(np.abs(a - np.asarray(b, np.float64))))
              for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params0)))
  assert moved > 1e-4


# ------------------------------------------------------------------ bfloat16 first moment


def _optim_config(**over):
  c = ml_collections.ConfigDict(dict(lr=LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD,
                                     warmup_steps=0, grad_clip=CLIP, schedule="constant",
                                     mu_dtype="float32"))
  c.update(over)
  return c


def _to_bfloat16(x):
  """float32 values rounded to the nearest bfloat16 (ties to even), on the bit patterns;
  returned as float64. Also: whether each value lies within 16 float32 ulps of a rounding
  tie, where a float32 result that differs from the float64 reference by a few ulps may
  round the other way."""
  bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
  low = bits & 0xFFFF
  rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
  near_tie = np.abs(low.astype(np.int64) - 0x8000) <= 16
  return rounded.astype(np.uint32).view(np.float32).astype(np.float64), near_tie


def test_bfloat16_first_moment_matches_numpy_adamw():
  """optim.mu_dtype="bfloat16" against float64 AdamW whose stored first moment is rounded
  to bfloat16, step by step from the optimizer's own state (3 steps, clipping active):
  each step forms m_t = b1·m_{t-1} + (1 - b1)·g_t (exact b1 = 0.9) and the update from
  the unrounded m_t, and stores m_t rounded to bfloat16; nu stays float32."""
  rng = np.random.default_rng(31)
  params = {"w": rng.standard_normal((7, 33)).astype(np.float32),
            "b": rng.standard_normal((33,)).astype(np.float32)}
  grads = [jax.tree.map(lambda x: (scale * rng.standard_normal(x.shape)).astype(np.float32),
                        params) for scale in (0.02, 0.001, 0.03)]
  opt = optim.make_optimizer(_optim_config(mu_dtype="bfloat16"), total_steps=10)
  opt32 = optim.make_optimizer(_optim_config(), total_steps=10)
  update, update32 = jax.jit(opt.update), jax.jit(opt32.update)
  state, p = opt.init(params), params
  chex.assert_type(jax.tree.leaves(state[1][0].mu), jnp.bfloat16)
  chex.assert_type(jax.tree.leaves(state[1][0].nu), jnp.float32)
  f64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)
  clipped, near_ties = [], 0
  for s, g in enumerate(grads):
    t = s + 1
    mu_prev, nu_prev, p_prev = f64(state[1][0].mu), f64(state[1][0].nu), f64(p)
    upd, state = update(g, state, p)
    if s == 0:
      # m_0 = 0: the first update is float32 AdamW's, bit for bit.
      chex.assert_trees_all_equal(upd, update32(g, opt32.init(params), p)[0])
    g64 = f64(g)
    norm = np.sqrt(sum(np.sum(a * a) for a in jax.tree.leaves(g64)))
    clipped.append(norm > CLIP)
    if norm > CLIP:
      g64 = jax.tree.map(lambda a: a * (CLIP / norm), g64)
    m = jax.tree.map(lambda mi, gi: B1 * mi + (1 - B1) * gi, mu_prev, g64)
    v = jax.tree.map(lambda vi, gi: B2 * vi + (1 - B2) * gi * gi, nu_prev, g64)
    # optax forms the bias corrections 1 - b^t from float32 b: 1 - float32(0.999) is 1.3e-5
    # relative away from 1e-3, which shows at the bound below; the reference takes the
    # float32-rounded constants there (elsewhere their rounding is below 1e-7).
    bc1, bc2 = 1 - float(np.float32(B1)) ** t, 1 - float(np.float32(B2)) ** t
    want = jax.tree.map(
        lambda mi, vi, pi: -LR * ((mi / bc1) / (np.sqrt(vi / bc2) + EPS) + WD * pi),
        m, v, p_prev)
    # float32 against float64: optax's 1 - b2^t is computed in float32, where one ulp of
    # b2^t (6e-8) is 3e-5 of 1 - b2^2 = 0.002, 1.5e-5 after the square root; the other
    # ~6 roundings add <= 4e-7; the atol covers cancellation between the Adam and
    # weight-decay terms. An update formed from the rounded moment would be off by up to
    # 2^-9 = 2e-3 relative from step 2 on, optax's bfloat16 b1 by ~1.5e-3.
    chex.assert_trees_all_close(upd, want, rtol=2e-5, atol=LR * 1e-6)
    chex.assert_trees_all_close(state[1][0].nu, v, rtol=1e-6, atol=0)
    for name in m:
      stored = np.asarray(state[1][0].mu[name], np.float64)
      want_mu, near = _to_bfloat16(m[name])
      # Exactly the bfloat16 rounding of m_t, except next to a rounding tie, where the
      # float32 m_t may round to the neighbouring value (one bfloat16 ulp, 2^-7 relative).
      chex.assert_trees_all_equal(stored[~near], want_mu[~near])
      chex.assert_trees_all_close(stored[near], want_mu[near], rtol=2.0 ** -7, atol=0)
      near_ties += int(near.sum())
    p = optax.apply_updates(p, upd)
  assert clipped == [True, False, True], clipped   # both branches of the clip are seen
  print(f"bf16 moment entries next to a rounding tie: {near_ties} of {3 * 8 * 33}")


def test_float32_first_moment_is_the_previous_optimizer():
  """mu_dtype="float32" (and a config without the field) is optax.adamw without mu_dtype,
  bit for bit: runs written before the option are unchanged."""
  rng = np.random.default_rng(32)
  params = {"w": rng.standard_normal((5, 9)).astype(np.float32)}
  old = optax.chain(optax.clip_by_global_norm(CLIP),
                    optax.adamw(optim.learning_rate_schedule(_optim_config(), 10), b1=B1,
                                b2=B2, eps=EPS, weight_decay=WD))
  legacy = _optim_config()
  del legacy["mu_dtype"]
  for cfg in (_optim_config(), legacy):
    opt = optim.make_optimizer(cfg, total_steps=10)
    s_new, s_old, p = opt.init(params), old.init(params), params
    for _ in range(2):
      g = jax.tree.map(lambda x: 0.1 * rng.standard_normal(x.shape).astype(np.float32), p)
      u_new, s_new = opt.update(g, s_new, p)
      u_old, s_old = old.update(g, s_old, p)
      chex.assert_trees_all_equal((u_new, s_new), (u_old, s_old))
      p = optax.apply_updates(p, u_new)
  with pytest.raises(ValueError, match="optim.mu_dtype must be one of"):
    optim.make_optimizer(_optim_config(mu_dtype="float16"), total_steps=10)


def test_bfloat16_first_moment_trajectory(tiny_model_config, random_params):
  """The measured effect on a tiny DiT: 8 steps of MDLM continuation from the same
  parameters and batches with a float32 first moment, ours in bfloat16, and optax's own
  mu_dtype=bfloat16 (whose b1·m product runs in bfloat16 with b1 = 0.8984375); printed
  per step as max |params - float32 run's| / lr and the losses."""
  cfg = tiny_model_config("mdlm", dropout=0.0)
  process = make_process("mdlm", cfg.vocab_size)
  gdef = models.graphdef(cfg)
  batches = np.random.default_rng(3).integers(0, cfg.vocab_size - 1, (8, 8, cfg.length))

  # The optimizers run on the parameters raveled into one vector: AdamW is elementwise
  # and the clip's global norm is the vector's norm, so the arithmetic is the same and
  # each optimizer compiles a one-leaf program.
  flat0, unravel = jax.flatten_util.ravel_pytree(random_params(cfg, seed=23))

  @jax.jit
  def loss_and_grad(flat, x0, key):
    return jax.value_and_grad(lambda f: process.loss(
        lambda x, s: models.merge(gdef, unravel(f))(x, s), x0, key)[0])(flat)

  ocfg = _optim_config(weight_decay=0.0)
  optax_own = optax.chain(optax.clip_by_global_norm(CLIP),
                          optax.adamw(LR, b1=B1, b2=B2, eps=EPS, weight_decay=0.0,
                                      mu_dtype=jnp.bfloat16))
  optimizers = {"float32": optim.make_optimizer(ocfg, total_steps=10),
                "bfloat16": optim.make_optimizer(_optim_config(weight_decay=0.0,
                                                               mu_dtype="bfloat16"), 10),
                "optax mu_dtype": optax_own}
  runs = {}
  for name, opt in optimizers.items():
    update = jax.jit(opt.update)
    p = jnp.asarray(flat0)
    state, losses_, params_ = opt.init(p), [], []
    for s, x0 in enumerate(batches):
      loss, g = loss_and_grad(p, jnp.asarray(x0, jnp.int32), jax.random.PRNGKey(s))
      upd, state = update(g, state, p)
      p = optax.apply_updates(p, upd)
      losses_.append(float(loss))
      params_.append(p)
    runs[name] = (np.asarray(losses_), params_)

  def dist(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
  l32, p32 = runs["float32"]
  dp = {name: [dist(a, b) / LR for a, b in zip(runs[name][1], p32)]
        for name in ("bfloat16", "optax mu_dtype")}
  for s in range(len(p32)):
    print(f"step {s + 1}: loss f32 {l32[s]:.6f} bf16 {runs['bfloat16'][0][s]:.6f} "
          f"optax {runs['optax mu_dtype'][0][s]:.6f}; max |params diff| / lr: bf16 "
          f"{dp['bfloat16'][s]:.2e} optax {dp['optax mu_dtype'][s]:.2e}")
  # Step 1 starts from m_0 = 0 and is the float32 program plus a cast of the moment.
  assert dp["bfloat16"][0] == 0.0 and runs["bfloat16"][0][1] == l32[1]
  assert dp["bfloat16"][-1] > 0   # a lower bound: the option changes something
  # Unbiased rounding (<= 2^-9 per step) stays closer to float32 than optax's moment,
  # which loses 1.5% of its average to b1's rounding: an inequality, not a tolerance.
  assert dp["bfloat16"][-1] < dp["optax mu_dtype"][-1]


def test_all_finite_sees_every_kind_of_non_finite_entry():
  """One inf, -inf or NaN anywhere in any leaf (float32, bfloat16,
  a Python float) makes it False; finite trees (with -0.0 and huge values) are True."""
  ok = {"a": jnp.asarray([[1.0, -0.0], [3e38, -3e38]]), "b": jnp.ones((5,), jnp.bfloat16),
        "c": 2.0, "i": jnp.arange(3)}
  check = jax.jit(step_lib.all_finite)
  assert bool(check(ok))
  for bad in (np.inf, -np.inf, np.nan):
    for leaf in ("a", "b"):
      tree = dict(ok)
      tree[leaf] = ok[leaf].reshape(-1).at[-1].set(bad).reshape(ok[leaf].shape)
      assert not bool(check(tree)), (leaf, bad)
    assert not bool(check(dict(ok, c=float(bad))))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_all_finite_sees_a_non_finite_entry_in_every_lane(dtype):
  """A NaN or inf in any lane of a vectorised reduction, in a leaf of odd size beside an
  empty one, is seen; -0.0, the largest finite values and subnormals are not (NumPy's
  float64 isfinite is the reference). Kept for any cheaper reformulation of the check:
  ``isfinite(max |x|)`` misses a NaN in lane 0 on XLA:CPU 0.10.2 (its vectorised max
  does not propagate NaN there), so it cannot replace the elementwise form."""
  rng = np.random.default_rng(0)
  check = jax.jit(step_lib.all_finite)
  big = float(jnp.finfo(dtype).max)
  base = rng.standard_normal(4099).astype(np.float32)
  base[:4] = [-0.0, big, -big, 1e-40]
  tree = {"x": jnp.asarray(base, dtype).reshape(1, 4099), "e": jnp.zeros((0, 3), dtype)}
  assert bool(check(tree)) == bool(np.all(np.isfinite(np.asarray(tree["x"], np.float64))))
  assert bool(check(tree))
  positions = sorted(set(range(0, 40)) | {63, 64, 127, 128, 2048, 4094, 4095, 4096, 4098}
                     | set(rng.integers(0, 4099, 20).tolist()))
  for bad in (np.nan, np.inf, -np.inf):
    for p in positions:
      x = base.copy()
      x[p] = bad
      got = bool(check({"x": jnp.asarray(x, dtype).reshape(1, 4099), "e": tree["e"]}))
      assert got is False, (bad, p)


def test_update_finite_is_the_whole_new_state_checked(tiny_model_config, random_params):
  """The step's ``finite`` flag (update_finite: new params, aux, metrics) equals
  all_finite over the whole new state (params, both Adam moments, EMA, aux) on steps from
  a finite state: an ordinary step (True), the fault tests' lr = 1e6 whose second step
  turns NaN, and parameters scaled by 1e30 (finite, but the forward pass overflows); the
  last two False. Each flag is also checked against NumPy's float64 isfinite."""
  cfg = tiny_model_config("mdlm", dropout=0.0)
  params0 = random_params(cfg, seed=3)
  process = make_process("mdlm", cfg.vocab_size)
  batch = jnp.asarray(np.random.default_rng(4).integers(0, cfg.vocab_size - 1,
                                                        (4, cfg.length)), jnp.int32)
  ctx = losses.StepContext(graphdef=models.graphdef(cfg), process=process, mesh=None,
                           dropout=False)

  def numpy_finite(tree):
    return all(np.all(np.isfinite(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))

  seen = []
  for lr, scale in ((LR, 1.0), (1e6, 1.0), (LR, 1e30)):
    ocfg = ml_collections.ConfigDict(dict(lr=lr, b1=B1, b2=B2, eps=EPS, weight_decay=WD,
                                          warmup_steps=0, grad_clip=CLIP, schedule="constant"))
    optimizer = optim.make_optimizer(ocfg, total_steps=10)
    scfg = step_lib.StepConfig(micro_batch=4, ema_decay=DECAY,
                               lr_schedule=optim.learning_rate_schedule(ocfg, 10))
    step_fn = jax.jit(step_lib.make_train_step(ctx, Continuation(), optimizer, scfg))
    state = step_lib.init_state(jax.tree.map(lambda a: a * scale, params0), optimizer,
                                seed=5, ema=True)
    for _ in range(2):
      assert numpy_finite(state)   # every step below starts from a finite state
      new, metrics = step_fn(state, batch, None)
      whole = numpy_finite((new.params, new.opt_state, new.ema_params, new.aux,
                            {k: v for k, v in metrics.items() if k != "finite"}))
      assert bool(metrics["finite"]) == whole, (lr, scale)
      seen.append(whole)
      if not whole:
        break
      state = new
  assert seen == [True, True, True, False, False], seen
