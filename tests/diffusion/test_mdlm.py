"""MDLM absorbing-state process, log-linear schedule and NELBO metrics vs float64 NumPy.

The references below are written from the published formulas (MDLM paper / repository
docs), not from the module under test: σ(t) = −log(1 − (1 − ε) t), move chance
1 − e^{−σ}, SUBS = softmax over the non-mask tokens at masked positions and a point mass on
the visible token elsewhere, NELBO = −log p(x0) σ'(t) / (e^{σ} − 1) on masked positions.

The schedule and the process functions (sample_t, corrupt, log_probs, probs,
loss_per_token) run under ``chex.variants(with_jit=True, without_jit=True)`` in
``MDLMVariantsTest``; the composed ``loss`` runs jitted only.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax.diffusion import (MDLMProcess, NLLMeter, make_process, nll_metrics,
                                      reduce_nelbo, schedule)

EPS = 1e-3
V = 13  # mask id 12
B, L = 6, 16


def np_sigma(t):
  return -np.log(1.0 - (1.0 - EPS) * t)


def np_dsigma(t):
  return (1.0 - EPS) / (1.0 - (1.0 - EPS) * t)


def np_subs_logp(logits, xt, mask_id):
  """float64 SUBS log-probs with true −inf."""
  logits = np.asarray(logits, np.float64)
  out = np.full(logits.shape, -np.inf)
  z = logits.copy()
  z[..., mask_id] = -np.inf
  m = z.max(-1, keepdims=True)
  lse = m + np.log(np.exp(z - m).sum(-1, keepdims=True))
  soft = z - lse
  masked = xt == mask_id
  out[masked] = soft[masked]
  b, l = np.nonzero(~masked)
  out[b, l, xt[b, l]] = 0.0
  return out


def np_nelbo(logp, x0, xt, t, mask_id):
  w = np_dsigma(t) / np.expm1(np_sigma(t))
  lp = np.take_along_axis(logp, x0[..., None], -1)[..., 0]
  return np.where(xt == mask_id, -lp * w[:, None], 0.0)


def _nelbo_fn(logits, x0, xt, t):
  """SUBS log-probs then NELBO."""
  p = MDLMProcess(V)
  return p.loss_per_token(p.log_probs(logits, xt), x0, xt, t)


_nelbo = jax.jit(_nelbo_fn)  # jitted once per dtype (one compile instead of one per op)


@jax.jit
def _draws(key, x0):
  """t and xt of ``MDLMProcess.loss`` (documented key split)."""
  p = MDLMProcess(V)
  k_t, k_x = jax.random.split(key)
  t = p.sample_t(k_t, x0.shape[0])
  return t, p.corrupt(k_x, x0, t)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(B, L, V)) * 2.5
  x0 = rng.integers(0, V - 1, (B, L))
  masked = rng.random((B, L)) < 0.5
  xt = np.where(masked, V - 1, x0)
  t = np.concatenate([[1e-3, 1.0], rng.uniform(1e-3, 1.0, B - 2)])
  return logits, x0, xt, t


class MDLMVariantsTest(chex.TestCase):
  """Schedule and MDLM process math, traced (jit) and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_schedule_matches_formulas(self):
    t = np.concatenate([[0.0, 1e-3, 1.0], np.random.default_rng(1).uniform(0, 1, 29)])
    fn = {name: self.variant(getattr(schedule, name), static_argnums=1)
          for name in ("sigma", "dsigma", "alpha", "corruption_prob", "dalpha")}
    with jax.enable_x64(True):
      tj = jnp.asarray(t)
      # float64 path: only rounding of the same formula remains (≤ a few ulp).
      chex.assert_trees_all_close(
          {"sigma": fn["sigma"](tj, EPS), "dsigma": fn["dsigma"](tj, EPS),
           "alpha": fn["alpha"](tj, EPS)},
          {"sigma": np_sigma(t), "dsigma": np_dsigma(t), "alpha": np.exp(-np_sigma(t))},
          rtol=1e-13, atol=0)
      chex.assert_trees_all_close(fn["corruption_prob"](tj, EPS), -np.expm1(-np_sigma(t)),
                                  rtol=1e-13, atol=1e-300)
      chex.assert_trees_all_close(fn["dalpha"](tj, EPS), -(1 - EPS) * np.ones_like(t),
                                  rtol=1e-7, atol=0)
      chex.assert_type([fn[k](tj, EPS) for k in fn], jnp.float64)
    # float32 path: the rounding of (1 − ε) and of the product (~1e-7 relative) is amplified
    # by the condition number of −log1p(−x), x/((1 − x)|log(1 − x)|) ≤ 1/(ε σ(1)) ≈ 145 at
    # t = 1, so 145 · 1.2e-7 ≈ 2e-5 bounds the relative error.
    t32 = jnp.asarray(t, jnp.float32)
    chex.assert_trees_all_close(fn["sigma"](t32, EPS),
                                np_sigma(t.astype(np.float32).astype(np.float64)), rtol=3e-5)
    chex.assert_trees_all_close(fn["corruption_prob"](t32, EPS),
                                (1 - EPS) * t.astype(np.float32), rtol=1e-6)
    chex.assert_type([fn[k](t32, EPS) for k in fn], jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_sample_t_antithetic_strata(self):
    n = 64
    draw = self.variant(functools.partial(schedule.sample_t, sampling_eps=1e-3,
                                          antithetic=True), static_argnums=1)
    t32 = draw(jax.random.key(3), n)
    chex.assert_shape(t32, (n,))
    chex.assert_type(t32, jnp.float32)
    t = np.asarray(t32, np.float64)
    # Inequalities (range and strata), not an elementwise comparison with a reference.
    assert np.all(t >= 1e-3) and np.all(t <= 1.0)
    # Antithetic sampling puts draw k in stratum [k/n, (k+1)/n) of u = (t − eps)/(1 − eps).
    # The 1e-4 slack covers float32 rounding of t (~1e-7) when inverting back to u.
    u = (t - 1e-3) / (1 - 1e-3)
    assert np.all(np.abs(u * n - (np.arange(n) + 0.5)) <= 0.5 + 1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_subs_log_probs_vs_numpy(self):
    logits, _, xt, _ = _inputs()
    ref = np_subs_logp(logits, xt, V - 1)
    p = MDLMProcess(V)
    log_probs = self.variant(p.log_probs)
    with jax.enable_x64(True):
      got64 = log_probs(jnp.asarray(logits), jnp.asarray(xt))
      chex.assert_type(got64, jnp.float64)
      got = np.asarray(got64)
    finite = np.isfinite(ref)
    # Same formula in float64: agreement to rounding.
    chex.assert_trees_all_close(got[finite], ref[finite], rtol=1e-12, atol=1e-12)
    # −∞ is represented by the references' −1e6: far below any real log-prob, exp() == 0.
    assert np.all(got[~finite] <= -1e5)  # an upper bound, not a comparison with a value
    chex.assert_trees_all_equal(np.exp(got[~finite]), np.zeros((~finite).sum()))
    # float32 path: log-softmax of |logits| ≲ 10 loses ≲ 10·ulp(10) ≈ 1e-5 absolute.
    got32 = log_probs(jnp.asarray(logits, jnp.float32), jnp.asarray(xt, jnp.int32))
    chex.assert_type(got32, jnp.float32)
    chex.assert_trees_all_close(np.asarray(got32)[finite], ref[finite], rtol=0, atol=1e-5)
    probs = self.variant(p.probs)(jnp.asarray(logits, jnp.float32), jnp.asarray(xt, jnp.int32))
    chex.assert_trees_all_close(probs.sum(-1), np.ones((B, L)), rtol=1e-7, atol=1e-6)
    chex.assert_trees_all_equal(probs[..., V - 1], jnp.zeros((B, L)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_subs_has_no_gradient_at_unmasked_positions(self):
    logits, _, xt, _ = _inputs(1)
    p = MDLMProcess(V)
    g = self.variant(jax.grad(lambda z: jnp.sum(jnp.sin(p.log_probs(z, jnp.asarray(xt))))))(
        jnp.asarray(logits, jnp.float32))
    g = np.asarray(g)
    chex.assert_trees_all_equal(g[xt != V - 1], np.zeros_like(g[xt != V - 1]))
    assert np.any(g[xt == V - 1] != 0.0)  # an inequality: the gradient is not vacuous

  @chex.variants(with_jit=True, without_jit=True)
  def test_nelbo_per_token_vs_numpy(self):
    logits, x0, xt, t = _inputs(2)
    ref = np_nelbo(np_subs_logp(logits, xt, V - 1), x0, xt, t, V - 1)
    nelbo = self.variant(_nelbo_fn)
    with jax.enable_x64(True):
      got64 = nelbo(jnp.asarray(logits), jnp.asarray(x0), jnp.asarray(xt), jnp.asarray(t))
      chex.assert_type(got64, jnp.float64)
      got = np.asarray(got64)
    # Float64 evaluation of the same closed form: far inside the 1e-6 requirement.
    chex.assert_trees_all_close(got, ref, rtol=1e-10, atol=0)
    chex.assert_trees_all_equal(got[xt != V - 1], np.zeros((xt != V - 1).sum()))
    assert np.all(got[xt == V - 1] > 0)  # a lower bound: the NELBO is positive where masked
    # float32: log-prob abs error ≲ 1e-5 (see above) on values ≳ 0.1, weight to 1 ulp.
    # Jitted in both variants (the float64 run above is the eager one: one dtype suffices).
    got32 = _nelbo(jnp.asarray(logits, jnp.float32), jnp.asarray(x0, jnp.int32),
                   jnp.asarray(xt, jnp.int32), jnp.asarray(t, jnp.float32))
    chex.assert_trees_all_close(got32, ref, rtol=1e-4, atol=0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_corrupted_fraction_matches_move_chance(self):
    ts = np.asarray([0.05, 0.3, 0.6, 0.95, 1.0])
    n = 20000
    x0 = jax.random.randint(jax.random.key(5), (len(ts), n), 0, V - 1, dtype=jnp.int32)
    p = MDLMProcess(V)
    xt = self.variant(p.corrupt)(jax.random.key(6), x0, jnp.asarray(ts, jnp.float32))
    chex.assert_type(xt, jnp.int32)
    chex.assert_equal_shape([xt, x0])
    xt = np.asarray(xt)
    masked = xt == V - 1
    chex.assert_trees_all_equal(xt[~masked], np.asarray(x0)[~masked])
    # Statistical bound (4 standard errors of a binomial fraction), not elementwise.
    q = (1 - EPS) * ts  # 1 − α_t
    se = np.sqrt(q * (1 - q) / n)
    assert np.all(np.abs(masked.mean(1) - q) < 4 * se), (masked.mean(1), q, se)


def test_loss_convenience_vs_numpy():
  """The composed loss, jitted only (its pieces run under variants above)."""
  rng = np.random.default_rng(7)
  table = rng.normal(size=(V, V)).astype(np.float32) * 2
  bias = rng.normal(size=(L, V)).astype(np.float32)
  x0 = rng.integers(0, V - 1, (B, L))
  valid = rng.random((B, L)) < 0.8
  key = jax.random.key(8)

  def logits_fn(x, sigma):
    del sigma  # MDLM is not time-conditioned
    return jnp.asarray(table)[x] + jnp.asarray(bias)

  p = MDLMProcess(V)
  loss, metrics = jax.jit(lambda k: p.loss(logits_fn, jnp.asarray(x0, jnp.int32), k,
                                           jnp.asarray(valid)))(key)
  # The documented key use; the draws themselves are checked above.
  t, xt = _draws(key, jnp.asarray(x0, jnp.int32))
  t, xt = np.asarray(t, np.float64), np.asarray(xt)
  logits = table.astype(np.float64)[xt] + bias
  per_tok = np_nelbo(np_subs_logp(logits, xt, V - 1), x0, xt, t, V - 1)
  ref_sum = (per_tok * valid).sum()
  # float32 sums of ~100 terms with 1e-4 relative per-term accuracy.
  chex.assert_trees_all_close({"nll_sum": metrics["nll_sum"], "loss": loss},
                              {"nll_sum": ref_sum, "loss": ref_sum / valid.sum()}, rtol=1e-4)
  chex.assert_trees_all_equal(metrics["num_tokens"], np.float32(valid.sum()))
  chex.assert_type(loss, jnp.float32)


def test_sample_t_plain_is_uniform():
  n = 20000
  t = np.asarray(MDLMProcess(V, antithetic=False).sample_t(jax.random.key(4), n), np.float64)
  # Statistical bounds (4 standard errors of the mean and variance), not elementwise.
  assert t.min() >= 1e-3 and t.max() <= 1.0
  lo = 1e-3
  mean, var = (1 + lo) / 2, (1 - lo) ** 2 / 12
  se = math.sqrt(var / n)
  assert abs(t.mean() - mean) < 4 * se
  # SE of a sample variance: sqrt((μ4 − σ⁴)/n), μ4 = w⁴/80 and σ⁴ = w⁴/144 for U(lo, 1).
  w = 1 - lo
  assert abs(t.var() - var) < 4 * math.sqrt((w ** 4 / 80 - w ** 4 / 144) / n)


def test_process_basics_and_factory():
  p = make_process("mdlm", 50258)
  assert isinstance(p, MDLMProcess) and p.mask_id == 50257 and p.eps == 1e-3
  assert p.sampling_eps == 1e-3 and p.antithetic
  assert hash(p) == hash(MDLMProcess(50258))  # static-argument friendly
  with pytest.raises(ValueError, match="unknown diffusion process"):
    make_process("sedd", 10)
  with pytest.raises(ValueError, match="mask_id"):
    MDLMProcess(10, mask_id=10)
  t = jnp.asarray([0.25, 0.75], jnp.float32)
  chex.assert_trees_all_close(p.model_sigma(t), np_sigma(np.asarray([0.25, 0.75])), rtol=1e-6)
  chex.assert_type(p.model_sigma(t), jnp.float32)
  xt = jnp.asarray([[50257, 3], [7, 50257]], jnp.int32)
  chex.assert_trees_all_equal(p.predicted_positions(xt), np.array([[True, False], [False, True]]))


def test_oracle_denoiser_has_zero_nelbo():
  _, x0, xt, t = _inputs(3)
  logits = 1e4 * jax.nn.one_hot(x0, V, dtype=jnp.float32)
  got = _nelbo(logits, jnp.asarray(x0, jnp.int32), jnp.asarray(xt, jnp.int32),
               jnp.asarray(t, jnp.float32))
  chex.assert_trees_all_equal(jnp.abs(got), jnp.zeros((B, L)))


def test_reduce_nelbo_and_meter():
  rng = np.random.default_rng(9)
  batches = [(rng.uniform(0, 5, (4, 8)), rng.random((4, 8)) < 0.7) for _ in range(3)]
  meter = NLLMeter()
  for per_tok, valid in batches:
    loss, m = reduce_nelbo(jnp.asarray(per_tok, jnp.float32), jnp.asarray(valid))
    chex.assert_trees_all_close(loss, (per_tok * valid).sum() / valid.sum(), rtol=1e-6)
    meter.update(m)
  total = sum((p * v).sum() for p, v in batches)
  count = sum(v.sum() for _, v in batches)
  nll = total / count
  got = meter.compute()
  # float32 per-batch sums of 32 values: 1e-6 relative (ppl = e^nll: 1e-5).
  chex.assert_trees_all_close({"nll": got["nll"], "bpd": got["bpd"]},
                              {"nll": nll, "bpd": nll / np.log(2)}, rtol=1e-6)
  chex.assert_trees_all_close(got["ppl"], np.exp(nll), rtol=1e-5)
  chex.assert_trees_all_equal(nll_metrics(2.0, 1.0),
                              {"nll": 2.0, "bpd": 2.0 / math.log(2), "ppl": math.exp(2.0)})
  with pytest.raises(KeyError, match="num_tokens"):
    meter.update({"nll_sum": 1.0})
  with pytest.raises(ValueError, match="no tokens"):
    NLLMeter().compute()
  with pytest.raises(ValueError, match="valid mask shape"):
    reduce_nelbo(jnp.zeros((2, 3)), jnp.ones((3, 2)))


def test_bad_shapes_raise():
  p = MDLMProcess(V)
  with pytest.raises(ValueError, match="t must have shape"):
    p.corrupt(jax.random.key(0), jnp.zeros((2, 4), jnp.int32), jnp.zeros((3,)))
  with pytest.raises(ValueError, match="logits shape"):
    p.log_probs(jnp.zeros((2, 4, V + 1)), jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="x0 must be an int array"):
    p.corrupt(jax.random.key(0), jnp.zeros((2, 4)), jnp.zeros((2,)))
