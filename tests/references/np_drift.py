"""Independent float64 NumPy reference of the drift field (TokenDrift Sec. 3.2 / Alg. 2).

Explicit loops, written from the formulas; shares no code with tokendrift_jax.drift.
"""

from __future__ import annotations

import math

import numpy as np

TEMPS = (0.02, 0.05, 0.2)


# ----------------------------------------------------------------------------------------
# Independent reference: explicit loops, float64, written from the formulas (no shared code).
# ----------------------------------------------------------------------------------------
def np_drift(anchors, pos, neg, pos_ok, neg_ok, temps=TEMPS, a=1.0, r=1.0, eps=1e-8,
             normalization="joint", distance="squared"):
  """V [N, m] and s(τ) for per-anchor validity pos_ok [N, P], neg_ok [N, K] (bool)."""
  out = np_drift_parts(anchors, pos, neg, pos_ok, neg_ok, temps, a=a, r=r, eps=eps,
                       normalization=normalization, distance=distance)
  return out["v"], out["scales"]


def np_nearest(anchors, refs, ok, distance="squared"):
  """Per anchor, min_j D(h_i, y_j) over the valid j (ok [N, P]); None where none is valid."""
  h = np.asarray(anchors, np.float64)
  y = np.asarray(refs, np.float64)
  out = []
  for i in range(len(h)):
    best = None
    for j in range(len(y)):
      if ok[i, j]:
        d2 = float(np.sum((h[i] - y[j]) ** 2))
        d = d2 if distance == "squared" else math.sqrt(d2)
        best = d if best is None else min(best, d)
    out.append(best)
  return out


def np_diagnostics(anchors, pos, neg, pos_ok, neg_ok, temps=TEMPS, distance="squared",
                   **kw):
  """The study diagnostics of the field (nearest-neighbour distances, mean shares)."""
  parts = np_drift_parts(anchors, pos, neg, pos_ok, neg_ok, temps, distance=distance, **kw)

  def mean_valid(values):
    vals = [x for x in values if x is not None]
    return sum(vals) / len(vals) if vals else 0.0

  def share(v):
    n = len(v)
    mean = sum(v[i] for i in range(n)) / n
    second = sum(float(np.dot(v[i], v[i])) for i in range(n)) / n
    return float(np.dot(mean, mean)) / second if second > 0 else 0.0

  nn_pos = mean_valid(np_nearest(anchors, pos, pos_ok, distance))
  nn_neg = mean_valid(np_nearest(anchors, neg, neg_ok, distance))
  tau = np.array(parts["tau_eff"])
  return {"nn_dist_pos": nn_pos, "nn_dist_neg": nn_neg,
          "nn_pos_over_tau": nn_pos / tau, "nn_neg_over_tau": nn_neg / tau,
          "v_mean_share": share(parts["v"]),
          "v_tau_mean_share": np.array([share(vt) for vt in parts["v_tau"]]),
          "scale": parts["scales"], "tau_eff": tau,
          "v_norm": np.array([np.mean([np.linalg.norm(x) for x in vt])
                              for vt in parts["v_tau"]])}


def np_drift_parts(anchors, pos, neg, pos_ok, neg_ok, temps=TEMPS, a=1.0, r=1.0, eps=1e-8,
                   normalization="joint", distance="squared", scale_mode="rms",
                   fixed_scale=1.0, temperature_mode="absolute"):
  """V, the divisors, the unscaled V(τ) and the effective temperatures, as a dict.

  scale_mode "rms": V(τ) / sqrt(mean_i ‖V_i(τ)‖² + ε); "fixed": V(τ) / c_τ (fixed_scale, a
  number or one per temperature). temperature_mode "relative": τ × the median over anchors
  (with a valid positive) of the nearest-positive distance.
  """
  h = np.asarray(anchors, np.float64)
  u = np.asarray(pos, np.float64)
  v = np.asarray(neg, np.float64)
  n, m = h.shape
  num_p, num_k = len(u), len(v)

  def dist(x, y):
    d2 = float(np.sum((x - y) ** 2))
    return d2 if distance == "squared" else math.sqrt(d2)

  per_temp, scales, unscaled, taus = [], [], [], []
  if temperature_mode == "relative":
    nearest = [x for x in np_nearest(h, u, pos_ok, distance) if x is not None]
    unit = float(np.median(nearest)) if nearest else 1.0
  else:
    unit = 1.0
  fixed = (list(fixed_scale) if isinstance(fixed_scale, (list, tuple))
           else [fixed_scale])
  if len(fixed) == 1:
    fixed = fixed * len(temps)
  for t, tau in enumerate(temps):
    tau = tau * unit
    taus.append(tau)
    sp = [[-dist(h[i], u[j]) / tau for j in range(num_p)] for i in range(n)]
    sn = [[-dist(h[i], v[k]) / tau for k in range(num_k)] for i in range(n)]
    # Row softmax over each anchor's valid positives and negatives together.
    row_p = np.zeros((n, num_p))
    row_n = np.zeros((n, num_k))
    for i in range(n):
      vals = ([sp[i][j] for j in range(num_p) if pos_ok[i, j]]
              + [sn[i][k] for k in range(num_k) if neg_ok[i, k]])
      if not vals:
        continue
      top = max(vals)
      z = sum(math.exp(x - top) for x in vals)
      for j in range(num_p):
        if pos_ok[i, j]:
          row_p[i, j] = math.exp(sp[i][j] - top) / z
      for k in range(num_k):
        if neg_ok[i, k]:
          row_n[i, k] = math.exp(sn[i][k] - top) / z
    if normalization == "joint":
      wp, wn = row_p, row_n
    else:
      # Column softmax over the anchors for which a reference is valid, geometric mean,
      # then cross-weighting (Deng et al. Alg. 2).
      def col_softmax(s, ok, count):
        out = np.zeros((n, count))
        for j in range(count):
          vals = [s[i][j] for i in range(n) if ok[i, j]]
          if not vals:
            continue
          top = max(vals)
          z = sum(math.exp(x - top) for x in vals)
          for i in range(n):
            if ok[i, j]:
              out[i, j] = math.exp(s[i][j] - top) / z
        return out
      ap = np.sqrt(row_p * col_softmax(sp, pos_ok, num_p))
      an = np.sqrt(row_n * col_softmax(sn, neg_ok, num_k))
      wp = np.zeros_like(ap)
      wn = np.zeros_like(an)
      for i in range(n):
        wp[i] = ap[i] * an[i].sum()
        wn[i] = an[i] * ap[i].sum()
    vt = np.zeros((n, m))
    for i in range(n):
      for j in range(num_p):
        vt[i] += a * wp[i, j] * u[j]
      for k in range(num_k):
        vt[i] -= r * wn[i, k] * v[k]
    if scale_mode == "rms":
      s = math.sqrt(np.mean([np.dot(vt[i], vt[i]) for i in range(n)]) + eps)
    else:
      s = float(fixed[t])
    per_temp.append(vt / s)
    scales.append(s)
    unscaled.append(vt)
  return {"v": sum(per_temp) / len(temps), "scales": np.array(scales), "v_tau": unscaled,
          "tau_eff": taus}
