"""Samplers: Gumbel draws, single steps and whole trajectories vs float64 NumPy references,
oracle recovery at every NFE, exact forward counts, cache equivalence, device-count
independence.

The NumPy reference samplers re-derive every step from the formulas (MDLM: q(x_s) ∝
p_x0 (t − s) with mass s on the mask; DUO: Bayes-rule uniform-state posterior) and share
only the uniforms with the code under test (``step_uniforms``, the documented noise source).
Forward counts are checked against a host-side counter that the denoiser bumps through
``io_callback`` every time it actually runs.

The pieces (gumbel_argmax, mdlm.ddpm_step, duo.ancestral_step) run
under ``chex.variants(with_jit=True, without_jit=True)`` in ``SamplerStepVariantsTest``;
the whole samplers are compiled programs (make_sampler jits them) and
``test_same_seed_same_samples_on_1_and_8_devices`` is their sharded variant.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from tokendrift_jax import sharding
from tokendrift_jax.diffusion import DUOProcess, MDLMProcess, make_sampler, sample
from tokendrift_jax.diffusion import duo
from tokendrift_jax.diffusion import mdlm
from tokendrift_jax.diffusion import sampling as smp

V, B, L = 13, 8, 8
MASK = V - 1
T_MIN = 1e-5
NFES = (1, 2, 4, 8, 16)
ORACLE_SCALE = 1e4  # exp(−1e4) == 0 in float32 and float64: the oracle is a point mass

_calls = [0]


def _bump():
  _calls[0] += 1
  return np.zeros((), np.float32)


def _logits(params, x, sigma):
  """Deterministic test denoiser: token table + neighbour mixing + per-position bias + σ."""
  a = params["table"][x]
  return (a + params["mix"] * jnp.roll(a, 1, axis=1) + params["bias"]
          + params["sig"] * sigma[:, None, None]).astype(jnp.float32)


def _counting_logits(params, x, sigma):
  tick = io_callback(_bump, jax.ShapeDtypeStruct((), jnp.float32), ordered=False)
  return _logits(params, x, sigma) + tick


def np_logits(params, x, sigma):
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  a = p["table"][x]
  return a + p["mix"] * np.roll(a, 1, axis=1) + p["bias"] + p["sig"] * sigma[:, None, None]


def _params(seed, *, sig, oracle_x0=None):
  rng = np.random.default_rng(seed)
  bias = rng.normal(size=(B, L, V))
  if oracle_x0 is not None:
    bias = bias + ORACLE_SCALE * np.eye(V)[oracle_x0]
  return {"table": jnp.asarray(rng.normal(size=(V, V)) * 2, jnp.float32),
          "bias": jnp.asarray(bias, jnp.float32),
          "mix": jnp.asarray(0.5, jnp.float32), "sig": jnp.asarray(sig, jnp.float32)}


def np_log_softmax(z):
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_gumbel_argmax(q, u):
  return np.argmax(q / (1e-10 - np.log(u + 1e-10)), axis=-1)


def _draws(key, i):
  """The documented draws: prior tokens from split(key)[0] and the step-i uniforms."""
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  k_prior, k_steps = jax.random.split(key)
  prior = jax.random.randint(k_prior, (B, L), 0, V, dtype=jnp.int32)
  return prior, smp.step_uniforms(k_steps, i, (B, L, V), dtype)


_draws_jit = jax.jit(_draws)


def _duo_prior(key, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    return np.asarray(_draws_jit(key, jnp.asarray(0, jnp.int32))[0])


def _uniforms(key, i, dtype):
  """The uniforms the sampler uses at step i, in its precision, as float64 NumPy."""
  with jax.enable_x64(dtype == jnp.float64):
    return np.asarray(_draws_jit(key, jnp.asarray(i, jnp.int32))[1], np.float64)


def np_mdlm_trajectory(params, key, steps, *, cache, noise_removal="greedy",
                       noise_dtype=jnp.float32, temperature=1.0):
  """MDLM ddpm_cache in float64 NumPy; returns (tokens, forwards incl. noise removal).
  ``temperature`` τ: the masked positions' p_x0 is softmax(z / τ) over the non-mask ids."""
  x = np.full((B, L), MASK)
  dt = (1 - T_MIN) / steps
  forwards, p = 0, None

  def p_x0(x, tau=temperature):
    z = np_logits(params, x, np.zeros(B)) / tau
    z[..., MASK] = -np.inf
    return np.where((x == MASK)[..., None], np.exp(np_log_softmax(z)), np.eye(V)[x])

  for i in range(steps):
    t = 1 - i * dt
    s = t - dt
    if p is None:
      p, forwards = p_x0(x), forwards + 1
    q = p * (t - s)
    q[..., MASK] = s
    x_new = np.where(x == MASK, np_gumbel_argmax(q, _uniforms(key, i, noise_dtype)), x)
    if not cache or np.any(x_new != x):
      p = None
    x = x_new
  if noise_removal == "none":
    return x, forwards
  return np.argmax(p_x0(x, 1.0), -1), forwards + 1


def np_duo_posterior(x, xt, a_s, a_t):
  a_ts = a_t / a_s
  like = (1 - a_ts) / V + a_ts * np.eye(V)[xt]          # q(z_t = xt | z_s = j)
  joint = like * (a_s * x + (1 - a_s) / V)
  return joint / joint.sum(-1, keepdims=True)


def np_duo_trajectory(params, key, steps, noise_removal, noise_dtype=jnp.float64,
                      temperature=1.0):
  x = _duo_prior(key, noise_dtype)
  dt = (1 - T_MIN) / steps
  alpha = lambda t: 1 - (1 - 1e-3) * t

  def probs(x, t):
    z = np_logits(params, x, np.full(B, -np.log(alpha(t)))) / temperature
    return np.exp(np_log_softmax(z))

  for i in range(steps):
    t = 1 - i * dt
    q = np_duo_posterior(probs(x, t), x, alpha(t - dt), alpha(t))
    x = np_gumbel_argmax(q, _uniforms(key, i, noise_dtype))
  if noise_removal == "ancestral":
    q = np_duo_posterior(probs(x, T_MIN), x, 1.0, alpha(T_MIN))
    x = np_gumbel_argmax(q, _uniforms(key, steps, noise_dtype))
  else:
    x = np.argmax(probs(x, T_MIN), -1)
  return x, steps + 1


# --- compiled samplers, shared across tests (compilation dominates the run time) -------

_SAMPLERS = {}


def _sampler(kind, *, noise_removal=None, cache=True, mesh_devices=None, float64=None,
             temperature=1.0):
  process = MDLMProcess(V) if kind == "mdlm" else DUOProcess(V)
  noise_removal = noise_removal or process.default_noise_removal
  float64 = process.default_float64 if float64 is None else float64
  k = (kind, noise_removal, cache, mesh_devices, float64, temperature)
  if k not in _SAMPLERS:
    mesh = None if mesh_devices is None else sharding.make_mesh(
        devices=jax.devices()[:mesh_devices])
    fn = _counting_logits if mesh is None else _logits
    _SAMPLERS[k] = make_sampler(process, fn, batch=B, length=L, noise_removal=noise_removal,
                                cache=cache, float64=float64, mesh=mesh,
                                **({} if temperature == 1.0 else {"temperature": temperature}))
  return _SAMPLERS[k]


def _run(sampler, params, key, steps):
  _calls[0] = 0
  out = sampler(params, key, steps)
  out.tokens.block_until_ready()
  return out, _calls[0]


# --- pieces ---------------------------------------------------------------------------


class SamplerStepVariantsTest(chex.TestCase):
  """The sampler step functions, traced (jit) and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_gumbel_argmax_matches_formula(self):
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 1, (64, V)) * (rng.random((64, V)) < 0.7)
    u = rng.uniform(0, 1, (64, V))
    with jax.enable_x64(True):
      got = self.variant(smp.gumbel_argmax)(jnp.asarray(q), jnp.asarray(u))
    chex.assert_type(got, jnp.int32)
    chex.assert_trees_all_equal(got, np_gumbel_argmax(q, u))

  @chex.variants(with_jit=True, without_jit=True)
  def test_mdlm_step_vs_numpy(self):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(B, L, V)) * 2
    z[..., MASK] = -np.inf
    p = np.exp(np_log_softmax(z))
    x = np.where(rng.random((B, L)) < 0.6, MASK, rng.integers(0, MASK, (B, L)))
    u = rng.uniform(0, 1, (B, L, V))
    t, s = 0.4, 0.15
    q = p * (t - s)
    q[..., MASK] = s
    ref = np.where(x == MASK, np_gumbel_argmax(q, u), x)
    step = self.variant(mdlm.ddpm_step, static_argnums=5)
    with jax.enable_x64(True):
      got = step(jnp.asarray(p), jnp.asarray(x), t, s, jnp.asarray(u), MASK)
      # Per-example times [B] broadcast the same way.
      got_b = step(jnp.asarray(p), jnp.asarray(x), jnp.full((B,), t), jnp.full((B,), s),
                   jnp.asarray(u), MASK)
    chex.assert_type([got, got_b], jnp.int32)
    chex.assert_trees_all_equal((got, got_b), (ref, ref))
    # Inequalities: the step changed some tokens and left some masked (not vacuous).
    assert np.any(np.asarray(got) != x) and np.any(np.asarray(got) == MASK)

  @chex.variants(with_jit=True, without_jit=True)
  def test_duo_step_vs_numpy(self):
    rng = np.random.default_rng(3)
    p = np.exp(np_log_softmax(rng.normal(size=(B, L, V)) * 2))
    x = rng.integers(0, V, (B, L))
    u = rng.uniform(0, 1, (B, L, V))
    step = self.variant(duo.ancestral_step)
    for a_s, a_t in ((0.6, 0.2), (1.0, 0.9)):
      ref = np_gumbel_argmax(np_duo_posterior(p, x, a_s, a_t), u)
      with jax.enable_x64(True):
        got = step(jnp.asarray(p), jnp.asarray(x), a_s, a_t, jnp.asarray(u))
      chex.assert_trees_all_equal({(a_s, a_t): got}, {(a_s, a_t): ref})


def test_sample_categorical_law():
  """Draws follow p / Σp within 4 standard errors (a statistical bound), jitted only."""
  p = np.asarray([0.05, 0.1, 0.15, 0.3, 0.4])
  n = 20000
  draws = np.asarray(jax.jit(lambda k: smp.sample_categorical(
      k, jnp.broadcast_to(jnp.asarray(p * 3.0, jnp.float32), (n, 5))))(jax.random.key(1)))
  freq = np.bincount(draws, minlength=5) / n
  assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n)), freq


# --- whole samplers -------------------------------------------------------------------


def test_mdlm_trajectory_matches_numpy_and_counts_are_exact():
  params = _params(4, sig=0.0)  # MDLM's backbone ignores σ: the cache is exact
  key = jax.random.key(5)
  cached, uncached = _sampler("mdlm"), _sampler("mdlm", cache=False)
  for steps in (4, 16, 128):
    ref_x, ref_fwd = np_mdlm_trajectory(params, key, steps, cache=True)
    out, calls = _run(cached, params, key, steps)
    chex.assert_type(out.tokens, jnp.int32)
    chex.assert_shape(out.tokens, (B, L))
    chex.assert_trees_all_equal(out.tokens, ref_x)
    assert int(out.nfe_model) == calls == ref_fwd
    assert out.steps == steps and out.nfe == steps and out.final_forward
    assert int(out.loop_forwards) == ref_fwd - 1
    # Same draws without the cache: same samples, one forward per step + noise removal.
    out_nc, calls_nc = _run(uncached, params, key, steps)
    chex.assert_trees_all_equal(out_nc.tokens, out.tokens)
    assert int(out_nc.nfe_model) == calls_nc == steps + 1
  # 128 steps but only B·L = 64 tokens: at most 64 steps can change anything, so the cache
  # must have skipped at least 128 − 65 forwards.
  assert int(out.nfe_model) <= B * L + 2 < steps + 1


def test_mdlm_float64_without_noise_removal_matches_numpy():
  # The DUO repository's MDLM precision (float64 posterior and noise), and
  # noise_removal='none': no final forward (a token stays masked at the last step only
  # with probability ≈ 1e-5 / dt, so the tokens rarely differ from 'greedy').
  params = _params(16, sig=0.0)
  key = jax.random.key(17)
  sampler = _sampler("mdlm", noise_removal="none", float64=True)
  for steps in (2, 8):
    ref_x, ref_fwd = np_mdlm_trajectory(params, key, steps, cache=True, noise_removal="none",
                                        noise_dtype=jnp.float64)
    out, calls = _run(sampler, params, key, steps)
    chex.assert_trees_all_equal(out.tokens, ref_x)
    assert int(out.nfe_model) == calls == ref_fwd <= steps
    assert not out.final_forward and int(out.loop_forwards) == ref_fwd


@pytest.mark.parametrize("noise_removal,float64", [("ancestral", True), ("greedy", False)])
def test_duo_trajectory_matches_numpy(noise_removal, float64):
  # float64 is the reference default (``sampling.use_float64``); the float32 run covers
  # ``use_float64=False``. The NumPy reference is float64 either way and shares the
  # sampler's uniforms (drawn in the sampler's precision).
  params = _params(6, sig=0.3)
  key = jax.random.key(7)
  sampler = _sampler("duo", noise_removal=noise_removal, float64=float64)
  noise_dtype = jnp.float64 if float64 else jnp.float32
  for steps in (1, 4):
    ref_x, ref_fwd = np_duo_trajectory(params, key, steps, noise_removal, noise_dtype)
    out, calls = _run(sampler, params, key, steps)
    chex.assert_trees_all_equal(out.tokens, ref_x)
    assert int(out.nfe_model) == calls == ref_fwd == steps + 1
    assert out.nfe == steps and out.final_forward


@pytest.mark.parametrize("kind,tau", [("mdlm", 0.7), ("duo", 1.6)])
def test_tempered_trajectory_matches_numpy(kind, tau):
  """Temperature τ: every step draws from p_x0^(1/τ) renormalised (the NumPy references
  divide the denoiser's logits by τ before their softmax), the same uniforms; τ = 1 is the
  untempered sampler's program exactly."""
  params = _params(31, sig=0.0 if kind == "mdlm" else 0.3)
  key = jax.random.key(32)
  steps = 4
  if kind == "mdlm":
    ref_x, ref_fwd = np_mdlm_trajectory(params, key, steps, cache=True, temperature=tau)
    untempered, _ = np_mdlm_trajectory(params, key, steps, cache=True)
  else:
    ref_x, ref_fwd = np_duo_trajectory(params, key, steps, "ancestral", temperature=tau)
    untempered, _ = np_duo_trajectory(params, key, steps, "ancestral")
  out, calls = _run(_sampler(kind, temperature=tau), params, key, steps)
  chex.assert_trees_all_equal(out.tokens, ref_x)
  assert int(out.nfe_model) == calls == ref_fwd
  assert np.any(ref_x != untempered)  # the temperature changed the samples (not vacuous)
  one = make_sampler(MDLMProcess(V) if kind == "mdlm" else DUOProcess(V), _logits, batch=B,
                     length=L, temperature=1.0)
  plain = make_sampler(MDLMProcess(V) if kind == "mdlm" else DUOProcess(V), _logits, batch=B,
                       length=L)
  chex.assert_trees_all_equal(one(params, key, steps).tokens, plain(params, key, steps).tokens)
  with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
    make_sampler(MDLMProcess(V), _logits, batch=B, length=L, temperature=0.0)


@pytest.mark.parametrize("kind,noise_removal,float64", [
    ("mdlm", "greedy", False), ("duo", "ancestral", True), ("duo", "greedy", False)])
def test_oracle_denoiser_recovers_x0_at_every_nfe(kind, noise_removal, float64):
  x0 = np.random.default_rng(8).integers(0, MASK if kind == "mdlm" else V, (B, L))
  params = _params(9, sig=0.0 if kind == "mdlm" else 0.3, oracle_x0=x0)
  sampler = _sampler(kind, noise_removal=noise_removal, float64=float64)
  for steps in NFES:
    out, calls = _run(sampler, params, jax.random.key(10 + steps), steps)
    chex.assert_trees_all_equal(out.tokens, x0)
    assert int(out.nfe_model) == calls and out.final_forward
    if kind == "duo":
      assert calls == steps + 1
    else:
      assert 2 <= calls <= steps + 1


@pytest.mark.parametrize("kind", ["mdlm", "duo"])
def test_same_seed_same_samples_on_1_and_8_devices(kind):
  """The sharded variant of the samplers: 1-device and 8-device meshes, same samples."""
  assert len(jax.devices()) == 8, "conftest should provide 8 CPU devices"
  params = _params(11, sig=0.0 if kind == "mdlm" else 0.3)
  process = MDLMProcess(V) if kind == "mdlm" else DUOProcess(V)
  key = jax.random.key(12)
  mesh1 = sharding.make_mesh(devices=jax.devices()[:1])
  # The one-off entry point on a 1-device mesh vs the compiled sampler on 8 devices.
  one = sample(process, lambda x, s: _logits(params, x, s), key, batch=B, length=L, steps=8,
               mesh=mesh1)
  eight, _ = _run(_sampler(kind, mesh_devices=8), params, key, 8)
  assert len(eight.tokens.sharding.device_set) == 8
  assert len(one.tokens.sharding.device_set) == 1
  chex.assert_trees_all_equal((one.tokens, one.nfe_model), (eight.tokens, eight.nfe_model))
  assert one.steps == eight.steps == 8
  again, _ = _run(_sampler(kind, mesh_devices=8), params, key, 8)
  chex.assert_trees_all_equal(again.tokens, eight.tokens)
  other, _ = _run(_sampler(kind, mesh_devices=8), params, jax.random.key(13), 8)
  # An inequality ("another seed gives other samples"), not a comparison with a reference.
  assert np.any(np.asarray(other.tokens) != np.asarray(eight.tokens))


def test_errors():
  params = _params(15, sig=0.0)
  mesh8 = sharding.make_mesh(devices=jax.devices())
  with pytest.raises(ValueError, match="not divisible"):
    make_sampler(DUOProcess(V), _logits, batch=4, length=L, mesh=mesh8)
  with pytest.raises(ValueError, match="noise_removal='ancestral'"):
    make_sampler(MDLMProcess(V), _logits, batch=B, length=L, noise_removal="ancestral")
  with pytest.raises(ValueError, match="cache=False"):
    make_sampler(DUOProcess(V), _logits, batch=B, length=L, cache=False)
  with pytest.raises(ValueError, match="steps must be a positive int"):
    _sampler("duo", noise_removal="ancestral", float64=True)(params, jax.random.key(0), 0)
  with pytest.raises(TypeError, match="must be a diffusion Process"):
    make_sampler(object(), _logits, batch=B, length=L)
  # A float64 loop traced outside enable_x64 would silently run in float32: it refuses.
  with pytest.raises(RuntimeError, match="enable_x64"):
    jax.eval_shape(lambda k: smp.sampling_loop(DUOProcess(V), lambda x, s: _logits(params, x, s),
                                               k, 2, batch=B, length=L), jax.random.key(0))
