"""TokenDrift objectives: reference sets, fixed-point and mirror losses (Sec. 3.3-3.5, App. C-D).

Per micro-step (Alg. 1), with the global micro-batch of N = B generated features h and clean
features u (gathered over devices):

  positives  U = gather(u) ∪ Q_real                      (mask: queue slots that are filled)
  negatives  H = gather(h) ∪ Q_gen, minus h_i for anchor i (masks [N, N] and [Q])
  V_i = Drift_T(h_i, sg(U), sg(H \\ {h_i}))              (``drift.field.drift_field``)

Objectives (``DriftConfig.objective``):

* ``"fixed_point"`` (default, Sec. 3.3): L = (1/2B) Σ_i ‖h_i − sg(h_i + αV_i)‖², so
  ∇_h L = −αV/B and ∇_ℓ L = −(α/B) Jᵀ V (Prop. C.2).
* ``"mirror_kl"`` / ``"mirror_mse"`` (Sec. 3.4, App. D): g = ∇_ℓ ⟨h(ℓ), sg(V)⟩ = Jᵀ V (one
  vjp through the feature map), ℓ* = sg(ℓ + ηg), p* = softmax(ℓ*), and
  (1/B) Σ_i Σ_{t∈M_i} KL(p*_{i,t} ‖ p_{i,t}) or (1/B) Σ_i Σ_{t∈M_i} ‖ℓ*_{i,t} − ℓ_{i,t}‖².
  η (``mirror_eta``) is not given in the paper; default 1.0. For reference: with
  η = α/2 the MSE variant's logit gradient, −(2η/B) Jᵀ V, equals the fixed-point one, and
  the KL variant's gradient p − p* ≈ −η (diag p − p pᵀ) g is the same direction
  preconditioned by the softmax Fisher matrix.

Each may add ``base_loss_weight`` × the backbone's own diffusion loss (Table 4, "w/").

Here ℓ means the logits whose softmax is the backbone's predicted p (for MDLM: the SUBS
log-probabilities, whose "impossible" entries are −1e6; −inf entries are also handled: they
contribute zero to both mirror losses).

Sharding: everything is written in the global view of a jitted step. With ``mesh`` given,
the gathered features are pinned replicated (the all-gather over the data axis) and so are
the updated queues, so every device holds the same queues and computes the same V.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tokendrift_jax import sharding
from tokendrift_jax.drift import field
from tokendrift_jax.drift import lift as lift_lib
from tokendrift_jax.drift import queue as queue_lib
from tokendrift_jax.drift.features import DEFAULT_ENCODER_SIGMA, POOLS

OBJECTIVES = ("fixed_point", "mirror_kl", "mirror_mse")
DEFAULT_MIRROR_ETA = 1.0


@dataclasses.dataclass(frozen=True)
class DriftConfig:
  """Hyper-parameters of the TokenDrift objective (defaults = the paper's main setting).

  Attributes:
    objective: "fixed_point" (default), "mirror_kl" or "mirror_mse".
    alpha: drift scale α in h* = sg(h + αV) (App. F: 1).
    mirror_eta: η in ℓ* = sg(ℓ + ηg) (paper silent; default 1.0).
    temperatures: the set T (App. F: {0.02, 0.05, 0.2}).
    attraction, repulsion: a and r in V(τ) = a Σ W⁺u − r Σ W⁻v (Table 6; default 1:1).
    eps: ε in s(τ) (see ``drift.field``).
    normalization: "joint" (TokenDrift) or "drifting_alg2" (Deng et al. Alg. 2).
    distance: "squared" (TokenDrift) or "euclidean" (Alg. 2's cdist).
    lift: "soft" (the method) or "hard" (straight-through ablation, Table 3); used by the
      caller's feature map (``drift.lift.soft_token_lift(mode=...)``).
    encoder_sigma: σ fed to the frozen encoder (see ``drift.features``; default 0).
    queue_size: Q of both queues (App. F: 1024; Table 5: 4 / 64 / 1024).
    base_loss_weight: weight of the backbone's diffusion loss added to the drift loss
      (0 = drift only, the default; Table 4's "w/" rows use 1).
    pool: positions averaged into h and u: "all" (the paper) or "completion" (the
      non-prompt positions of prompt-conditioned refinement); used by the caller's
      feature map (``drift.features.pool_features(positions=...)``).
    scale_mode: "rms" (the paper: each V(τ) divided by its batch RMS) or "fixed" (by the
      constant c_τ of ``fixed_scale``, so the drift can shrink near equilibrium); a study
      option, never the default (``drift.field``).
    fixed_scale: c_τ: one number for every temperature or one per temperature (a tuple
      of 1 or len(temperatures) numbers > 0); used only by scale_mode="fixed".
    temperature_mode: "absolute" (the paper) or "relative" (τ × the batch's median
      nearest-positive distance, stop-gradient; ``drift.field``).
  """
  objective: str = "fixed_point"
  alpha: float = 1.0
  mirror_eta: float = DEFAULT_MIRROR_ETA
  temperatures: tuple[float, ...] = field.DEFAULT_TEMPERATURES
  attraction: float = 1.0
  repulsion: float = 1.0
  eps: float = field.DEFAULT_EPS
  normalization: str = "joint"
  distance: str = "squared"
  lift: str = "soft"
  encoder_sigma: float = DEFAULT_ENCODER_SIGMA
  queue_size: int = 1024
  base_loss_weight: float = 0.0
  pool: str = "all"
  scale_mode: str = "rms"
  fixed_scale: tuple[float, ...] = (1.0,)
  temperature_mode: str = "absolute"

  def __post_init__(self):
    object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
    fixed = self.fixed_scale
    if isinstance(fixed, (int, float)) and not isinstance(fixed, bool):
      fixed = (fixed,)
    try:
      fixed = tuple(float(c) for c in fixed)
    except (TypeError, ValueError):
      raise ValueError(f"DriftConfig.fixed_scale must be a number or a tuple of numbers, "
                       f"got {self.fixed_scale!r}") from None
    object.__setattr__(self, "fixed_scale", fixed)
    checks = (
        ("objective", self.objective in OBJECTIVES, f"one of {OBJECTIVES}"),
        ("normalization", self.normalization in field.NORMALIZATIONS,
         f"one of {field.NORMALIZATIONS}"),
        ("distance", self.distance in field.DISTANCES, f"one of {field.DISTANCES}"),
        ("lift", self.lift in lift_lib.LIFT_MODES, f"one of {lift_lib.LIFT_MODES}"),
        ("pool", self.pool in POOLS, f"one of {POOLS}"),
        ("temperatures", bool(self.temperatures) and all(t > 0 for t in self.temperatures),
         "a non-empty tuple of positive numbers"),
        ("alpha", self.alpha > 0, "> 0"),
        ("mirror_eta", self.mirror_eta > 0, "> 0"),
        ("attraction", self.attraction >= 0, ">= 0"),
        ("repulsion", self.repulsion >= 0, ">= 0"),
        ("eps", self.eps >= 0, ">= 0"),
        ("queue_size", int(self.queue_size) >= 1, ">= 1"),
        ("base_loss_weight", self.base_loss_weight >= 0, ">= 0"),
        ("scale_mode", self.scale_mode in field.SCALE_MODES, f"one of {field.SCALE_MODES}"),
        ("temperature_mode", self.temperature_mode in field.TEMPERATURE_MODES,
         f"one of {field.TEMPERATURE_MODES}"),
        ("fixed_scale", len(self.fixed_scale) in (1, len(self.temperatures))
         and all(0 < c < float("inf") for c in self.fixed_scale),
         f"1 or {len(self.temperatures)} (one per temperature) numbers > 0"),
    )
    for name, ok, want in checks:
      if not ok:
        raise ValueError(f"DriftConfig.{name} must be {want}, got {getattr(self, name)!r}")

  def field_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of ``drift.field.drift_field`` taken from this config."""
    return dict(temperatures=self.temperatures, attraction=self.attraction,
                repulsion=self.repulsion, eps=self.eps, normalization=self.normalization,
                distance=self.distance, scale_mode=self.scale_mode,
                fixed_scale=self.fixed_scale, temperature_mode=self.temperature_mode)


class References(NamedTuple):
  """Alg. 1 reference sets as (current, queue) blocks; the queue buffers are not copied."""
  positives: tuple[jax.Array, jax.Array]  # (u [N, m], Q_real buf [Q, m])
  pos_mask: tuple[None, jax.Array]        # (all valid, filled slots bool [Q])
  negatives: tuple[jax.Array, jax.Array]  # (h [N, m], Q_gen buf [Q, m])
  neg_mask: tuple[jax.Array, jax.Array]   # (not self bool [N, N], filled slots bool [Q])


class DriftAux(NamedTuple):
  q_real: queue_lib.FeatureQueue  # after pushing this step's u
  q_gen: queue_lib.FeatureQueue   # after pushing this step's h
  drift: jax.Array                # V [N, m] (stop-gradient)
  features: jax.Array             # h [N, m] (stop-gradient)
  metrics: dict[str, jax.Array]


def _gather(x: jax.Array, mesh: Mesh | None) -> jax.Array:
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, sharding.replicated(mesh))


def _check_queue(q: queue_lib.FeatureQueue, m: int, name: str) -> None:
  if q.dim != m:
    raise ValueError(f"{name} holds {q.dim}-dim features but the batch features are "
                     f"{m}-dim (queue buf {q.buf.shape})")


def build_references(h: jax.Array, u: jax.Array, q_real: queue_lib.FeatureQueue,
                     q_gen: queue_lib.FeatureQueue) -> References:
  """Alg. 1 lines 5-7: U = u ∪ Q_real, H = h ∪ Q_gen with h_i excluded for anchor i.

  ``h`` and ``u`` are the gathered [N, m] features (N = global micro-batch); every array is
  stop-gradient. Empty queue slots are masked out, never read as zero vectors. The sets
  are returned as blocks for ``drift_field`` (no [N + Q, m] concatenation).
  """
  if h.ndim != 2 or h.shape != u.shape:
    raise ValueError(f"h and u must both be [N, m], got {h.shape} and {u.shape}")
  n, m = h.shape
  _check_queue(q_real, m, "q_real")
  _check_queue(q_gen, m, "q_gen")
  sg = jax.lax.stop_gradient
  return References(
      positives=(sg(u), sg(q_real.buf)),
      pos_mask=(None, queue_lib.valid_mask(q_real)),
      negatives=(sg(h), sg(q_gen.buf)),
      neg_mask=(~jnp.eye(n, dtype=bool), queue_lib.valid_mask(q_gen)))


def drift_from_features(h: jax.Array, u: jax.Array, q_real: queue_lib.FeatureQueue,
                        q_gen: queue_lib.FeatureQueue, config: DriftConfig, *,
                        mesh: Mesh | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """V [N, m] for the gathered anchors h (stop-gradient), and the field's diagnostics."""
  for name, q in (("q_real", q_real), ("q_gen", q_gen)):
    if q.capacity != config.queue_size:
      raise ValueError(f"{name} has {q.capacity} slots but DriftConfig.queue_size is "
                       f"{config.queue_size}")
  h = _gather(jax.lax.stop_gradient(h), mesh)
  u = _gather(jax.lax.stop_gradient(u), mesh)
  refs = build_references(h, u, q_real, q_gen)
  drift, diag = field.drift_field(h, refs.positives, refs.negatives, pos_mask=refs.pos_mask,
                                  neg_mask=refs.neg_mask, **config.field_kwargs())
  return jax.lax.stop_gradient(drift), diag


def push_features(q_real: queue_lib.FeatureQueue, q_gen: queue_lib.FeatureQueue, u: jax.Array,
                  h: jax.Array, *, mesh: Mesh | None = None, after: jax.Array | None = None):
  """Alg. 1 line 11: push sg(u) into Q_real and sg(h) into Q_gen (gathered, replicated).

  ``after``: pass the drift V computed from the old queues. The pushed rows are then made
  data-dependent on it (+ 0·ΣV, value-neutral for finite V), which lets XLA write the
  donated queue buffers in place: without a data dependence between the reads of the old
  buffers and the write, copy insertion duplicates each [Q, m] buffer twice per step (seen
  on CPU, 6x the drift cost at Q = 65536); an optimization_barrier does not prevent it.
  """
  chex.assert_rank([u, h], 2)
  chex.assert_equal_shape([u, h])  # [N, m] both
  u = _gather(jax.lax.stop_gradient(u), mesh)
  h = _gather(jax.lax.stop_gradient(h), mesh)
  if after is not None:
    tie = jnp.zeros((), u.dtype) * jnp.sum(jax.lax.stop_gradient(after)).astype(u.dtype)
    u, h = u + tie, h + tie
  q_real = queue_lib.push(q_real, u)
  q_gen = queue_lib.push(q_gen, h)
  if mesh is not None:
    q_real, q_gen = (jax.tree.map(lambda x: _gather(x, mesh), q) for q in (q_real, q_gen))
  return q_real, q_gen


def fixed_point_loss(h: jax.Array, drift: jax.Array, alpha: float = 1.0) -> jax.Array:
  """L = (1/2B) Σ_i ‖h_i − sg(h_i + αV_i)‖² for h [B, m], V [B, m] (Sec. 3.3).

  The residual is formed as (h − sg(h)) − α sg(V): the same value and derivative as
  h − sg(h + αV), without rounding V through h + αV, so ∇_h L = −αV/B up to the rounding
  of the 1/B factor (bit-exact when B is a power of two).
  """
  if h.shape != drift.shape or h.ndim != 2:
    raise ValueError(f"h and drift must both be [B, m], got {h.shape} and {drift.shape}")
  resid = (h - jax.lax.stop_gradient(h)) - alpha * jax.lax.stop_gradient(drift).astype(h.dtype)
  return 0.5 * jnp.sum(resid * resid) / h.shape[0]


def mirror_direction(feature_fn: Callable[[jax.Array], jax.Array], logits: jax.Array,
                     drift: jax.Array) -> jax.Array:
  """g = ∇_ℓ ⟨h(ℓ), sg(V)⟩ = Jᵀ V via one vjp of ``feature_fn`` [B, L, V] -> [B, m]."""
  h, vjp_fn = jax.vjp(feature_fn, jax.lax.stop_gradient(logits))
  chex.assert_equal_shape([h, drift])  # V [B, m] like the features
  (g,) = vjp_fn(jax.lax.stop_gradient(drift).astype(h.dtype))
  return g


def mirror_teacher_logits(logits: jax.Array, g: jax.Array, eta: float) -> jax.Array:
  """ℓ* = sg(ℓ + ηg) (Sec. 3.4); p* = softmax(ℓ*)."""
  chex.assert_equal_shape([logits, g])
  return jax.lax.stop_gradient(logits + eta * g.astype(logits.dtype))


def _check_mask(logits, predicted_mask):
  if logits.ndim != 3 or predicted_mask.shape != logits.shape[:2]:
    raise ValueError(f"predicted_mask must be bool [B, L] = {logits.shape[:2]} for logits "
                     f"{logits.shape}, got {predicted_mask.shape}")
  if predicted_mask.dtype != jnp.bool_:
    raise TypeError(f"predicted_mask must be bool, got {predicted_mask.dtype}")


def _check_teacher(logits, teacher_logits):
  """Trace-time contract of the mirror losses: teacher logits like the logits [B, L, V]."""
  chex.assert_equal_shape([logits, teacher_logits])


def mirror_kl_loss(logits: jax.Array, teacher_logits: jax.Array,
                   predicted_mask: jax.Array) -> jax.Array:
  """(1/B) Σ_i Σ_{t∈M_i} KL(softmax(ℓ*) ‖ softmax(ℓ)) for [B, L, V] logits (float32 math)."""
  _check_mask(logits, predicted_mask)
  _check_teacher(logits, teacher_logits)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), -1)
  q = jnp.exp(log_q)
  # q = 0 entries (e.g. ℓ = −inf) contribute 0; the where keeps −inf − (−inf) out.
  kl = jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)
  return jnp.sum(jnp.where(predicted_mask, kl, 0.0)) / logits.shape[0]


def mirror_mse_loss(logits: jax.Array, teacher_logits: jax.Array,
                    predicted_mask: jax.Array) -> jax.Array:
  """(1/B) Σ_i Σ_{t∈M_i} ‖ℓ*_{i,t} − ℓ_{i,t}‖² (non-finite ℓ entries contribute 0)."""
  _check_mask(logits, predicted_mask)
  _check_teacher(logits, teacher_logits)
  lg = logits.astype(jnp.float32)
  diff = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) - lg
  diff = jnp.where(jnp.isfinite(lg), diff, 0.0)
  per_pos = jnp.sum(diff * diff, axis=-1)
  return jnp.sum(jnp.where(predicted_mask, per_pos, 0.0)) / logits.shape[0]


def tokendrift_loss(
    feature_fn: Callable[[jax.Array], jax.Array],
    logits: jax.Array,
    u: jax.Array,
    q_real: queue_lib.FeatureQueue,
    q_gen: queue_lib.FeatureQueue,
    config: DriftConfig,
    *,
    predicted_mask: jax.Array | None = None,
    base_loss: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, DriftAux]:
  """The TokenDrift loss of one micro-step from the generator's logits (Alg. 1 lines 4-11).

  Args:
    feature_fn: ℓ [B, L, V] -> h [B, m]: parameterisation (softmax / SUBS), lift, frozen
      encoder and pooling; row i of h may depend only on row i of ℓ, and it must be
      deterministic (encoder in eval mode).
    logits: [B, L, V], the generator output ℓ (global micro-batch; differentiable).
    u: [B, m] clean features (stop-gradient applied here).
    q_real, q_gen: the queues before this micro-step.
    config: the objective's hyper-parameters.
    predicted_mask: bool [B, L] = M_i; required by the mirror objectives.
    base_loss: the backbone's diffusion loss (scalar); required when base_loss_weight > 0,
      and not added (it may still be passed, e.g. for logging) when the weight is 0.
    mesh: the (data, fsdp) mesh when jitted with batch-sharded inputs; None on one device.

  Returns:
    (loss, aux): loss is the drift loss (+ weighted base loss); aux holds the pushed queues,
    V, h and metrics: ``loss_drift``; the field's diagnostics (``drift.field.drift_field``:
    per temperature [len(T)] ``v_norm`` (the drift's norm before normalisation), ``scale``,
    ``pos_weight_frac``, ``nn_pos_over_tau``, ``nn_neg_over_tau``, ``v_tau_mean_share``;
    scalars ``v_rms``, ``nn_dist_pos``, ``nn_dist_neg``, ``v_mean_share``; the trainer logs
    the [T] ones as ``name/tau=0.02`` ...); ``queue_fill_real`` / ``queue_fill_gen`` (fill
    of the queues used as references, i.e. before this push).
  """
  if config.base_loss_weight > 0 and base_loss is None:
    raise ValueError("DriftConfig.base_loss_weight > 0 needs base_loss=")
  mirror = config.objective != "fixed_point"
  if mirror and predicted_mask is None:
    raise ValueError(f"objective {config.objective!r} needs predicted_mask= (M_i)")

  if mirror:
    h, vjp_fn = jax.vjp(feature_fn, jax.lax.stop_gradient(logits))
  else:
    h = feature_fn(logits)
  if h.ndim != 2 or h.shape[0] != logits.shape[0] or u.shape != h.shape:
    raise ValueError(f"feature_fn must map logits {logits.shape} to [B, m] matching u "
                     f"{u.shape}, got {h.shape}")
  drift, diag = drift_from_features(h, u, q_real, q_gen, config, mesh=mesh)

  if config.objective == "fixed_point":
    loss_drift = fixed_point_loss(h, drift, config.alpha)
  else:
    (g,) = vjp_fn(drift.astype(h.dtype))
    teacher = mirror_teacher_logits(logits, g, config.mirror_eta)
    loss_fn = mirror_kl_loss if config.objective == "mirror_kl" else mirror_mse_loss
    loss_drift = loss_fn(logits, teacher, predicted_mask)

  loss = loss_drift
  if base_loss is not None and config.base_loss_weight > 0:
    loss = loss + config.base_loss_weight * base_loss

  metrics = dict(diag)
  metrics["loss_drift"] = jax.lax.stop_gradient(loss_drift)
  metrics["queue_fill_real"] = queue_lib.fill_fraction(q_real)
  metrics["queue_fill_gen"] = queue_lib.fill_fraction(q_gen)
  h_sg = jax.lax.stop_gradient(h)
  new_real, new_gen = push_features(q_real, q_gen, u, h_sg, mesh=mesh, after=drift)
  aux = DriftAux(q_real=new_real, q_gen=new_gen, drift=drift, features=_gather(h_sg, mesh),
                 metrics=metrics)
  return loss, aux
