"""DUO uniform-state process, posterior and ELBO vs float64 NumPy references.

References are written from the published formulas, not from the module under test:
  * q(z_t | x) = α_t x + (1 − α_t)/N, q(z_t | z_s) = α_{t|s} z_s + (1 − α_{t|s})/N, and the
    posterior by Bayes' rule q(z_s | z_t, x) ∝ q(z_t | z_s) q(z_s | x);
  * the UDLM/DUO continuous-time NELBO as an explicit sum over all j ≠ i:
    α'/(Nα) [N/x̄_i − N/x̄_θ,i − Σ_{j≠i} (x̄_j/x̄_i) log(x̄_θ,i x̄_j / (x̄_θ,j x̄_i))].

The process math (sigma/alpha, log_probs, posterior, loss_per_token in float64, corrupt)
runs under ``chex.variants(with_jit=True, without_jit=True)`` in ``DUOVariantsTest``; the
float32 ELBO and the composed loss run jitted only.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax.diffusion import DUOProcess, make_process
from tokendrift_jax.diffusion import duo as duo_lib

EPS = 1e-3
V = 11
B, L = 6, 12


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_bayes_posterior(x, xt, a_s, a_t):
  """q(z_s = j | z_t = xt, x) by Bayes' rule, float64 [B, L, N]."""
  n = x.shape[-1]
  out = np.empty_like(x)
  for b in range(x.shape[0]):
    a_ts = a_t[b] / a_s[b]
    for l in range(x.shape[1]):
      i = xt[b, l]
      # q(z_t = i | z_s = j) for every j
      like = np.full(n, (1 - a_ts) / n)
      like[i] += a_ts
      prior_s = a_s[b] * x[b, l] + (1 - a_s[b]) / n
      joint = like * prior_s
      out[b, l] = joint / joint.sum()
  return out


def np_nelbo(logp, x0, xt, t):
  n = logp.shape[-1]
  a = 1 - (1 - EPS) * t
  da = -(1 - EPS)
  out = np.empty(x0.shape)
  for b in range(x0.shape[0]):
    for l in range(x0.shape[1]):
      i = xt[b, l]
      xbar = np.full(n, 1 - a[b])
      xbar[x0[b, l]] += n * a[b]
      xbt = n * a[b] * np.exp(logp[b, l]) + 1 - a[b]
      s = sum(xbar[j] / xbar[i] * np.log(xbt[i] * xbar[j] / (xbt[j] * xbar[i]))
              for j in range(n) if j != i)
      out[b, l] = da / (n * a[b]) * (n / xbar[i] - n / xbt[i] - s)
  return out


def _nelbo_from_log_probs(logp, x0, xt, t):
  return DUOProcess(V).loss_per_token(logp, x0, xt, t)


def _nelbo_from_logits(logits, x0, xt, t):
  p = DUOProcess(V)
  return p.loss_per_token(p.log_probs(logits, xt), x0, xt, t)


@jax.jit
def _draws(key, x0):
  """t and xt of ``DUOProcess.loss`` (documented key split)."""
  p = DUOProcess(V)
  k_t, k_x = jax.random.split(key)
  t = p.sample_t(k_t, x0.shape[0])
  return t, p.corrupt(k_x, x0, t)


def _inputs(seed):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(B, L, V)) * 2.5
  x0 = rng.integers(0, V, (B, L))
  xt = np.where(rng.random((B, L)) < 0.5, x0, rng.integers(0, V, (B, L)))
  t = np.concatenate([[1e-3, 1.0], rng.uniform(1e-3, 1.0, B - 2)])
  return logits, x0, xt, t


class DUOVariantsTest(chex.TestCase):
  """DUO process math, traced (jit) and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_process_basics(self):
    p = make_process("duo", 50258)
    assert isinstance(p, DUOProcess) and p.eps == 1e-3 and p.sampling_eps == 1e-3
    assert p.antithetic
    t = np.asarray([1e-3, 0.5, 1.0])
    with jax.enable_x64(True):
      chex.assert_trees_all_close(self.variant(p.sigma)(jnp.asarray(t)),
                                  -np.log(1 - (1 - EPS) * t), rtol=1e-13)
      chex.assert_trees_all_close(self.variant(p.alpha)(jnp.asarray(t)), 1 - (1 - EPS) * t,
                                  rtol=1e-15)
    sig = self.variant(p.model_sigma)(jnp.asarray(t, jnp.float32))
    chex.assert_type(sig, jnp.float32)
    # float32: 1 − 0.999 t rounds to ~1e-7 absolute; near t = 1 the log amplifies it by
    # 1/α ≈ 1e3 relative to σ(1) ≈ 6.9, so ≤ 3e-5 relative.
    chex.assert_trees_all_close(sig, -np.log(1 - (1 - EPS) * t), rtol=3e-5)
    xt = jnp.zeros((2, 3), jnp.int32)
    chex.assert_trees_all_equal(self.variant(p.predicted_positions)(xt), np.ones((2, 3), bool))
    logits = np.random.default_rng(0).normal(size=(2, 3, 50258)).astype(np.float32)
    # float32 log-softmax over 5e4 entries of |z| ≲ 5
    chex.assert_trees_all_close(self.variant(p.log_probs)(jnp.asarray(logits), xt),
                                np_log_softmax(logits), rtol=1e-7, atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_posterior_vs_bayes_rule_and_rows_sum_to_one(self):
    rng = np.random.default_rng(1)
    logits, _, xt, _ = _inputs(1)
    x = np.exp(np_log_softmax(logits))
    a_t = rng.uniform(0.0, 0.9, B)
    a_s = a_t + rng.uniform(0.0, 1.0, B) * (1 - a_t)
    a_s[0] = 1.0  # the noise-removal step
    ref = np_bayes_posterior(x, xt, a_s, a_t)
    with jax.enable_x64(True):
      got = self.variant(duo_lib.posterior)(jnp.asarray(x), jnp.asarray(xt), jnp.asarray(a_s),
                                            jnp.asarray(a_t))
      chex.assert_type(got, jnp.float64)
      # Algebraically identical float64 evaluations: rounding only.
      chex.assert_trees_all_close(got, ref, rtol=1e-12, atol=1e-15)
      chex.assert_trees_all_close(got.sum(-1), np.ones((B, L)), rtol=0, atol=1e-13)
      assert np.all(np.asarray(got) >= 0)  # a lower bound: a distribution

  @chex.variants(with_jit=True, without_jit=True)
  def test_posterior_of_clean_token_is_exact_at_noise_removal(self):
    # With x = onehot(x0) and α_s = 1 the posterior is onehot(x0) whatever z_t is.
    _, x0, xt, _ = _inputs(2)
    with jax.enable_x64(True):
      x = jax.nn.one_hot(jnp.asarray(x0), V, dtype=jnp.float64)
      got = self.variant(duo_lib.posterior)(x, jnp.asarray(xt), 1.0, jnp.full((B,), 0.3))
      chex.assert_trees_all_close(got, x, rtol=0, atol=1e-15)

  @chex.variants(with_jit=True, without_jit=True)
  def test_nelbo_vs_numpy_float64(self):
    logits, x0, xt, t = _inputs(3)
    logp = np_log_softmax(logits)
    ref = np_nelbo(logp, x0, xt, t)
    assert np.any(x0 == xt) and np.any(x0 != xt)  # precondition: both branches are covered
    with jax.enable_x64(True):
      got = self.variant(_nelbo_from_log_probs)(jnp.asarray(logp), jnp.asarray(x0),
                                                jnp.asarray(xt), jnp.asarray(t))
      chex.assert_type(got, jnp.float64)
      # The closed form regroups the sum over j; in float64 the bracket's cancellation
      # (terms up to N/x̄ ≈ 1/(1 − α) ≈ 1e3 at t = 1e-3) leaves ≲ 1e3 · 1e-16 relative.
      chex.assert_trees_all_close(got, ref, rtol=1e-9, atol=0)
    assert np.all(ref > 0)  # the ELBO integrand is a divergence: positive for p ≠ onehot(x0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_oracle_denoiser_has_zero_nelbo(self):
    _, x0, xt, t = _inputs(5)
    with jax.enable_x64(True):
      logits = 1e4 * np.eye(V)[x0]
      got = self.variant(_nelbo_from_logits)(jnp.asarray(logits), jnp.asarray(x0),
                                             jnp.asarray(xt), jnp.asarray(t))
      # x̄_θ = x̄ exactly, so both terms vanish up to float64 rounding of O(N/x̄) ≈ 1e3 terms.
      chex.assert_trees_all_close(got, np.zeros((B, L)), rtol=1e-7, atol=1e-9)

  @chex.variants(with_jit=True, without_jit=True)
  def test_uniform_corruption_law(self):
    ts = np.asarray([0.1, 0.5, 0.9, 1.0])
    n = 30000
    x0 = np.asarray(jax.random.randint(jax.random.key(6), (len(ts), n), 0, V, dtype=jnp.int32))
    p = DUOProcess(V)
    xt = self.variant(p.corrupt)(jax.random.key(7), jnp.asarray(x0),
                                 jnp.asarray(ts, jnp.float32))
    chex.assert_type(xt, jnp.int32)
    chex.assert_shape(xt, x0.shape)
    xt = np.asarray(xt)
    assert xt.min() >= 0 and xt.max() < V  # range bounds
    a = 1 - (1 - EPS) * ts
    for r in range(len(ts)):
      # P(xt = x0) = α + (1 − α)/N; P(xt = x0 + k mod N) = (1 − α)/N for each k ≠ 0.
      # Statistical bound (4 standard errors per frequency), not an elementwise comparison.
      offset = (xt[r] - x0[r]) % V
      counts = np.bincount(offset, minlength=V) / n
      probs = np.full(V, (1 - a[r]) / V)
      probs[0] += a[r]
      se = np.sqrt(probs * (1 - probs) / n)
      assert np.all(np.abs(counts - probs) < 4 * se), (r, counts, probs)


def test_nelbo_float32_path():
  """float32 training precision, jitted only (the float64 checks above run both variants)."""
  logits, x0, xt, t = _inputs(4)
  ref = np_nelbo(np_log_softmax(logits), x0, xt, t)
  got = jax.jit(_nelbo_from_logits)(
      jnp.asarray(logits, jnp.float32), jnp.asarray(x0, jnp.int32), jnp.asarray(xt, jnp.int32),
      jnp.asarray(t, jnp.float32))
  chex.assert_type(got, jnp.float32)
  # float32 (the training precision of the reference too): eps32 ≈ 1.2e-7 times the
  # bracket's condition number (≲ 1e3, see above) → ≲ 1e-4 of max(1, |value|), i.e.
  # |got − ref| ≤ 1e-4 + 1e-4 |ref|.
  chex.assert_trees_all_close(got, ref, rtol=1e-4, atol=1e-4)


def test_loss_convenience_vs_numpy():
  """The composed loss, jitted only (its pieces run under variants above)."""
  rng = np.random.default_rng(8)
  table = rng.normal(size=(V, V)).astype(np.float32) * 2
  x0 = rng.integers(0, V, (B, L))
  key = jax.random.key(9)

  def logits_fn(x, sigma):
    return jnp.asarray(table)[x] + 0.5 * sigma[:, None, None]

  p = DUOProcess(V)
  loss, metrics = jax.jit(lambda k: p.loss(logits_fn, jnp.asarray(x0, jnp.int32), k))(key)
  t, xt = _draws(key, jnp.asarray(x0, jnp.int32))
  t, xt = np.asarray(t, np.float64), np.asarray(xt)
  sigma = -np.log(1 - (1 - EPS) * t)
  logp = np_log_softmax(table.astype(np.float64)[xt] + 0.5 * sigma[:, None, None])
  ref = np_nelbo(logp, x0, xt, t)
  # float32 per-token error ≤ 1e-4 (1 + |value|) (see the float32 test) summed over 72 tokens.
  chex.assert_trees_all_close({"nll_sum": metrics["nll_sum"], "loss": loss},
                              {"nll_sum": ref.sum(), "loss": ref.mean()}, rtol=1e-4)
  chex.assert_trees_all_equal(metrics["num_tokens"], np.float32(B * L))


def test_bad_inputs_raise():
  p = DUOProcess(V)
  with pytest.raises(ValueError, match="log_probs shape"):
    p.loss_per_token(jnp.zeros((2, 3, V + 1)), jnp.zeros((2, 3), jnp.int32),
                     jnp.zeros((2, 3), jnp.int32), jnp.zeros((2,)))
  with pytest.raises(ValueError, match="vocab_size"):
    DUOProcess(1)
