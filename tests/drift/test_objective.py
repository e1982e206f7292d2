"""Lift, features, reference sets, fixed-point and mirror losses, and the sharded step.

The encoder is a small differentiable toy (two tanh layers with random non-zero weights),
written twice: in JAX for the code under test and in float64 NumPy for the references
(including central finite differences for Jacobian-vector products).

The lift, the pooled features, the Alg. 1 reference sets and the fixed-point / mirror
losses run under ``chex.variants(with_jit=True, without_jit=True)``
(``ObjectiveVariantsTest``). The
composed objective and the equilibrium check run jitted only (one program each; without
jit they would recompile the whole field op by op for new shapes), and
``test_sharded_step_matches_single_device`` is the sharded variant (8 devices vs 1).
"""

from __future__ import annotations

import collections
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references.np_drift import np_diagnostics, np_drift  # independent float64 references
from tokendrift_jax import sharding
from tokendrift_jax.drift import features as feat
from tokendrift_jax.drift import field
from tokendrift_jax.drift import lift as lift_lib
from tokendrift_jax.drift import objective as obj
from tokendrift_jax.drift import queue as qlib

VOCAB, D, LENGTH = 7, 6, 5
M = 2 * D


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  return dict(
      E=rng.standard_normal((VOCAB, D)) * 0.7,
      W1=rng.standard_normal((D, D)) / np.sqrt(D) * 1.5,
      b1=rng.standard_normal(D) * 0.3,
      c=rng.standard_normal(D) * 0.5,
      W2=rng.standard_normal((D, D)) / np.sqrt(D) * 1.5,
      b2=rng.standard_normal(D) * 0.3,
  )


PARAMS = make_params()
JP = {k: jnp.asarray(v, jnp.float32) for k, v in PARAMS.items()}


def toy_hidden(embeds, sigma):
  """JAX toy encoder: per-block hidden states [B, L, D] x 2."""
  h1 = jnp.tanh(embeds @ JP["W1"] + JP["b1"] + sigma[:, None, None] * JP["c"])
  h2 = jnp.tanh(h1 @ JP["W2"] + JP["b2"])
  return [h1, h2]


def np_features(logits, input_ids, mask, sigma=0.0):
  """float64 NumPy twin of softmax -> lift -> toy encoder -> pooled unit features."""
  logits = np.asarray(logits, np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  b, length, _ = logits.shape
  e = np.zeros((b, length, D))
  for i in range(b):
    for t in range(length):
      e[i, t] = p[i, t] @ PARAMS["E"] if mask[i, t] else PARAMS["E"][input_ids[i, t]]
  h1 = np.tanh(e @ PARAMS["W1"] + PARAMS["b1"] + sigma * PARAMS["c"])
  h2 = np.tanh(h1 @ PARAMS["W2"] + PARAMS["b2"])
  x = np.concatenate([h1.mean(1), h2.mean(1)], -1)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_grad_fd(fn, x, delta=1e-5):
  """Central finite differences of a scalar float64 function."""
  x = np.asarray(x, np.float64)
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += delta
    xm[idx] -= delta
    g[idx] = (fn(xp) - fn(xm)) / (2 * delta)
  return g


@functools.lru_cache(maxsize=None)
def fd_pullback(v_seed):
  """(V, Jᵀ V by float64 finite differences) for make_batch(4); shared by both variants."""
  logits, ids, mask = make_batch(4)
  v = np.random.default_rng(v_seed).standard_normal((4, M)).astype(np.float32)
  return v, np_grad_fd(lambda lg: float(np.sum(np_features(lg, ids, mask) * v)), logits)


def make_batch(b, seed=1):
  rng = np.random.default_rng(seed)
  logits = (rng.standard_normal((b, LENGTH, VOCAB)) * 1.5).astype(np.float32)
  ids = rng.integers(0, VOCAB, size=(b, LENGTH)).astype(np.int32)
  mask = rng.random((b, LENGTH)) < 0.6
  mask[:, 0], mask[:, -1] = True, False  # every row has predicted and observed positions
  return logits, ids, mask


def feature_fn_for(ids, mask, mode="soft"):
  def fn(logits):
    embeds = lift_lib.soft_token_lift(ids, mask, JP["E"], logits=logits, mode=mode)
    return feat.encoder_features(toy_hidden, embeds, feat.encoder_sigma(ids.shape[0]))
  return fn


# ---------------------------------------------------------------- lift and features


def test_lift_compute_dtype_and_errors():
  logits, ids, mask = make_batch(2)
  out16 = lift_lib.soft_token_lift(ids, mask, JP["E"], logits=logits, compute_dtype=jnp.bfloat16)
  out32 = lift_lib.soft_token_lift(ids, mask, JP["E"], logits=logits)
  chex.assert_type([out16, out32], jnp.float32)
  # Observed positions are exact rows of E whatever the compute dtype (u uses E[x0]).
  m = np.asarray(mask)[..., None]
  chex.assert_trees_all_equal(jnp.where(m, 0, out16), jnp.where(m, 0, out32))
  # On M_i: p and E rounded to bfloat16 (2^-9 relative each), exact products summed in
  # float32, the result rounded to bfloat16 once more: <= ~3 * 2^-9 * max|E| (max|E| is
  # printed by the assertion's numbers; ~1 here).
  bound = 3 * 2.0 ** -9 * float(np.max(np.abs(np.asarray(JP["E"]))))
  chex.assert_trees_all_close(out16, out32, rtol=0, atol=bound)
  with pytest.raises(ValueError, match="exactly one"):
    lift_lib.soft_token_lift(ids, mask, JP["E"])
  with pytest.raises(ValueError, match="logits must have shape"):
    lift_lib.soft_token_lift(ids, mask, JP["E"], logits=logits[..., :3])
  with pytest.raises(ValueError, match="predicted_mask"):
    lift_lib.soft_token_lift(ids, mask.astype(np.int32), JP["E"], logits=logits)
  with pytest.raises(ValueError, match="at least 2 blocks"):
    feat.pool_features([jnp.zeros((2, 3, 4))])


# ---------------------------------------------------------------- references and drift


def filled_queue(capacity, pushes, seed):
  """A queue after `pushes` pushes of 8 unit rows, and the deque of what it should hold."""
  rng = np.random.default_rng(seed)
  q = qlib.init_queue(capacity, M)
  ref = collections.deque(maxlen=capacity)
  for _ in range(pushes):
    x = rng.standard_normal((8, M)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    q = qlib.push(q, x)
    ref.extend(list(x))
  return q, ref


def check_drift_from_features(variant, drift_variant, q_size, real_pushes, gen_pushes,
                              normalization):
  """Alg. 1 references (self-exclusion; partially filled, wrapped, empty queues) vs float64.

  ``variant`` wraps build_references and ``drift_variant`` drift_from_features (jax.jit, or
  a chex variant).
  """
  q_real, ref_real = filled_queue(q_size, real_pushes, 10)
  q_gen, ref_gen = filled_queue(q_size, gen_pushes, 11)
  logits, ids, mask = make_batch(8)
  fn = jax.jit(feature_fn_for(ids, mask))
  h = fn(jnp.asarray(logits))
  u = fn(jnp.asarray(make_batch(8, seed=5)[0]))
  config = obj.DriftConfig(normalization=normalization, queue_size=q_size)
  refs = variant(obj.build_references)(h, u, q_real, q_gen)
  chex.assert_trees_all_equal(refs.neg_mask[0], ~np.eye(8, dtype=bool))
  for mask, ref in ((refs.pos_mask[1], ref_real), (refs.neg_mask[1], ref_gen)):
    chex.assert_shape(mask, (q_size,))
    assert int(np.sum(np.asarray(mask))) == len(ref)
  v, diag = drift_variant(obj.drift_from_features, static_argnames="config")(
      h, u, q_real, q_gen, config=config)
  # Reference sets written out per Alg. 1 from the deques (no slot layout, no masks for
  # the queues): U = u ∪ Q_real, H = h ∪ Q_gen with h_i excluded for anchor i.
  pos = np.concatenate([np.asarray(u)] + [np.array(list(ref_real))] * bool(ref_real))
  neg = np.concatenate([np.asarray(h)] + [np.array(list(ref_gen))] * bool(ref_gen))
  assert len(pos) == 8 + min(8 * real_pushes, q_size)
  neg_ok = np.ones((8, len(neg)), bool)
  neg_ok[np.arange(8), np.arange(8)] = False
  want, scales = np_drift(np.asarray(h), pos, neg, np.ones((8, len(pos)), bool), neg_ok,
                          normalization=normalization)
  # Same bound and reasoning as tests/drift/test_field.py (τ = 0.02 logit rounding).
  chex.assert_trees_all_close(v, want, rtol=0, atol=1e-5)
  chex.assert_trees_all_close(diag["scale"], scales, rtol=1e-5)
  # The study diagnostics on the Alg. 1 sets (self and empty queue slots excluded); their
  # tolerances: tests/drift/test_field.py (NN_ATOL, SHARE_ATOL).
  pos_ok = np.ones((8, len(pos)), bool)
  ref = np_diagnostics(np.asarray(h), pos, neg, pos_ok, neg_ok, normalization=normalization)
  chex.assert_trees_all_close({k: diag[k] for k in ("nn_dist_pos", "nn_dist_neg")},
                              {k: np.float32(ref[k]) for k in ("nn_dist_pos", "nn_dist_neg")},
                              rtol=0, atol=2e-6)
  chex.assert_trees_all_close({k: diag[k] for k in ("v_mean_share", "v_tau_mean_share")},
                              {k: np.asarray(ref[k], np.float32)
                               for k in ("v_mean_share", "v_tau_mean_share")},
                              rtol=0, atol=4e-5)
  with pytest.raises(ValueError, match="queue_size"):
    obj.drift_from_features(h, u, q_real, q_gen, obj.DriftConfig(queue_size=q_size + 1))


def test_drift_from_features_empty_and_overfull_queues_alg2():
  """Empty and overfull queues with the Alg. 2 field, jitted only (without jit its ops would
  compile again for these shapes: ~10 s on 2 cores)."""
  check_drift_from_features(jax.jit, jax.jit, 4, 0, 1, "drifting_alg2")


# ---------------------------------------------------------------- fixed point and mirror


def test_fixed_point_logit_gradient():
  """∇_ℓ L = −(α/B) Jᵀ V through the feature map, and Jᵀ V vs finite differences (eager,
  once: the loss itself runs under variants in ObjectiveVariantsTest)."""
  logits, ids, mask = make_batch(4)
  fn = feature_fn_for(ids, mask)
  v, fd = fd_pullback(4)
  _, vjp_fn = jax.vjp(fn, jnp.asarray(logits))
  jtv = vjp_fn(jnp.asarray(v))[0]
  for alpha in (1.0, 0.5):
    g_l = jax.grad(lambda lg: obj.fixed_point_loss(fn(lg), v, alpha))(jnp.asarray(logits))
    # Same pullback with the cotangent scaled by −α/B before or after: float32 rounding.
    chex.assert_trees_all_close(g_l, -alpha / 4 * jtv, rtol=1e-6, atol=1e-9)
    chex.assert_trees_all_equal(g_l[~mask], jnp.zeros_like(g_l[~mask]))
    assert np.any(np.asarray(g_l)[mask] != 0.0)  # an inequality: the gradient is not vacuous
  # Jᵀ V itself vs float64 finite differences of ⟨h(ℓ), V⟩ (an independent pullback).
  # Finite-difference truncation ~1e-10; float32 Jacobian ~1e-7 relative on entries ≲ 0.1.
  chex.assert_trees_all_close(jtv, fd, rtol=0, atol=2e-6)


def test_equilibrium_gives_zero_loss_and_gradients():
  """Positives = negatives: V = 0, so L, ∇L (fixed point) and KL, ∇KL (mirror) vanish."""
  logits, ids, mask = make_batch(4)
  refs = jnp.asarray(np.random.default_rng(8).standard_normal((10, M)), jnp.float32)

  @jax.jit
  def everything(lg, ids_, mask_):
    fn = feature_fn_for(ids_, mask_)
    v, _ = field.drift_field(fn(lg), refs, refs)
    fixed = jax.value_and_grad(lambda x: obj.fixed_point_loss(fn(x), v))(lg)
    g = obj.mirror_direction(fn, lg, v)
    teacher = obj.mirror_teacher_logits(lg, g, 1.0)
    mirrors = [jax.value_and_grad(f)(lg, teacher, mask_)
               for f in (obj.mirror_kl_loss, obj.mirror_mse_loss)]
    return v, fixed, g, mirrors

  v, fixed, g, mirrors = everything(logits, ids, mask)
  exact = (v, fixed, g, [val for val, _ in mirrors])
  chex.assert_trees_all_equal(exact, jax.tree.map(jnp.zeros_like, exact))
  # MSE: −2(ℓ* − ℓ)/B = 0 exactly. KL: (p Σp* − p*)/B with p* = p bitwise, so only
  # Σp = 1 ± a few float32 ulps remains: |grad| ≲ 1e-6 · p / B.
  grads = [grad for _, grad in mirrors]
  chex.assert_trees_all_close(grads, jax.tree.map(jnp.zeros_like, grads), rtol=1e-7, atol=1e-7)


# ---------------------------------------------------------------- the composed objective


def test_tokendrift_loss_composes_the_pieces():
  """tokendrift_loss == the public pieces assembled by hand, for every objective."""
  b, q_size = 8, 16
  logits, ids, mask = make_batch(b)
  u_logits = make_batch(b, seed=9)[0]
  q_real, _ = filled_queue(q_size, 1, 12)
  q_gen, _ = filled_queue(q_size, 3, 13)
  configs = {name: obj.DriftConfig(objective=name, queue_size=q_size, base_loss_weight=0.5,
                                   mirror_eta=2.0) for name in obj.OBJECTIVES}

  @jax.jit  # one program for all three objectives (compilation dominates on 2 cores)
  def run_all(lg, ul, ids_, mask_, qr, qg):
    fn = feature_fn_for(ids_, mask_)
    u = fn(ul)
    h = fn(lg)
    out = {}
    for name, config in configs.items():
      loss, aux = obj.tokendrift_loss(fn, lg, u, qr, qg, config, predicted_mask=mask_,
                                      base_loss=jnp.float32(3.0))
      v, _ = obj.drift_from_features(h, u, qr, qg, config)
      if name == "fixed_point":
        want = obj.fixed_point_loss(h, v)
      else:
        teacher = obj.mirror_teacher_logits(lg, obj.mirror_direction(fn, lg, v), 2.0)
        loss_fn = obj.mirror_kl_loss if name == "mirror_kl" else obj.mirror_mse_loss
        want = loss_fn(lg, teacher, mask_)
      out[name] = (loss, aux, want, v)
    return out, u, h

  out, u, h = run_all(logits, u_logits, ids, mask, q_real, q_gen)
  for name, (loss, aux, want, v) in out.items():
    assert float(want) > 1e-6, name  # a non-trivial loss
    # The two computations are fused differently by XLA. The fixed point and MSE losses
    # agree to float32 rounding; the KL is a sum of q (log q − log p) whose log difference
    # (~ηg ~ 3e-2) is taken between logs of size ~2, i.e. it carries ~1e-5 relative error.
    rtol = 1e-4 if name == "mirror_kl" else 1e-6
    # The base term (0.5 x 3.0) is exact: check the total with the drift term's own
    # tolerance (the +1.5 must not dilute its error; atol: ~1 float32 ulp of a loss near 2).
    # (float64 host scalars: loss − 1.5 is formed without float32 rounding.)
    chex.assert_trees_all_close({name: float(loss) - 1.5}, {name: float(want)}, rtol=rtol,
                                atol=3e-7)
    chex.assert_trees_all_close({name: aux.metrics["loss_drift"]}, {name: want}, rtol=rtol,
                                atol=0)
    chex.assert_trees_all_close(aux.drift, v, rtol=1e-7, atol=1e-7)
    # Queues: this step's u / h appended after the old contents.
    for new, old, x in ((aux.q_real, q_real, u), (aux.q_gen, q_gen, h)):
      rows, _ = qlib.ordered(new)
      c = int(new.count)
      assert c == min(int(old.count) + b, q_size)
      chex.assert_trees_all_close(rows[c - b:c], x, rtol=1e-7, atol=1e-7)
    chex.assert_shape([aux.metrics[k] for k in field.PER_TEMPERATURE_DIAGNOSTICS], (3,))
    chex.assert_shape([aux.metrics[k] for k in field.SCALAR_DIAGNOSTICS], ())
    chex.assert_trees_all_close(
        {k: aux.metrics[k] for k in ("queue_fill_gen", "queue_fill_real")},
        {"queue_fill_gen": np.float32(1.0), "queue_fill_real": np.float32(0.5)}, rtol=1e-7)


def test_config_and_argument_errors():
  with pytest.raises(ValueError, match="DriftConfig.objective"):
    obj.DriftConfig(objective="feature_l1")
  with pytest.raises(ValueError, match="DriftConfig.temperatures"):
    obj.DriftConfig(temperatures=())
  # The study options: checked here, passed to the field as given (one c_τ or one per τ).
  with pytest.raises(ValueError, match="DriftConfig.scale_mode"):
    obj.DriftConfig(scale_mode="batch")
  with pytest.raises(ValueError, match="DriftConfig.temperature_mode"):
    obj.DriftConfig(temperature_mode="median")
  with pytest.raises(ValueError, match="DriftConfig.fixed_scale"):
    obj.DriftConfig(fixed_scale=(1.0, 2.0))
  with pytest.raises(ValueError, match="DriftConfig.fixed_scale"):
    obj.DriftConfig(fixed_scale=-1.0)
  kw = obj.DriftConfig(scale_mode="fixed", fixed_scale=[0.5, 1.0, 2.0],
                       temperature_mode="relative").field_kwargs()
  assert (kw["scale_mode"], kw["fixed_scale"], kw["temperature_mode"]) == (
      "fixed", (0.5, 1.0, 2.0), "relative")
  assert obj.DriftConfig(fixed_scale=2).fixed_scale == (2.0,)
  logits, ids, mask = make_batch(2)
  fn = feature_fn_for(ids, mask)
  q = qlib.init_queue(4, M)
  u = jnp.zeros((2, M))
  with pytest.raises(ValueError, match="predicted_mask"):
    obj.tokendrift_loss(fn, jnp.asarray(logits), u, q, q,
                        obj.DriftConfig(objective="mirror_kl", queue_size=4))
  with pytest.raises(ValueError, match="base_loss"):
    obj.tokendrift_loss(fn, jnp.asarray(logits), u, q, q,
                        obj.DriftConfig(queue_size=4, base_loss_weight=1.0))


# ---------------------------------------------------------------- 8 devices vs 1


def test_sharded_step_matches_single_device():
  """Gathered drift + queue push + fixed-point loss and gradient: 8 devices == 1 device.

  The batch-sharded inputs x [B, m] go through a cheap differentiable feature map
  (L2 normalisation; the encoder-level sharded step is the train step's test). The program
  also computes the Alg. 2 field, whose column softmax runs over the anchors of the whole
  global micro-batch.
  """
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  b, q_size = 8, 16
  rng = np.random.default_rng(14)
  x = rng.standard_normal((b, M)).astype(np.float32)
  u = feat.l2_normalize(rng.standard_normal((b, M)).astype(np.float32))
  q_real, _ = filled_queue(q_size, 1, 15)
  q_gen, _ = filled_queue(q_size, 3, 16)
  config = obj.DriftConfig(queue_size=q_size)
  config_alg2 = obj.DriftConfig(normalization="drifting_alg2", queue_size=q_size)

  def run(mesh):
    def step(x_, u_, qr, qg):
      (loss, aux), grad = jax.value_and_grad(
          lambda y: obj.tokendrift_loss(feat.l2_normalize, y, u_, qr, qg, config, mesh=mesh),
          has_aux=True)(x_)
      v_alg2, _ = obj.drift_from_features(aux.features, u_, qr, qg, config_alg2, mesh=mesh)
      return loss, grad, aux, v_alg2

    batch, rep = sharding.batch_sharding(mesh, 2), sharding.replicated(mesh)
    qs = jax.tree.map(lambda _: rep, q_real)
    return jax.jit(step, in_shardings=(batch, batch, qs, qs))(x, u, q_real, q_gen)

  loss8, grad8, aux8, alg8 = run(sharding.make_mesh(devices=jax.devices()[:8]))
  loss1, grad1, aux1, alg1 = run(sharding.make_mesh(devices=jax.devices()[:1]))
  assert aux8.q_gen.buf.sharding.is_fully_replicated
  assert aux8.q_real.buf.sharding.is_fully_replicated
  # Same global program, different partitioning: only reduction order may differ.
  chex.assert_trees_all_close(loss8, loss1, rtol=1e-5)
  assert float(np.abs(np.asarray(grad1)).max()) > 0  # a lower bound: not vacuous
  chex.assert_trees_all_close(grad8, grad1, rtol=0,
                              atol=1e-5 * float(np.abs(np.asarray(grad1)).max()))
  chex.assert_trees_all_close((aux8.drift, alg8), (aux1.drift, alg1), rtol=1e-7, atol=1e-5)
  assert float(np.abs(np.asarray(alg1)).max()) > 0.1  # a lower bound: not vacuous
  chex.assert_trees_all_close((aux8.q_real.buf, aux8.q_gen.buf),
                              (aux1.q_real.buf, aux1.q_gen.buf), rtol=1e-7, atol=1e-6)
  chex.assert_trees_all_equal(
      (aux8.q_real.ptr, aux8.q_real.count, aux8.q_gen.ptr, aux8.q_gen.count),
      (aux1.q_real.ptr, aux1.q_real.count, aux1.q_gen.ptr, aux1.q_gen.count))
  chex.assert_trees_all_close(aux8.metrics, aux1.metrics, atol=1e-5)


# ---------------------------------------------------------------- traced and eager


class ObjectiveVariantsTest(chex.TestCase):
  """Lift, features, Alg. 1 drift and the losses, each traced (jit) and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_soft_lift_values_and_gradient_support(self):
    logits, ids, mask = make_batch(4)
    p = np.asarray(jax.nn.softmax(logits, -1))
    rng = np.random.default_rng(2)
    cot = rng.standard_normal((4, LENGTH, D)).astype(np.float32)
    lift = lambda **kw: lift_lib.soft_token_lift(ids, mask, JP["E"], **kw)
    out = self.variant(lambda q: lift(probs=q))(p)
    want = np.where(mask[..., None], np.asarray(p, np.float64) @ PARAMS["E"], PARAMS["E"][ids])
    chex.assert_shape(out, (4, LENGTH, D))
    # float32 p E with |E| ≲ 2 and Σp = 1: a few ulps of values ≲ 2, i.e. ≲ 1e-6.
    chex.assert_trees_all_close(out, want, rtol=0, atol=1e-6)
    grad_p = self.variant(jax.grad(lambda q: jnp.sum(lift(probs=q) * cot)))(jnp.asarray(p))
    # d⟨pE, C⟩/dp = C Eᵀ on M_i; exactly 0 elsewhere.
    want_g = np.where(mask[..., None], cot.astype(np.float64) @ PARAMS["E"].T, 0.0)
    # float32 rounding of E and of a D = 6 term dot with entries up to ~10: ≲ 1e-5.
    chex.assert_trees_all_close(grad_p, want_g, rtol=0, atol=1e-5)
    chex.assert_trees_all_equal(grad_p[~mask], jnp.zeros_like(grad_p[~mask]))
    g = self.variant(jax.grad(lambda lg: jnp.sum(lift(logits=lg) * cot)))(jnp.asarray(logits))
    chex.assert_trees_all_equal(g[~mask], jnp.zeros_like(g[~mask]))
    assert np.all(np.abs(np.asarray(g)[mask]).sum(-1) > 0)  # a lower bound: gradient flows

  @chex.variants(with_jit=True, without_jit=True)
  def test_hard_lift_forward_is_argmax_embedding_with_soft_gradient(self):
    logits, ids, mask = make_batch(4)
    p = jax.nn.softmax(jnp.asarray(logits), -1)
    hard = lambda q: lift_lib.soft_token_lift(ids, mask, JP["E"], probs=q, mode="hard")
    out = self.variant(hard)(p)
    arg = np.argmax(np.asarray(p), -1)
    e32 = np.asarray(JP["E"])
    chex.assert_trees_all_equal(out, np.where(mask[..., None], e32[arg], e32[ids]))
    cot = np.random.default_rng(3).standard_normal((4, LENGTH, D)).astype(np.float32)
    grad_hard = self.variant(jax.grad(lambda q: jnp.sum(hard(q) * cot)))(p)
    want_g = np.where(mask[..., None], cot.astype(np.float64) @ PARAMS["E"].T, 0.0)
    chex.assert_trees_all_close(grad_hard, want_g, rtol=0, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_pooled_features_match_numpy(self):
    logits, ids, mask = make_batch(4)
    h = self.variant(feature_fn_for(ids, mask))(jnp.asarray(logits))
    chex.assert_shape(h, (4, M))
    # Two tanh layers and a normalisation in float32 on O(1) values: a few ulps ≲ 2e-6.
    chex.assert_trees_all_close(h, np_features(logits, ids, mask), rtol=0, atol=2e-6)
    chex.assert_trees_all_close(jnp.linalg.norm(h, axis=-1), np.ones(4), rtol=1e-7, atol=1e-6)
    # u on clean ids: the same map with one-hot inputs, and no gradient to E.
    clean = lambda e, s: feat.clean_features(toy_hidden, e, ids, s)
    u = self.variant(clean)(JP["E"], feat.encoder_sigma(4, 0.3))
    chex.assert_trees_all_close(u, np_features(logits, ids, np.zeros_like(mask), sigma=0.3),
                                rtol=1e-7, atol=2e-6)
    g = self.variant(jax.grad(lambda e: jnp.sum(clean(e, feat.encoder_sigma(4)))))(JP["E"])
    chex.assert_trees_all_equal(g, jnp.zeros_like(g))

  @chex.variants(with_jit=True, without_jit=True)
  def test_drift_from_features_matches_reference(self):
    """Partially filled and wrapped queues, joint normalisation (Alg. 2: below).

    build_references runs under the variants; drift_from_features jitted in both (its
    field runs under variants in tests/drift/test_field.py, and without jit it would
    compile the field's ops again for these shapes).
    """
    check_drift_from_features(self.variant, jax.jit, 64, 3, 10, "joint")

  @chex.variants(with_jit=True, without_jit=True)
  def test_fixed_point_loss_and_feature_gradient(self):
    logits, ids, mask = make_batch(4)
    h = jax.jit(feature_fn_for(ids, mask))(jnp.asarray(logits))
    v, _ = fd_pullback(4)
    # α is traced: one compilation serves both values.
    loss_and_grad_h = self.variant(
        jax.value_and_grad(lambda x, a: obj.fixed_point_loss(x, v, a)))
    for alpha in (1.0, 0.5):
      loss, g_h = loss_and_grad_h(h, alpha)
      # ∇_h L = −αV/B to the last bit (residual formed without rounding through h + αV).
      chex.assert_trees_all_equal(g_h, -alpha * v / np.float32(4))
      chex.assert_trees_all_close(loss, alpha ** 2 * np.sum(v.astype(np.float64) ** 2) / 8,
                                  rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mirror_teacher_and_losses_match_numpy(self):
    logits, ids, mask = make_batch(4)
    fn = feature_fn_for(ids, mask)
    v, fd = fd_pullback(6)
    eta = 3.0
    g = self.variant(lambda lg, v_: obj.mirror_direction(fn, lg, v_))(jnp.asarray(logits),
                                                                       jnp.asarray(v))
    chex.assert_trees_all_close(g, fd, rtol=0, atol=2e-6)
    teacher = self.variant(obj.mirror_teacher_logits)(jnp.asarray(logits), g, eta)

    lg64 = logits.astype(np.float64)
    t64 = lg64 + eta * fd

    def softmax(x):
      e = np.exp(x - x.max(-1, keepdims=True))
      return e / e.sum(-1, keepdims=True)

    p, q = softmax(lg64), softmax(t64)
    # ℓ* differs from float64 by η·2e-6 (the g bound above) plus rounding: p* to ≲ 1e-5.
    chex.assert_trees_all_close(jax.nn.softmax(teacher, -1), q, rtol=1e-7, atol=1e-5)
    kl_want = sum(np.sum(q[i, t] * (np.log(q[i, t]) - np.log(p[i, t])))
                  for i in range(4) for t in range(LENGTH) if mask[i, t]) / 4
    mse_want = sum(np.sum((t64[i, t] - lg64[i, t]) ** 2)
                   for i in range(4) for t in range(LENGTH) if mask[i, t]) / 4
    kl, g_kl = self.variant(jax.value_and_grad(obj.mirror_kl_loss))(jnp.asarray(logits),
                                                                     teacher, mask)
    mse, g_mse = self.variant(jax.value_and_grad(obj.mirror_mse_loss))(jnp.asarray(logits),
                                                                        teacher, mask)
    assert kl_want > 1e-4 and mse_want > 1e-4  # lower bounds: a non-trivial teacher
    # KL sums q (log q − log p) with log differences ~ηg ~ 0.1 taken between logs of size ~2
    # (float32: ~1e-6 absolute each), so ~1e-5 relative; MSE inherits g's 2e-6 · η error.
    chex.assert_trees_all_close({"kl": kl, "mse": mse},
                                {"kl": np.float64(kl_want), "mse": np.float64(mse_want)},
                                rtol=1e-4)
    # ∇_ℓ KL(p*‖p) = p − p*, ∇_ℓ ‖ℓ* − ℓ‖² = −2(ℓ* − ℓ): per position on M_i, over B. The
    # bounds follow from the p* and g bounds above (times 2η/B = 1.5 for the MSE).
    chex.assert_trees_all_close(g_kl, np.where(mask[..., None], p - q, 0) / 4, rtol=1e-7,
                                atol=1e-6)
    chex.assert_trees_all_close(g_mse, np.where(mask[..., None], -2 * eta * fd, 0) / 4,
                                rtol=1e-7, atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mirror_losses_with_impossible_tokens_are_finite(self):
    """SUBS-style logits: −1e6 or −inf on the mask token contribute nothing and stay finite."""
    logits, ids, mask = make_batch(4)
    teacher_fn = self.variant(obj.mirror_teacher_logits, static_argnums=2)
    losses = [self.variant(jax.value_and_grad(f)) for f in (obj.mirror_kl_loss,
                                                            obj.mirror_mse_loss)]
    for neg in (-1e6, -np.inf):
      lg = logits.copy()
      lg[..., VOCAB - 1] = neg
      lg = jnp.asarray(lg)
      g = jnp.asarray(np.random.default_rng(7).standard_normal(lg.shape), jnp.float32)
      teacher = teacher_fn(lg, g, 0.5)
      for loss_and_grad in losses:
        val, grad = loss_and_grad(lg, teacher, mask)
        chex.assert_tree_all_finite((val, grad))
        assert float(val) > 0  # a lower bound: the loss is not vacuous
