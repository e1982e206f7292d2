"""Drift field vs an independent float64 NumPy implementation of TokenDrift Sec. 3.2 / Alg. 2.

The field's math runs under ``chex.variants(with_jit=True, without_jit=True)`` on the
standard shape (cases 0-3, both normalisations; and the pairwise distances); the other
shapes, options and the hand-checkable 1x1x1 example run jitted only (without jit, each
new shape costs seconds of op-by-op compilation). ``test_variants_run_traced_and_untraced``
proves that a variants test executes its function once traced and once eagerly.
"""

from __future__ import annotations

import math
import unittest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from tests.references.np_drift import (  # independent float64 references
    TEMPS, np_diagnostics, np_drift, np_drift_parts)
from tokendrift_jax.drift import field

# float32 vs float64 on the same float32 inputs. The dominant error is in the affinities at
# τ = 0.02: a few float32 ulps in ‖h − y‖² (values ≤ 4) become ~1e-5 in a logit, i.e. a
# ~1e-5 relative change of weights whose references differ by ≲ 0.3, so ~3e-6 in V(τ); the
# measured worst case over these cases is ~3e-6. The bound 1e-5 holds with margin.
ATOL = 1e-5

# One compiled program per shape/option set (eager op-by-op dispatch is far slower here).
# Shapes are shared across tests so most calls hit the compilation cache (2 shared cores).
drift_field = jax.jit(field.drift_field,
                      static_argnames=("temperatures", "eps", "normalization", "distance",
                                       "scale_mode", "fixed_scale", "temperature_mode"))


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_sets(seed, n, p, k, m, spread=0.1):
  """Clustered unit features: positives and negatives around shifted cluster centres."""
  rng = np.random.default_rng(seed)
  centers = unit(rng.standard_normal((3, m)))
  pos = unit(centers[rng.integers(3, size=p)] + spread * rng.standard_normal((p, m)))
  neg = unit(centers[rng.integers(3, size=k)] + spread * rng.standard_normal((k, m))
             + 0.5 * spread)
  anchors = unit(neg[:n] + 0.02 * rng.standard_normal((n, m)))
  return (anchors.astype(np.float32), pos.astype(np.float32), neg.astype(np.float32), rng)


def expand(mask, n, size):
  """Reference-side expansion of a [size] / [n, size] / None mask to [n, size]."""
  if mask is None:
    return np.ones((n, size), bool)
  mask = np.asarray(mask)
  return np.tile(mask, (n, 1)) if mask.ndim == 1 else mask


# The standard shape used by most tests (N, P, K, m); masks are passed as [N, P] / [N, K].
N, P, K, M = 8, 24, 24, 16
FAR_TEMPS = (1e-3, 0.02, 0.2)
CASES = [
    # (N, P, K, m, temperatures, mask kind)
    (N, P, K, M, TEMPS, "all_valid"),
    (N, P, K, M, TEMPS, "self_and_queue"),
    (N, P, K, M, TEMPS, "per_anchor"),
    (N, P, K, M, TEMPS, "empty_anchor"),
    (4, 7, 13, 8, (0.02,), "per_ref"),
    (6, 33, 17, 24, FAR_TEMPS, "antipodal"),
]


def build_case(index):
  n, p, k, m, temps, kind = CASES[index]
  anchors, pos, neg, rng = make_sets(index, n, p, k, m)
  pm = np.ones((n, p), bool)
  nm = np.ones((n, k), bool)
  if kind == "self_and_queue":
    # Negatives = the anchors' own rows (self-excluded) + a partially filled "queue".
    neg[:n] = anchors
    nm[np.arange(n), np.arange(n)] = False
    nm[:, k - 7:] = False
    pm[:, p - 5:] = False
  elif kind == "per_anchor":
    pm, nm = rng.random((n, p)) < 0.6, rng.random((n, k)) < 0.6
  elif kind == "empty_anchor":
    pm, nm = rng.random((n, p)) < 0.5, rng.random((n, k)) < 0.5
    pm[2] = nm[2] = False  # anchor 2 has no valid reference at all: V_2 = 0 by definition
  elif kind == "per_ref":
    pm, nm = rng.random(p) < 0.7, rng.random(k) < 0.6
    pm[0] = nm[0] = True
  elif kind == "antipodal":
    # ‖h − v‖² = 4 references: logits down to −4/1e-3 = −4000 at the smallest τ.
    neg[:n] = -anchors
    pm, nm = rng.random((n, p)) < 0.8, rng.random((n, k)) < 0.8
  return anchors, pos, neg, pm, nm, temps


def ref_for(anchors, pos, neg, pm, nm, temps, **kw):
  n = len(anchors)
  return np_drift(anchors, pos, neg, expand(pm, n, len(pos)), expand(nm, n, len(neg)), temps,
                  **kw)


def check_reference_case(field_fn, index, normalization):
  """One case of CASES through ``field_fn`` (jitted or not) vs the float64 reference."""
  anchors, pos, neg, pm, nm, temps = build_case(index)
  v, diag = field_fn(anchors, pos, neg, pos_mask=pm, neg_mask=nm, temperatures=temps,
                     normalization=normalization)
  want, scales = ref_for(anchors, pos, neg, pm, nm, temps, normalization=normalization)
  chex.assert_shape(v, anchors.shape)
  chex.assert_type(v, jnp.float32)
  chex.assert_tree_all_finite((v, diag))
  chex.assert_trees_all_close(v, want, rtol=0, atol=ATOL)
  chex.assert_trees_all_close(diag["scale"], scales, rtol=1e-5, atol=0)
  if CASES[index][5] == "empty_anchor":
    chex.assert_trees_all_equal(v[2], jnp.zeros_like(v[2]))


_STATIC = ("temperatures", "eps", "normalization", "distance")


class FieldVariantsTest(chex.TestCase):
  """drift_field traced (jit) and eager on the standard shape and a hand-checkable case."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(index=(0, 1, 2, 3), normalization=("joint", "drifting_alg2"))
  def test_matches_float64_reference(self, index, normalization):
    check_reference_case(self.variant(field.drift_field, static_argnames=_STATIC), index,
                         normalization)

  @chex.variants(with_jit=True, without_jit=True)
  def test_pairwise_sq_dists(self):
    x, y = build_case(0)[1:3]
    want = ((x[:, None, :].astype(np.float64) - y[None].astype(np.float64)) ** 2).sum(-1)
    got = self.variant(field.pairwise_sq_dists)(x, y)
    chex.assert_shape(got, (P, K))
    # ‖x‖² + ‖y‖² − 2x·y of unit vectors in float32: cancellation leaves ~4 ulp(2) ≈ 1e-6.
    chex.assert_trees_all_close(got, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("normalization", ["joint", "drifting_alg2"])
@pytest.mark.parametrize("index", range(4, len(CASES)),
                         ids=[f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-{c[5]}" for c in CASES[4:]])
def test_matches_float64_reference_other_shapes(index, normalization):
  """The cases of other shapes, jitted only (the variants test covers cases 0-3)."""
  check_reference_case(drift_field, index, normalization)


@pytest.mark.parametrize("normalization", ["joint", "drifting_alg2"])
def test_euclidean_distance_and_ratios(normalization):
  """Table 6 ratios a:r and the original drifting code's plain Euclidean distance."""
  anchors, pos, neg, pm, nm, temps = build_case(1)
  for a, r, dist in [(1.0, 1.0, "euclidean"), (1.0, 0.0, "euclidean"), (2.0, 1.0, "squared"),
                     (1.0, 2.0, "squared"), (0.0, 1.0, "squared")]:
    v, _ = drift_field(anchors, pos, neg, pos_mask=pm, neg_mask=nm, attraction=a,
                       repulsion=r, normalization=normalization, distance=dist)
    want, _ = ref_for(anchors, pos, neg, pm, nm, temps, a=a, r=r,
                      normalization=normalization, distance=dist)
    chex.assert_trees_all_close({f"{a}:{r} {dist}": v}, {f"{a}:{r} {dist}": want}, rtol=0,
                                atol=ATOL)


@pytest.mark.parametrize("normalization", ["joint", "drifting_alg2"])
def test_reference_blocks_equal_one_set(normalization):
  """Sets given as blocks (current ∪ queue, never concatenated) == the reference on the union."""
  anchors, pos, neg, pm, nm, temps = build_case(1)
  pos_blocks, neg_blocks = (pos[:N], pos[N:]), (neg[:N], neg[N:])
  # Per-block masks of every supported form: None, [P_b] and [N, K_b].
  pos_masks = (None, pm[0, N:])
  neg_masks = (nm[:, :N], nm[0, N:])
  # Preconditions on the inputs (the per-block masks above express pm, nm), not a result check.
  assert np.all(pm[:, :N]) and np.all(pm == pm[0]) and np.all(nm[:, N:] == nm[0, N:])
  v, diag = drift_field(anchors, pos_blocks, neg_blocks, pos_mask=pos_masks,
                        neg_mask=neg_masks, normalization=normalization)
  want, scales = ref_for(anchors, pos, neg, pm, nm, temps, normalization=normalization)
  chex.assert_trees_all_close(v, want, rtol=0, atol=ATOL)
  chex.assert_trees_all_close(diag["scale"], scales, rtol=1e-5)
  with pytest.raises(ValueError, match="pos_mask must be None or a sequence of 2"):
    field.drift_field(anchors, pos_blocks, neg_blocks, pos_mask=pm)
  with pytest.raises(ValueError, match=r"neg_mask\[0\] must have shape"):
    field.drift_field(anchors, pos_blocks, neg_blocks, neg_mask=(nm, None))


def test_joint_weights_and_diagnostics():
  """Hand-checkable: one anchor, one positive, one negative at known distances.

  Jitted only: without jit every op of the field compiles once more for this 1x2 shape.
  """
  h = np.array([[1.0, 0.0]], np.float32)
  u = np.array([[0.0, 1.0]], np.float32)      # ‖h − u‖² = 2
  v = np.array([[-1.0, 0.0]], np.float32)     # ‖h − v‖² = 4
  tau = 0.5
  w_pos = 1.0 / (1.0 + math.exp(-(4 - 2) / tau))
  vt = w_pos * u[0] - (1 - w_pos) * v[0]
  drift, diag = drift_field(h, u, v, temperatures=(tau,))
  got = {"pos_weight_frac": diag["pos_weight_frac"], "v_norm": diag["v_norm"],
         "scale": diag["scale"], "drift": drift[0]}
  want = {"pos_weight_frac": [w_pos], "v_norm": [np.linalg.norm(vt)],
          "scale": [math.sqrt(vt @ vt + 1e-8)], "drift": vt / math.sqrt(vt @ vt + 1e-8)}
  chex.assert_trees_all_close(got, {k: np.asarray(w) for k, w in want.items()}, rtol=1e-6)


@pytest.mark.parametrize("normalization", ["joint", "drifting_alg2"])
def test_masked_entries_are_exactly_excluded(normalization):
  """Masked slots holding copies of the anchors (weight ~1 if read) or zeros change nothing."""
  anchors, pos, neg, pm, nm, _ = build_case(1)  # last 5 positives / 7 negatives masked
  pos_bad, neg_bad = pos.copy(), neg.copy()
  pos_bad[P - 5:] = np.concatenate([anchors[:4], np.zeros((1, M), np.float32)])
  neg_bad[K - 7:] = np.concatenate([anchors[:6], np.zeros((1, M), np.float32)])
  v_ok, d_ok = drift_field(anchors, pos, neg, pos_mask=pm, neg_mask=nm,
                           normalization=normalization)
  v_bad, d_bad = drift_field(anchors, pos_bad, neg_bad, pos_mask=pm, neg_mask=nm,
                             normalization=normalization)
  # Exactly zero weight times finite garbage: bit-identical results.
  chex.assert_trees_all_equal((v_bad, d_bad), (v_ok, d_ok))


@pytest.mark.parametrize("normalization", ["joint", "drifting_alg2"])
def test_antisymmetry_and_equilibrium(normalization):
  anchors, pos, neg, pm, nm, _ = build_case(2)
  for ar in (1.0, 2.5):
    v, _ = drift_field(anchors, pos, neg, pos_mask=pm, neg_mask=nm, attraction=ar,
                       repulsion=ar, normalization=normalization)
    v_swap, _ = drift_field(anchors, neg, pos, pos_mask=nm, neg_mask=pm, attraction=ar,
                            repulsion=ar, normalization=normalization)
    # Swapping the sets swaps identical float operations: exact up to XLA reassociation.
    chex.assert_trees_all_close(v_swap, -v, rtol=0, atol=1e-7)
    assert float(jnp.max(jnp.abs(v))) > 0.1  # a lower bound: the check is not vacuous
  # Positives identical to negatives (same features, same masks): V = 0 exactly (Cor. C.3).
  v_eq, diag = drift_field(anchors, neg, neg, pos_mask=nm, neg_mask=nm,
                           normalization=normalization)
  chex.assert_trees_all_equal(v_eq, jnp.zeros_like(v_eq))
  chex.assert_trees_all_close(diag["scale"], np.full(diag["scale"].shape, math.sqrt(1e-8)),
                              rtol=1e-6)


def test_gradients_through_field_are_finite():
  """Coincident masked points and the Euclidean sqrt: the where-guards keep gradients finite."""
  anchors, pos, neg, _, _, _ = build_case(0)
  refs = jnp.concatenate([jnp.asarray(anchors), pos])
  mask = jnp.arange(N + P) >= N

  @jax.jit
  def total(a):
    return jnp.sum(field.drift_field(a, refs, -a, pos_mask=mask, temperatures=FAR_TEMPS,
                                     distance="euclidean")[0])

  chex.assert_tree_all_finite(jax.grad(total)(jnp.asarray(anchors)))


def test_x64_trace_keeps_float32():
  anchors, pos, neg, pm, nm, _ = build_case(0)
  v32, _ = drift_field(anchors, pos, neg, pos_mask=pm, neg_mask=nm)
  with jax.enable_x64(True):
    v64mode, diag = jax.jit(field.drift_field)(anchors, pos, neg, pos_mask=pm, neg_mask=nm)
    chex.assert_type([v64mode, diag["scale"]], jnp.float32)
  chex.assert_trees_all_close(v64mode, v32, rtol=0, atol=1e-7)


def test_bad_inputs_raise():
  a = np.zeros((4, 8), np.float32)
  y = np.zeros((5, 8), np.float32)
  with pytest.raises(ValueError, match="pos_mask must have shape"):
    field.drift_field(a, y, y, pos_mask=np.ones((3,), bool))
  with pytest.raises(TypeError, match="neg_mask must be a bool"):
    field.drift_field(a, y, y, neg_mask=np.ones((5,), np.int32))
  with pytest.raises(ValueError, match="negatives feature size"):
    field.drift_field(a, y, np.zeros((5, 7), np.float32))
  with pytest.raises(ValueError, match="normalization"):
    field.drift_field(a, y, y, normalization="rows")
  with pytest.raises(ValueError, match="temperatures"):
    field.drift_field(a, y, y, temperatures=(0.1, 0.0))


# ---------------------------------------------------------------- study diagnostics

# Tolerances of the study diagnostics (float32 field vs the float64 reference, same inputs):
# * nearest-neighbour distances are minima of float32 ‖x‖² + ‖y‖² − 2x·y of unit vectors,
#   whose cancellation leaves ~4 ulp(2) ≈ 1e-6 (test_pairwise_sq_dists's bound, 2e-6); the
#   min and the mean over anchors add no error beyond one rounding. Divided by τ, the same
#   absolute error is divided by τ: compared as (diagnostic · τ) at 2e-6 + rounding.
NN_ATOL = 2e-6
# * the mean shares ‖mean_i v_i‖² / mean_i ‖v_i‖² are invariant to the scale of v. With v
#   normalised to unit RMS, an error δ per component (V: ≤ 1e-5 = ATOL against an RMS ≈ 1
#   in the final V, ~3e-6 relative in V(τ), see ATOL's comment) moves the ratio by at most
#   |∂/∂v| · δ ≤ 2(‖mean‖ + RMS)/RMS² · δ ≤ 4δ = 4e-5.
SHARE_ATOL = 4e-5
# (Measured worst over CASES: 1e-7 for the distances, 8e-7 for the shares.)


@pytest.mark.parametrize("index", [
    pytest.param(i, id=CASES[i][5], marks=() if i in (1, 3) else pytest.mark.slow)
    for i in (1, 2, 3, 4, 5)])
def test_study_diagnostics_match_float64_reference(index):
  """Nearest-neighbour distances (masked queue slots and self excluded, anchors without a
  valid reference left out) and the mean shares vs loops in float64, on the masked cases;
  V itself still matches the reference (the diagnostics do not touch it)."""
  anchors, pos, neg, pm, nm, temps = build_case(index)
  n = len(anchors)
  v, diag = drift_field(anchors, pos, neg, pos_mask=pm, neg_mask=nm, temperatures=temps)
  want_v, _ = ref_for(anchors, pos, neg, pm, nm, temps)
  chex.assert_trees_all_close(v, want_v, rtol=0, atol=ATOL)
  want = np_diagnostics(anchors, pos, neg, expand(pm, n, len(pos)), expand(nm, n, len(neg)),
                        temps)
  tau = np.asarray(temps)
  chex.assert_tree_all_finite(diag)
  chex.assert_trees_all_close(
      {k: diag[k] for k in ("nn_dist_pos", "nn_dist_neg")},
      {k: np.float32(want[k]) for k in ("nn_dist_pos", "nn_dist_neg")}, rtol=0, atol=NN_ATOL)
  chex.assert_trees_all_close(
      {k: np.asarray(diag[k]) * tau for k in ("nn_pos_over_tau", "nn_neg_over_tau")},
      {k: want[k] * tau for k in ("nn_pos_over_tau", "nn_neg_over_tau")},
      rtol=0, atol=NN_ATOL)
  chex.assert_trees_all_close(
      {k: diag[k] for k in ("v_mean_share", "v_tau_mean_share")},
      {k: np.asarray(want[k], np.float32) for k in ("v_mean_share", "v_tau_mean_share")},
      rtol=0, atol=SHARE_ATOL)
  # Not vacuous: the masks matter (the unmasked minimum is smaller: a masked slot is nearer).
  unmasked = np_diagnostics(anchors, pos, neg, np.ones_like(expand(pm, n, len(pos))),
                            np.ones_like(expand(nm, n, len(neg))), temps)
  if index in (1, 2, 3):
    assert unmasked["nn_dist_neg"] < want["nn_dist_neg"] - 10 * NN_ATOL
  assert 0.0 < float(diag["v_mean_share"]) < 1.0


def test_study_diagnostics_leave_out_anchors_without_references():
  """An anchor whose references are all masked is left out of the nearest-neighbour mean
  (not counted as 0 or inf), and with no valid negative at all the mean is a finite 0."""
  h = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  u = np.array([[0.6, 0.8], [-1.0, 0.0]], np.float32)
  pm = np.array([[True, True], [False, False]])          # anchor 1: no positive
  nm = np.array([[False, True], [False, False]])          # anchor 1: no negative
  _, diag = drift_field(h, u, h, pos_mask=pm, neg_mask=nm, temperatures=(0.5,))
  # Anchor 0: ‖(1,0) − (0.6,0.8)‖² = 0.16 + 0.64 = 0.8 (the nearer of 0.8 and 4).
  # Negatives: anchor 0 sees h_1 at ‖(1,−1)‖² = 2; anchor 1 sees none.
  got = {k: diag[k] for k in ("nn_dist_pos", "nn_dist_neg", "nn_pos_over_tau")}
  want = {"nn_dist_pos": np.float32(0.8), "nn_dist_neg": np.float32(2.0),
          "nn_pos_over_tau": np.array([1.6], np.float32)}
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=0)
  _, diag = drift_field(h, u, h, neg_mask=np.zeros((2, 2), bool), temperatures=(0.5,))
  chex.assert_trees_all_equal(diag["nn_dist_neg"], jnp.float32(0.0))


# ---------------------------------------------------------------- study options


@pytest.mark.parametrize("index,normalization,fixed_scale", [
    (1, "joint", (0.5, 1.5, 4.0)),
    pytest.param(3, "joint", 2.0, marks=pytest.mark.slow),
    pytest.param(2, "drifting_alg2", (3.0,), marks=pytest.mark.slow),
])
def test_fixed_scale_matches_float64_reference(index, normalization, fixed_scale):
  """scale_mode="fixed": V = mean_τ V(τ)/c_τ, c_τ one number or one per temperature."""
  anchors, pos, neg, pm, nm, temps = build_case(index)
  n = len(anchors)
  v, diag = drift_field(anchors, pos, neg, pos_mask=pm, neg_mask=nm, temperatures=temps,
                        normalization=normalization, scale_mode="fixed",
                        fixed_scale=fixed_scale)
  want = np_drift_parts(anchors, pos, neg, expand(pm, n, len(pos)), expand(nm, n, len(neg)),
                        temps, normalization=normalization, scale_mode="fixed",
                        fixed_scale=fixed_scale)
  # ATOL's comment: the float32 V(τ) is within ~3e-6 of the float64 one; dividing by c_τ
  # (one rounding) scales that error by 1/c_τ, so ATOL / min(c_τ, 1) bounds V here.
  c_min = min(np.atleast_1d(fixed_scale))
  chex.assert_trees_all_close(v, want["v"], rtol=0, atol=ATOL / min(c_min, 1.0))
  chex.assert_trees_all_close(diag["scale"], want["scales"].astype(np.float32), rtol=0,
                              atol=0)
  # Not the RMS field: the batch RMS of V(τ) is not c_τ here.
  v_rms, _ = ref_for(anchors, pos, neg, pm, nm, temps, normalization=normalization)
  assert np.max(np.abs(want["v"] - v_rms)) > 100 * ATOL


@pytest.mark.parametrize("index,normalization", [
    (1, "joint"), pytest.param(3, "joint", marks=pytest.mark.slow),
    pytest.param(2, "drifting_alg2", marks=pytest.mark.slow)])
def test_relative_temperatures_match_float64_reference(index, normalization):
  """temperature_mode="relative": τ_eff = τ × the median over anchors (with a valid
  positive) of the nearest-positive distance; V, τ_eff and the diagnostics vs float64.

  The multipliers 0.1, 0.25, 1 put τ_eff near the absolute cases' 0.02, 0.05, 0.2 (the
  median nearest-positive distance of these cases is 0.19-0.25), so ATOL's reasoning
  holds for the logits. The median adds the distances' ~1e-6 absolute error (~5e-6
  relative in τ_eff); it scales every logit of an anchor alike, so a weight moves by
  ~5e-6 × the spread of the logits that carry weight (a few units at these τ_eff): ≲ 3e-5
  relative, ~3e-6 in V(τ) of norm ≲ 0.3, inside ATOL.
  """
  anchors, pos, neg, pm, nm, _ = build_case(index)
  temps = (0.1, 0.25, 1.0)
  n = len(anchors)
  v, diag = drift_field(anchors, pos, neg, pos_mask=pm, neg_mask=nm, temperatures=temps,
                        normalization=normalization, temperature_mode="relative")
  pm_, nm_ = expand(pm, n, len(pos)), expand(nm, n, len(neg))
  want = np_drift_parts(anchors, pos, neg, pm_, nm_, temps, normalization=normalization,
                        temperature_mode="relative")
  chex.assert_trees_all_close(v, want["v"], rtol=0, atol=ATOL)
  # τ_eff = τ · d̃ with d̃ a float32 distance (NN_ATOL absolute on d̃ ≈ 0.2: 1e-5 relative).
  chex.assert_trees_all_close(diag["tau_eff"], np.asarray(want["tau_eff"], np.float32),
                              rtol=NN_ATOL / 0.19, atol=0)
  ref = np_diagnostics(anchors, pos, neg, pm_, nm_, temps, normalization=normalization,
                       temperature_mode="relative")
  chex.assert_trees_all_close(diag["scale"], ref["scale"].astype(np.float32), rtol=1e-5)
  chex.assert_trees_all_close(
      {k: np.asarray(diag[k]) * ref["tau_eff"] for k in ("nn_pos_over_tau", "nn_neg_over_tau")},
      {k: ref[k] * ref["tau_eff"] for k in ("nn_pos_over_tau", "nn_neg_over_tau")},
      rtol=2 * NN_ATOL / 0.19, atol=0)
  # Not vacuous: the unit is not 1, and the absolute field at these τ differs.
  assert abs(want["tau_eff"][0] / temps[0] - 1.0) > 0.5
  v_abs, _ = ref_for(anchors, pos, neg, pm, nm, temps, normalization=normalization)
  assert np.max(np.abs(want["v"] - v_abs)) > 100 * ATOL


def test_relative_unit_median_and_fallbacks():
  """Hand-checkable d̃: the median of the valid anchors only (an anchor without a valid
  positive left out), 1 (absolute) when no anchor has one, and the default program's
  τ_eff is τ itself."""
  h = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
  u = np.array([[0.8, 0.6], [0.0, 0.5]], np.float32)
  # Nearest-positive squared distances: h0: 0.04 + 0.36 = 0.4; h1: 0.25 (to (0, 0.5));
  # h2: masked out. Median of {0.4, 0.25} = 0.325.
  pm = np.array([[True, True], [True, True], [False, False]])
  _, diag = drift_field(h, u, h, pos_mask=pm, neg_mask=~np.eye(3, dtype=bool),
                        temperatures=(0.5, 2.0), temperature_mode="relative")
  chex.assert_trees_all_close(diag["tau_eff"], np.array([0.1625, 0.65], np.float32),
                              rtol=1e-6, atol=0)
  _, diag = drift_field(h, u, h, pos_mask=np.zeros((3, 2), bool),
                        neg_mask=~np.eye(3, dtype=bool), temperatures=(0.5, 2.0),
                        temperature_mode="relative")
  chex.assert_trees_all_equal(diag["tau_eff"], np.array([0.5, 2.0], np.float32))
  _, diag = drift_field(h, u, h, pos_mask=pm, neg_mask=~np.eye(3, dtype=bool),
                        temperatures=(0.5, 2.0))
  chex.assert_trees_all_equal(diag["tau_eff"], np.array([0.5, 2.0], np.float32))


def test_study_option_errors():
  a = np.zeros((4, 8), np.float32)
  with pytest.raises(ValueError, match="scale_mode"):
    field.drift_field(a, a, a, scale_mode="batch")
  with pytest.raises(ValueError, match="temperature_mode"):
    field.drift_field(a, a, a, temperature_mode="median")
  with pytest.raises(ValueError, match="fixed_scale"):
    field.drift_field(a, a, a, scale_mode="fixed", fixed_scale=(1.0, 2.0))
  with pytest.raises(ValueError, match="fixed_scale"):
    field.drift_field(a, a, a, scale_mode="fixed", fixed_scale=0.0)


# ---------------------------------------------------------------- the variants run twice


def test_variants_run_traced_and_untraced():
  """A chex.variants(with_jit, without_jit) test runs its function once traced, once eager.

  A small chex.TestCase is run through unittest; the function it wraps with
  ``self.variant`` records whether its input is a tracer each time it executes.
  """
  runs = []

  def recorded_dists(x, y):
    runs.append(isinstance(x, jax.core.Tracer))
    return field.pairwise_sq_dists(x, y)

  class Probe(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_probe(self):
      x = np.array([[1.0, 0.0]], np.float32)
      d = self.variant(recorded_dists)(x, np.array([[0.0, 1.0], [-1.0, 0.0]], np.float32))
      chex.assert_trees_all_close(d, np.array([[2.0, 4.0]]), rtol=0, atol=1e-6)

  suite = unittest.defaultTestLoader.loadTestsFromTestCase(Probe)
  result = unittest.TestResult()
  suite.run(result)
  assert result.wasSuccessful(), result.errors + result.failures
  assert result.testsRun == 2
  assert sorted(runs) == [False, True], runs  # one untraced and one traced execution
