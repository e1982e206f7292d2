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
  h = np.asarray(anchors, np.float64)
  u = np.asarray(pos, np.float64)
  v = np.asarray(neg, np.float64)
  n, m = h.shape
  num_p, num_k = len(u), len(v)

  def dist(x, y):
    d2 = float(np.sum((x - y) ** 2))
    return d2 if distance == "squared" else math.sqrt(d2)

  per_temp, scales = [], []
  for tau in temps:
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
    s = math.sqrt(np.mean([np.dot(vt[i], vt[i]) for i in range(n)]) + eps)
    per_temp.append(vt / s)
    scales.append(s)
  return sum(per_temp) / len(temps), np.array(scales)
