"""Anti-symmetric multi-temperature drift field (TokenDrift Sec. 3.2, App. F; drifting Alg. 2).

For anchors h_i (generated features), positives u_j (real) and negatives v_k (generated), at a
temperature τ the affinities are

  s⁺_ij = −D(h_i, u_j) / τ,   s⁻_ik = −D(h_i, v_k) / τ,

with D = ‖·‖² (the TokenDrift paper, default) or D = ‖·‖ (the original drifting code's ``cdist``).
Two normalisations turn affinities into weights:

* ``"joint"`` (TokenDrift Sec. 3.2, the default): one softmax per anchor over the union of its
  valid positives and negatives, ``[W⁺_i, W⁻_i] = softmax_j([s⁺_i, s⁻_i])``.
* ``"drifting_alg2"`` (Deng et al. 2026, arXiv 2602.04770, Algorithm 2 / App. A.1): on the
  concatenated logit matrix [s⁺, s⁻] of shape [N, P+K], a softmax over references (rows,
  ``A_row``) and a softmax over anchors (columns, ``A_col``), combined as the geometric mean
  ``A = sqrt(A_row · A_col)``; then cross-weighting ``W⁺_ij = A⁺_ij Σ_k A⁻_ik`` and
  ``W⁻_ik = A⁻_ik Σ_j A⁺_ij``. Alg. 2's self-exclusion ``dist_neg += 1e6·I`` makes the
  self weight exp(−1e6/τ) = 0, i.e. exactly the masking used here. Alg. 2 uses the plain
  Euclidean distance; pass ``distance="euclidean"`` together with this normalisation to
  reproduce it, or keep the TokenDrift squared distance.

Then V(τ)_i = a Σ_j W⁺_ij u_j − r Σ_k W⁻_ik v_k (a = ``attraction``, r = ``repulsion``; the
Table 6 ratios b⁺ : b⁻), the per-temperature scalar scale s(τ) = sqrt(mean_i ‖V_i(τ)‖² + ε)
and V_i = mean_τ V_i(τ) / s(τ) (Sec. 3.2, "Multi-temperature drift"; App. F).

Two study options (issue 24 item 3; the defaults are the paper's program, unchanged):

* ``scale_mode="fixed"``: s(τ) = c_τ, a constant (``fixed_scale``: one number or one per
  temperature) instead of the batch RMS. The RMS scale keeps mean_i ‖V_i(τ)/s(τ)‖² ≈ 1 at
  every step, so the step size cannot shrink near equilibrium; with a constant it shrinks
  with ‖V(τ)‖. Set c_τ to the RMS scale measured early in a run (the ``scale/tau=…``
  metric) to start with the paper's step size.
* ``temperature_mode="relative"``: τ_eff = τ × d̃, with d̃ the median over anchors (those
  with a valid positive) of the nearest-positive distance min_j D(h_i, u_j), computed under
  stop_gradient; the affinities become s = −D/τ_eff. The median rather than the mean: the
  temperature is shared by the whole batch, and one outlying anchor (a collapsed or far-off
  sample, whose nearest positive is far) would move a mean, not the median. With no anchor
  having a valid positive d̃ = 1 (absolute); d̃ is floored at ``RELATIVE_UNIT_FLOOR``.

Definitions chosen here (the papers are silent on them):

* ε = 1e-8 (``DEFAULT_EPS``): s(τ) ≥ 1e-4, so V = 0 stays exactly 0 at equilibrium and a
  tiny field is not blown up by more than 1e4.
* mean_i in s(τ) runs over all N anchors passed in, i.e. the whole gathered global
  micro-batch. Computing it on gathered anchors (not per device) is what makes the sharded
  step equal the single-device one. An anchor with no valid reference gets W = 0, so
  V_i(τ) = 0 and V_i = 0; it still counts in the mean (contributing 0).
* Masked references get weight exactly 0: logits are never compared with −∞ after the
  shift (the max is taken over valid entries only and masked entries are replaced before
  the exponential), so there is no −∞ − (−∞) and no overflow at τ = 0.02.
* Distances use the expansion ‖x‖² + ‖y‖² − 2 x·y with the dot at
  ``Precision.HIGHEST``: at τ = 0.02 a TF32 dot (the GPU default for float32) would put
  ~1e-3/0.02 = 0.05 of error into every logit.

All functions are pure and jittable; nothing here applies stop-gradient (the objective does).
"""

from __future__ import annotations

import functools
from typing import Sequence, Union

import chex
import jax
import jax.numpy as jnp

NORMALIZATIONS = ("joint", "drifting_alg2")
DISTANCES = ("squared", "euclidean")
SCALE_MODES = ("rms", "fixed")
TEMPERATURE_MODES = ("absolute", "relative")
# temperature_mode="relative": the floor of the nearest-neighbour unit, so that τ_eff > 0
# even if most anchors sit on a positive; 1/(0.02·1e-12)·D stays finite in float32 for any
# D < 6e24, and the kernel is then the hard nearest-neighbour assignment.
RELATIVE_UNIT_FLOOR = 1e-12
DEFAULT_TEMPERATURES = (0.02, 0.05, 0.2)
DEFAULT_EPS = 1e-8
# The keys of drift_field's diagnostics: one value per temperature, and scalars.
PER_TEMPERATURE_DIAGNOSTICS = ("v_norm", "scale", "pos_weight_frac", "tau_eff",
                               "nn_pos_over_tau", "nn_neg_over_tau", "v_tau_mean_share")
SCALAR_DIAGNOSTICS = ("v_rms", "nn_dist_pos", "nn_dist_neg", "v_mean_share")

_HIGHEST = jax.lax.Precision.HIGHEST


def pairwise_sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
  """‖x_i − y_j‖² for x [N, m], y [P, m] -> [N, P], clamped at 0 (rounding can go below)."""
  chex.assert_rank([x, y], 2)
  chex.assert_equal_shape([x, y], dims=1)
  xx = jnp.sum(x * x, axis=-1)[:, None]
  yy = jnp.sum(y * y, axis=-1)[None, :]
  xy = jnp.einsum("nm,pm->np", x, y, precision=_HIGHEST)
  return jnp.maximum(xx + yy - 2.0 * xy, 0.0)


def _distance(x: jax.Array, y: jax.Array, distance: str) -> jax.Array:
  d2 = pairwise_sq_dists(x, y)
  if distance == "squared":
    return d2
  # Euclidean: sqrt with a zero-safe branch so a coincident pair never yields an inf/NaN
  # derivative if a caller differentiates through the field.
  pos = d2 > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)


def _masked_max(s: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
  """Max over valid entries along ``axis`` (keepdims); −inf where none is valid."""
  return jnp.max(jnp.where(mask, s, -jnp.inf), axis=axis, keepdims=True)


def _finite_or_zero(m: jax.Array) -> jax.Array:
  return jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m)))


def _masked_exp(s: jax.Array, shift: jax.Array, mask: jax.Array) -> jax.Array:
  """exp(s − shift) on valid entries, exactly 0 elsewhere (masked entries never exponentiated)."""
  return jnp.where(mask, jnp.exp(jnp.where(mask, s - shift, 0.0)), 0.0)


def _safe_log(z: jax.Array) -> jax.Array:
  return jnp.log(jnp.where(z > 0, z, 1.0))


def _safe_inv(z: jax.Array) -> jax.Array:
  return jnp.where(z > 0, 1.0 / jnp.where(z > 0, z, 1.0), 0.0)


def _sum_rows(blocks) -> jax.Array:
  """Σ over the reference axis of every block: [T, N, 1]."""
  return sum(jnp.sum(b, axis=-1, keepdims=True) for b in blocks)


def _row_shift(logits, masks) -> jax.Array:
  """Per-anchor max over the valid entries of all blocks ([T, N, 1]; 0 if none is valid)."""
  top = functools.reduce(jnp.maximum, [_masked_max(s, m, -1) for s, m in zip(logits, masks)])
  return _finite_or_zero(top)


def _joint_weights(sp, sn, mp, mn):
  """One softmax per anchor over valid positives ∪ negatives (lists of [T, N, P_b] blocks)."""
  shift = _row_shift(sp + sn, mp + mn)
  ep = [_masked_exp(s, shift, m) for s, m in zip(sp, mp)]
  en = [_masked_exp(s, shift, m) for s, m in zip(sn, mn)]
  # A row with any valid entry has z >= 1 (its maximum contributes exp(0)); an empty row
  # has z = 0 and gets all-zero weights.
  inv = _safe_inv(_sum_rows(ep) + _sum_rows(en))
  wp = [e * inv for e in ep]
  wn = [e * inv for e in en]
  return wp, wn, wp, wn


def _alg2_weights(sp, sn, mp, mn):
  """Drifting Alg. 2: sqrt(row-softmax · column-softmax), then cross-weighting.

  Computed in the log domain, log A = s − ½(lse_row + lse_col), so small row and column
  probabilities are not multiplied (and underflowed) before the square root. Columns
  (references) are independent, so the column softmax runs block by block.
  """
  row_shift = _row_shift(sp + sn, mp + mn)
  z_row = _sum_rows([_masked_exp(s, row_shift, m) for s, m in zip(sp + sn, mp + mn)])
  lse_row = row_shift + _safe_log(z_row)

  def geo_mean(s, m):
    col_shift = _finite_or_zero(_masked_max(s, m, -2))
    lse_col = col_shift + _safe_log(
        jnp.sum(_masked_exp(s, col_shift, m), -2, keepdims=True))
    return _masked_exp(s, 0.5 * (lse_row + lse_col), m)

  ap = [geo_mean(s, m) for s, m in zip(sp, mp)]
  an = [geo_mean(s, m) for s, m in zip(sn, mn)]
  sum_ap, sum_an = _sum_rows(ap), _sum_rows(an)
  return [a * sum_an for a in ap], [a * sum_ap for a in an], ap, an


def _mask_3d(mask, n: int, size: int, name: str) -> jax.Array:
  """Validates a [size] or [n, size] bool mask; returns it broadcastable to [1, n, size]."""
  if mask is None:
    return jnp.ones((1, 1, size), dtype=bool)
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise TypeError(f"{name} must be a bool array, got dtype {mask.dtype}")
  if mask.shape == (size,):
    return mask[None, None, :]
  if mask.shape == (n, size):
    return mask[None, :, :]
  raise ValueError(
      f"{name} must have shape ({size},) or ({n}, {size}) (per reference or per "
      f"anchor x reference), got {mask.shape}")


def _blocks(refs, masks, anchors, name: str):
  """Normalises one reference set to lists of [P_b, m] arrays and [1, N|1, P_b] masks."""
  if isinstance(refs, (list, tuple)):
    arrays = [jnp.asarray(r) for r in refs]
    if masks is None:
      masks = [None] * len(arrays)
    elif not isinstance(masks, (list, tuple)) or len(masks) != len(arrays):
      raise ValueError(f"{name} is a sequence of {len(arrays)} blocks, so {name[:3]}_mask "
                       f"must be None or a sequence of {len(arrays)} masks")
  else:
    arrays, masks = [jnp.asarray(refs)], [masks]
  if not arrays:
    raise ValueError(f"{name} must contain at least one block")
  n, m = anchors.shape
  out_masks = []
  for b, (x, mask) in enumerate(zip(arrays, masks)):
    label = f"{name}[{b}]" if len(arrays) > 1 else name
    if x.ndim != 2:
      raise ValueError(f"{label} must be 2-D [count, m], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{label} must be floating, got dtype {x.dtype}")
    if x.shape[1] != m:
      raise ValueError(f"{label} feature size {x.shape[1]} != anchors feature size {m} "
                       f"(anchors {anchors.shape}, {label} {x.shape})")
    mask_label = f"{name[:3]}_mask" + (f"[{b}]" if len(arrays) > 1 else "")
    out_masks.append(_mask_3d(mask, n, x.shape[0], mask_label))
  return arrays, out_masks


RefSet = Union[jax.Array, Sequence[jax.Array]]
MaskSet = Union[jax.Array, None, Sequence[Union[jax.Array, None]]]


def drift_field(
    anchors: jax.Array,
    positives: RefSet,
    negatives: RefSet,
    *,
    pos_mask: MaskSet = None,
    neg_mask: MaskSet = None,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    attraction: float = 1.0,
    repulsion: float = 1.0,
    eps: float = DEFAULT_EPS,
    normalization: str = "joint",
    distance: str = "squared",
    scale_mode: str = "rms",
    fixed_scale: Union[float, Sequence[float]] = 1.0,
    temperature_mode: str = "absolute",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Multi-temperature drift V for every anchor (TokenDrift Sec. 3.2, Alg. 1 line 7).

  Args:
    anchors: [N, m] float, the generated features h_i (all anchors of the global micro-batch).
    positives: [P, m] float real references u_j, or a sequence of blocks [P_b, m] that
      together form the set (e.g. (current u, Q_real buffer)); blocks are never
      concatenated, which saves a copy of a 65k-row queue per step.
    negatives: [K, m] float generated references v_k, or a sequence of blocks.
    pos_mask: bool [P] (per reference) or [N, P] (per anchor x reference); True = valid;
      ``None`` = all valid. For blocks: None or a sequence with one such mask (or None) per
      block.
    neg_mask: likewise for negatives (self-exclusion is an [N, K_b] mask).
    temperatures: the set T of τ values (static Python floats, each > 0).
    attraction: a, the factor on Σ W⁺ u (Table 6's b⁺).
    repulsion: r, the factor on Σ W⁻ v (Table 6's b⁻).
    eps: ε in s(τ) = sqrt(mean_i ‖V_i(τ)‖² + ε).
    normalization: ``"joint"`` (TokenDrift) or ``"drifting_alg2"`` (Deng et al. Alg. 2).
    distance: ``"squared"`` (D = ‖h − y‖², TokenDrift) or ``"euclidean"`` (D = ‖h − y‖).
    scale_mode: ``"rms"`` (s(τ) the batch RMS, the paper) or ``"fixed"`` (s(τ) = c_τ).
    fixed_scale: c_τ for ``scale_mode="fixed"``: a number > 0 for every temperature, or a
      sequence of one or len(T) numbers (static Python floats); ignored for ``"rms"``.
    temperature_mode: ``"absolute"`` (τ as given, the paper) or ``"relative"`` (τ × the
      batch's median nearest-positive distance; see the module docstring).

  Returns:
    V: [N, m] in the promoted float dtype (at least float32) of the inputs.
    diagnostics: dict of arrays. Per temperature ([len(T)], in the order of
      ``temperatures``; ``PER_TEMPERATURE_DIAGNOSTICS``):

      * ``v_norm``: mean_i ‖V_i(τ)‖, the drift's norm *before* normalisation (the
        quantity the RMS scale divides out; it can shrink near equilibrium while V cannot);
      * ``scale``: s(τ), the divisor of V(τ) (c_τ for ``scale_mode="fixed"``);
      * ``tau_eff``: the temperature used, τ (absolute) or τ × d̃ (relative);
      * ``pos_weight_frac``: the mean over anchors with a valid reference of
        Σ⁺/(Σ⁺ + Σ⁻) of the normalised kernel mass (joint: the weights W, which sum to 1;
        Alg. 2: A before cross-weighting, since after it Σ W⁺ = Σ W⁻ always);
      * ``nn_pos_over_tau`` / ``nn_neg_over_tau``: ``nn_dist_pos`` / τ_eff and
        ``nn_dist_neg`` / τ_eff, i.e. minus the largest logit s⁺ / s⁻ of a typical anchor:
        how sharp the kernel is at this τ (≫ 1: one neighbour takes all the weight);
      * ``v_tau_mean_share``: ‖mean_i V_i(τ)‖² / mean_i ‖V_i(τ)‖², the share of V(τ)'s
        second moment explained by its batch mean (1: every anchor is pushed the same
        way, a global shift; ≈ 1/N: per-anchor directions; 0 where V(τ) = 0).

      Scalars (``SCALAR_DIAGNOSTICS``):

      * ``v_rms``: sqrt(mean_i ‖V_i‖²);
      * ``nn_dist_pos`` / ``nn_dist_neg``: mean over anchors of the nearest-neighbour
        distance min_j D(h_i, u_j) over the *valid* positives (resp. min_k D(h_i, v_k)
        over the valid negatives: masked queue slots and the anchor itself excluded), in
        the field's own D (``distance``: squared by default); anchors with no valid
        reference are left out (0 if none has one);
      * ``v_mean_share``: ``v_tau_mean_share``'s ratio for the final V.

      All are computed on the anchors passed in (the gathered global micro-batch), under
      stop_gradient; V does not depend on them.
  """
  anchors = jnp.asarray(anchors)
  if anchors.ndim != 2:
    raise ValueError(f"anchors must be 2-D [count, m], got shape {anchors.shape}")
  if not jnp.issubdtype(anchors.dtype, jnp.floating):
    raise TypeError(f"anchors must be floating, got dtype {anchors.dtype}")
  pos, mp = _blocks(positives, pos_mask, anchors, "positives")
  neg, mn = _blocks(negatives, neg_mask, anchors, "negatives")
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  if distance not in DISTANCES:
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
  temps = tuple(float(t) for t in temperatures)
  if not temps or any(not t > 0 for t in temps):
    raise ValueError(f"temperatures must be a non-empty sequence of positive numbers, got "
                     f"{tuple(temperatures)}")
  if not eps >= 0:
    raise ValueError(f"eps must be >= 0, got {eps}")
  if scale_mode not in SCALE_MODES:
    raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
  if temperature_mode not in TEMPERATURE_MODES:
    raise ValueError(f"temperature_mode must be one of {TEMPERATURE_MODES}, got "
                     f"{temperature_mode!r}")
  fixed = fixed_scales(fixed_scale, len(temps))

  dtype = jnp.promote_types(jnp.result_type(anchors, *pos, *neg), jnp.float32)
  h = anchors.astype(dtype)
  pos = [x.astype(dtype) for x in pos]
  neg = [x.astype(dtype) for x in neg]

  dp = [_distance(h, y, distance) for y in pos]                         # [N, P_b]
  dn = [_distance(h, y, distance) for y in neg]                         # [N, K_b]
  nearest_pos = _nearest([jax.lax.stop_gradient(d) for d in dp], mp)    # [N], inf: none
  if temperature_mode == "absolute":
    tau = jnp.asarray(temps, dtype=dtype)                               # [T]
  else:
    tau = jnp.asarray(temps, dtype=dtype) * _relative_unit(nearest_pos)
  inv_tau = (1.0 / tau)[:, None, None]                                  # [T, 1, 1]
  sp = [-d[None] * inv_tau for d in dp]                                 # [T, N, P_b]
  sn = [-d[None] * inv_tau for d in dn]                                 # [T, N, K_b]
  weights = _joint_weights if normalization == "joint" else _alg2_weights
  wp, wn, mass_p, mass_n = weights(sp, sn, mp, mn)

  # One pass over each (possibly 65k-row) reference array for all temperatures.
  bp = sum(jnp.einsum("tnp,pm->tnm", w, y, precision=_HIGHEST) for w, y in zip(wp, pos))
  bn = sum(jnp.einsum("tnk,km->tnm", w, y, precision=_HIGHEST) for w, y in zip(wn, neg))
  v_tau = attraction * bp - repulsion * bn                             # [T, N, m]

  sq = jnp.sum(v_tau * v_tau, axis=-1)                                  # [T, N]
  if scale_mode == "rms":
    scale = jnp.sqrt(jnp.mean(sq, axis=-1) + jnp.asarray(eps, dtype))   # [T]
  else:
    scale = jnp.asarray(fixed, dtype)                                   # [T]
  drift = jnp.mean(v_tau / scale[:, None, None], axis=0)                # [N, m]

  sum_p = _sum_rows(mass_p)[..., 0]                                     # [T, N]
  sum_n = _sum_rows(mass_n)[..., 0]
  tot = sum_p + sum_n
  has_ref = tot > 0
  n_valid = jnp.maximum(jnp.sum(has_ref, axis=-1), 1).astype(dtype)
  frac = jnp.sum(jnp.where(has_ref, sum_p * _safe_inv(tot), 0.0), axis=-1) / n_valid
  diagnostics = {
      "v_norm": jnp.mean(jnp.sqrt(sq), axis=-1),
      "scale": scale,
      "pos_weight_frac": frac,
      "v_rms": jnp.sqrt(jnp.mean(jnp.sum(drift * drift, axis=-1))),
  }
  diagnostics.update(_study_diagnostics(nearest_pos, dn, mn, v_tau, drift, tau))
  # Output contract (trace time): V like the anchors, one diagnostic per temperature.
  chex.assert_shape(drift, anchors.shape)
  chex.assert_shape([diagnostics[k] for k in PER_TEMPERATURE_DIAGNOSTICS], (len(temps),))
  chex.assert_shape([diagnostics[k] for k in SCALAR_DIAGNOSTICS], ())
  return drift, diagnostics


def fixed_scales(fixed_scale, n_temperatures: int) -> tuple[float, ...]:
  """c_τ per temperature from one number or a sequence of 1 or ``n_temperatures`` (> 0)."""
  if isinstance(fixed_scale, (int, float)) and not isinstance(fixed_scale, bool):
    values = (float(fixed_scale),)
  else:
    values = tuple(float(c) for c in fixed_scale)
  if len(values) == 1:
    values = values * n_temperatures
  if len(values) != n_temperatures or not all(c > 0 and c < float("inf") for c in values):
    raise ValueError(f"fixed_scale must be one finite number > 0 or one per temperature "
                     f"({n_temperatures}), got {fixed_scale!r}")
  return values


def _nearest(dists, masks) -> jax.Array:
  """min_j D_ij over the valid j of all blocks, per anchor: [N]; +inf where none is valid.

  ``dists``: [N, P_b] blocks; ``masks``: their [1, N|1, P_b] masks.
  """
  return functools.reduce(jnp.minimum, [
      jnp.min(jnp.where(m[0], d, jnp.inf), axis=-1) for d, m in zip(dists, masks)])


def _relative_unit(nearest: jax.Array) -> jax.Array:
  """d̃: median over the anchors with a valid positive of their nearest-positive distance.

  1 when no anchor has one (the absolute temperatures), floored at RELATIVE_UNIT_FLOOR;
  stop-gradient (the temperature is a statistic of the batch, not a path for gradients).
  """
  nearest = jax.lax.stop_gradient(nearest)
  med = jnp.nanmedian(jnp.where(jnp.isfinite(nearest), nearest, jnp.nan))
  med = jnp.where(jnp.isnan(med), jnp.ones_like(med), med)
  return jnp.maximum(med, jnp.asarray(RELATIVE_UNIT_FLOOR, med.dtype))


def _masked_mean_nn(nearest: jax.Array) -> jax.Array:
  """Mean over anchors of ``nearest`` [N], leaving out the +inf (no valid reference) ones.

  With none valid the result is 0, a finite value: the trainer stops on non-finite
  metrics, and this happens only before any reference exists (one anchor, empty queue).
  """
  ok = jnp.isfinite(nearest)
  count = jnp.sum(ok)
  return jnp.sum(jnp.where(ok, nearest, 0.0)) / jnp.maximum(count, 1).astype(nearest.dtype)


def _mean_share(v: jax.Array) -> jax.Array:
  """‖mean_i v_i‖² / mean_i ‖v_i‖² over the anchor axis (−2) of v [..., N, m]; 0 if v = 0."""
  mean = jnp.mean(v, axis=-2)
  num = jnp.sum(mean * mean, axis=-1)
  den = jnp.mean(jnp.sum(v * v, axis=-1), axis=-1)
  return num * _safe_inv(den)


def _study_diagnostics(nearest_pos, dn, mn, v_tau, drift, tau) -> dict[str, jax.Array]:
  """The diagnostics of the progressive-vs-transient study (issue 24 item 3), under
  stop_gradient: they are read, never differentiated, and V does not depend on them
  (``nearest_pos`` is the stop-gradient nearest-positive distance [N]; ``tau`` the
  effective temperatures [T])."""
  sg = jax.lax.stop_gradient
  nn_pos = _masked_mean_nn(sg(nearest_pos))
  nn_neg = _masked_mean_nn(_nearest([sg(d) for d in dn], mn))
  tau = sg(tau)
  return {
      "tau_eff": tau,
      "nn_dist_pos": nn_pos,
      "nn_dist_neg": nn_neg,
      "nn_pos_over_tau": nn_pos / tau,
      "nn_neg_over_tau": nn_neg / tau,
      "v_mean_share": _mean_share(sg(drift)),
      "v_tau_mean_share": _mean_share(sg(v_tau)),
  }
