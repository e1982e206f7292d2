"""SDTT: multi-round self-distillation through time of an MDLM (the baseline of Table 1).

Deschenaux & Gulcehre, "Beyond Autoregression: Fast LLMs via Self-Distillation Through
Time"; behaviour as the public code runs it (``jdeschena/sdtt``,
``src/sdtt/core/distill/multi_round_sdtt.py``, class ``MultiRoundSDTT``).

One micro-step (``MultiRoundSDTT.loss``):

* t ~ ``process.sample_t``, x_t ~ ``process.corrupt(x0, t)``.
* The teacher (a frozen copy of an earlier student, no dropout, no gradient) takes
  n = ``num_distill_steps`` ancestral MDLM steps of size dt from x_t
  (``_teacher_logprobs_on_mask``). Step k runs at time t_k and moves to t_k − dt:
  q_v ∝ p_x0,v (m(t_k) − m(t_k − dt)) for v ≠ mask and m(t_k − dt) for the mask, with m the
  move chance 1 − e^{−σ} (``_compute_ddpm_update``), drawn with the references'
  exponential-race Gumbel argmax; only masked tokens change.
* Each token's target is the teacher's SUBS log p(x0) at the step where the token was
  unmasked; tokens still masked after the last step take the last step's prediction.
* The student makes one forward at x_t (SUBS, dropout on) and is trained on the masked
  positions of x_t against the targets (``distill_mode``):

  - ``kl-bwd`` (default): KL(student ‖ teacher), Σ_v e^{s_v}(s_v − τ_v) summed over the
    masked tokens and divided by their number (torch ``kl_div(target, preds,
    log_target=True, reduction="batchmean")``);
  - ``kl-fwd``: KL(teacher ‖ student), Σ_v e^{τ_v}(τ_v − s_v), same reduction;
  - ``mse``: mean of (s_v − τ_v)² over every masked token and every one of the V columns;
  - ``tvd``: Σ_v |s_v − τ_v| on **log**-probabilities (the method's ``_tvd``; the
    probability-space ``tv_dist`` of the file is unused), mean over the masked tokens.

  ``mse`` and ``tvd`` include the mask column, whose log-probability is the logit minus
  1e6 minus the log-normaliser: in float32 it is held at the resolution of 1e6 (an ulp of
  0.0625), so that column contributes a rounding-level term, as in the released code
  (float32 log-probs, ``loss_precision: null``). The KL modes weigh it by e^{−1e6} = 0.

* Rounds (``training_step``): dt = (1 − sampling_eps) / ``initial_sampling_steps`` ·
  n^round. After every ``round_steps`` = K optimizer steps the student is copied into the
  teacher and the round grows by one (:meth:`SDTT.end_step`, at step counts K, 2K, ...,
  the released ``global_step % grow_dt_every == 0``; no EMA swap and no optimizer reset:
  the public ``use_ema_on_growth`` and ``reset_optimizer_on_growth`` are False). The
  released run stops when the teacher's step count round(1/dt) would fall below
  ``min_sampling_steps``; here :meth:`SDTT.from_config` refuses a ``train.steps`` that
  would reach such a round.

Teacher time grid (``teacher_grid``). The method describes the teacher's steps as starting
at t, t − dt, ..., t − (n−1) dt ("described", the default). The released code builds
``ts = t·space + (1 − t)·(t − n·dt)`` with ``space = linspace(1, 0, n)`` ("released"):
for n = 2 that is t + (1 − t)(t − 2dt) and (1 − t)(t − 2dt). Both clamp the start times at
``sampling_eps`` (the released ``torch.maximum(ts, sampling_eps)``); each step still ends
at t_k − dt, unclamped (a negative end time gives the mask a negative weight: every
remaining mask is unmasked, as in the released code).

Prompts are refused (the released code has none). Only MDLM's ancestral teacher sampler
is implemented (the released ``sampling_mode: analytic`` option is not).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from tokendrift_jax import config_checks as cc
from tokendrift_jax.diffusion import sampling
from tokendrift_jax.objectives import base
from tokendrift_jax.objectives.base import Objective
from tokendrift_jax.train import losses
from tokendrift_jax.train import prompt as prompt_lib

DISTILL_MODES = ("kl-bwd", "kl-fwd", "mse", "tvd")
TEACHER_GRIDS = ("described", "released")


def default_config() -> ml_collections.ConfigDict:
  """The ``sdtt`` config section (the public ``multi-round-sdtt.yaml`` values).

  Fields:
    distill_mode: "kl-bwd" (KL(student ‖ teacher), the public default), "kl-fwd", "mse"
      or "tvd" (see the module docstring for their reductions).
    num_distill_steps: n, the teacher's steps per student step (2); dt grows by n per round.
    initial_sampling_steps: the grid of round 0, dt = (1 − sampling_eps) / 1024.
    min_sampling_steps: the smallest teacher step count round(1/dt) a round may have (8);
      ``train.steps`` must not reach a round below it.
    round_steps: optimizer steps per round (10k): the student is copied into the teacher
      and dt grows after every ``round_steps`` steps.
    teacher_grid: "described" (t, t − dt, ...) or "released" (the public code's grid).
  """
  c = ml_collections.ConfigDict()
  c.distill_mode = "kl-bwd"
  c.num_distill_steps = 2
  c.initial_sampling_steps = 1024
  c.min_sampling_steps = 8
  c.round_steps = 10_000
  c.teacher_grid = "described"
  return c


# ---------------------------------------------------------------------- schedule


def round_dt(round_: jax.Array | int, *, sampling_eps: float, initial_sampling_steps: int,
             num_distill_steps: int) -> jax.Array:
  """dt of round ``round_``: (1 − sampling_eps) / initial_sampling_steps · n^round (float32)."""
  r = jnp.asarray(round_, jnp.float32)
  base = (1.0 - sampling_eps) / initial_sampling_steps
  return jnp.float32(base) * jnp.power(jnp.float32(num_distill_steps), r)


def teacher_steps(round_: int, *, sampling_eps: float, initial_sampling_steps: int,
                  num_distill_steps: int) -> int:
  """The released ``effective_num_steps = round(1 / dt)`` of a round (host, float64)."""
  dt = (1.0 - sampling_eps) / initial_sampling_steps * num_distill_steps ** round_
  return round(1.0 / dt)


def rounds_allowed(*, sampling_eps: float, initial_sampling_steps: int, num_distill_steps: int,
                   min_sampling_steps: int) -> int:
  """How many rounds run before the released code stops: the first round whose teacher
  step count is below ``min_sampling_steps`` (rounds 0 .. that − 1 train)."""
  r = 0
  while teacher_steps(r, sampling_eps=sampling_eps, initial_sampling_steps=initial_sampling_steps,
                      num_distill_steps=num_distill_steps) >= min_sampling_steps:
    r += 1
  return r


def teacher_times(t: jax.Array, dt: jax.Array, num_steps: int, grid: str,
                  sampling_eps: float) -> jax.Array:
  """Start times of the teacher's steps, [num_steps, B] in the dtype of ``t``, clamped at
  ``sampling_eps``.

  "described": t − k·dt, k = 0 .. n − 1. "released": t·space + (1 − t)·(t − n·dt) with
  space = linspace(1, 0, n) (``_teacher_logprobs_on_mask``).
  """
  if grid not in TEACHER_GRIDS:
    raise ValueError(f"teacher grid must be one of {TEACHER_GRIDS}, got {grid!r}")
  dtype = t.dtype
  dt = jnp.asarray(dt, dtype)
  t = t[None, :]
  if grid == "described":
    ts = t - jnp.arange(num_steps, dtype=dtype)[:, None] * dt
  else:
    space = jnp.linspace(1.0, 0.0, num_steps, dtype=dtype)[:, None]
    t_end = t - dt * num_steps
    ts = t * space + (1 - t) * t_end
  return jnp.maximum(ts, jnp.asarray(sampling_eps, dtype))


# ---------------------------------------------------------------------- teacher targets


def teacher_step(process, log_p_x0: jax.Array, x: jax.Array, t: jax.Array, s: jax.Array,
                 u: jax.Array) -> jax.Array:
  """One ancestral MDLM step from t to s (``_compute_ddpm_update`` + ``_ddpm_sample_update``).

  q_v = p_x0,v (m_t − m_s) for v ≠ mask, m_s for the mask, with m the move chance; the
  draw argmax_v q_v / (1e-10 − log(u_v + 1e-10)) replaces masked tokens only.

  Args:
    process: the MDLMProcess.
    log_p_x0: float [B, L, V] SUBS log-probabilities at x.
    x: int32 [B, L].
    t, s: float [B].
    u: float [B, L, V] uniforms.
  """
  m_t = process.corruption_prob(t)[:, None, None]
  m_s = process.corruption_prob(s)[:, None, None]
  is_mask_col = jnp.arange(log_p_x0.shape[-1]) == process.mask_id
  q = jnp.where(is_mask_col, m_s, jnp.exp(log_p_x0) * (m_t - m_s))
  proposal = sampling.gumbel_argmax(q, u)
  return jnp.where(x != process.mask_id, x, proposal).astype(jnp.int32)


def teacher_targets(process, teacher_fn, xt: jax.Array, t: jax.Array, dt: jax.Array,
                    uniforms, *, num_steps: int, grid: str) -> tuple[jax.Array, jax.Array]:
  """The teacher's per-token targets (``_teacher_logprobs_on_mask``).

  Args:
    process: the MDLMProcess.
    teacher_fn: denoiser ``(x int32 [B, L], sigma float32 [B]) -> logits [B, L, V]``.
    xt: int32 [B, L] the student's input.
    t: float32 [B] the student's times.
    dt: float32 [] step size of the round.
    uniforms: ``k -> float [B, L, V]`` uniforms of step k (a function, so that only one
      step's draw is live), or an array [n, B, L, V].
    num_steps: n.
    grid: "described" or "released".

  Returns:
    (targets float32 [B, L, V]: SUBS log-probs at the step each token was unmasked, the
    last step's for those still masked (meaningless at positions unmasked in xt);
    x int32 [B, L] after the n steps).
  """
  if not callable(uniforms):
    arr = uniforms
    uniforms = lambda k: arr[k]
  ts = teacher_times(t, dt, num_steps, grid, process.sampling_eps)
  shape = (*xt.shape, process.vocab_size)

  # One traced forward for all n steps (fori_loop): the carry holds the tokens, the targets
  # so far and the last step's log-probs.
  def body(k, carry):
    x, targets, _ = carry
    tk = ts[k]
    logits = teacher_fn(x, process.model_sigma(tk))
    log_p = process.log_probs(logits, x).astype(jnp.float32)
    new = teacher_step(process, log_p, x, tk, tk - dt, uniforms(k))
    targets = jnp.where((new != x)[..., None], log_p, targets)
    return new, targets, log_p

  zeros = jnp.zeros(shape, jnp.float32)
  x, targets, log_p = jax.lax.fori_loop(0, num_steps, body, (xt, zeros, zeros))
  # Never-unmasked tokens are exactly those still masked (a step only unmasks).
  still = (x == process.mask_id)[..., None]
  return jnp.where(still, log_p, targets), x


# ---------------------------------------------------------------------- losses


def distill_loss(mode: str, student: jax.Array, target: jax.Array, predicted: jax.Array
                 ) -> jax.Array:
  """The released ``_loss_fn`` on the masked positions (float32 []; 0 with none masked).

  Args:
    mode: one of ``DISTILL_MODES``.
    student, target: float [B, L, V] log-probs (the student's SUBS, the teacher's targets).
    predicted: bool [B, L], the masked positions of x_t (the released ``is_mask``).
  """
  if mode not in DISTILL_MODES:
    raise ValueError(f"distill mode must be one of {DISTILL_MODES}, got {mode!r}")
  dtype = student.dtype
  target = target.astype(dtype)
  if mode == "kl-bwd":
    per = jnp.sum(jnp.exp(student) * (student - target), axis=-1)
  elif mode == "kl-fwd":
    per = jnp.sum(jnp.exp(target) * (target - student), axis=-1)
  elif mode == "mse":
    per = jnp.mean(jnp.square(student - target), axis=-1)   # / V here, / M below
  else:
    per = jnp.sum(jnp.abs(student - target), axis=-1)
  count = jnp.sum(predicted, dtype=dtype)
  total = jnp.sum(jnp.where(predicted, per, 0.0))
  return total / jnp.maximum(count, 1.0)


# ---------------------------------------------------------------------- the objective


def _uniforms(key, shape):
  return lambda k: jax.random.uniform(jax.random.fold_in(key, k), shape, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class SDTT(Objective):
  """Multi-round SDTT of an MDLM (see the module docstring)."""
  distill_mode: str = "kl-bwd"
  num_distill_steps: int = 2
  initial_sampling_steps: int = 1024
  min_sampling_steps: int = 8
  round_steps: int = 10_000
  teacher_grid: str = "described"
  sampling_eps: float = 1e-3

  name: ClassVar[str] = "sdtt"
  label: ClassVar[str] = "SDTT"
  round_field: ClassVar[tuple[str, str]] = ("sdtt", "round_steps")

  @classmethod
  def max_rounds(cls, config) -> int:
    """The rounds config.sdtt's grid allows before the released code stops
    (:func:`rounds_allowed`)."""
    s = config.sdtt
    return rounds_allowed(
        sampling_eps=float(config.diffusion.sampling_eps),
        initial_sampling_steps=int(s.initial_sampling_steps),
        num_distill_steps=int(s.num_distill_steps), min_sampling_steps=int(s.min_sampling_steps))
  section: ClassVar[str | None] = "sdtt"
  needs_init_checkpoint: ClassVar[bool] = True
  # Each field's own type and range; from_config checks how they relate (the rounds
  # against min_sampling_steps and train.steps).
  section_checks: ClassVar[tuple] = (
      ("distill_mode", cc.one_of(*DISTILL_MODES)),
      ("num_distill_steps", cc.integer(2)),
      ("initial_sampling_steps", cc.integer(1)),
      ("min_sampling_steps", cc.integer(1)),
      ("round_steps", cc.integer(1)),
      ("teacher_grid", cc.one_of(*TEACHER_GRIDS)),
  )

  @classmethod
  def from_config(cls, config, model_cfg, process) -> "SDTT":
    del model_cfg
    defaults = default_config()
    section = config.get("sdtt", None)
    if section is None:
      section = defaults
    unknown = sorted(set(section.keys()) - set(defaults.keys()))
    if unknown:
      raise ValueError(f"config.sdtt.{unknown[0]} is not a field of the sdtt section "
                       f"(fields: {sorted(defaults.keys())})")
    section = ml_collections.ConfigDict(dict(defaults.to_dict(), **section.to_dict()))
    cls.check_section(section)
    base.refuse_prompts("sdtt", config)
    if getattr(process, "name", None) != "mdlm":
      raise ValueError("config.diffusion.process must be 'mdlm' for objective 'sdtt' (SDTT "
                       f"distils an absorbing-state model), got "
                       f"{getattr(process, 'name', type(process).__name__)!r}")
    mode, grid = str(section.distill_mode), str(section.teacher_grid)
    n, n0 = int(section.num_distill_steps), int(section.initial_sampling_steps)
    n_min, k = int(section.min_sampling_steps), int(section.round_steps)
    eps = float(process.sampling_eps)
    sched = dict(sampling_eps=eps, initial_sampling_steps=n0, num_distill_steps=n)
    if teacher_steps(0, **sched) < n_min:
      raise ValueError(f"config.sdtt.min_sampling_steps={n_min} exceeds the first round's "
                       f"teacher steps round(1/dt) = {teacher_steps(0, **sched)} "
                       f"(config.sdtt.initial_sampling_steps={n0})")
    rounds = rounds_allowed(min_sampling_steps=n_min, **sched)
    train = config.get("train", None)
    steps = None if train is None else train.get("steps", None)
    if steps is not None and int(steps) > rounds * k:
      raise ValueError(
          f"config.sdtt.round_steps={k}: config.train.steps={int(steps)} reaches round "
          f"{rounds}, whose teacher would take round(1/dt) = {teacher_steps(rounds, **sched)} "
          f"< config.sdtt.min_sampling_steps={n_min} steps (the released code stops there); "
          f"at most {rounds} rounds = {rounds * k} steps")
    return cls(distill_mode=mode, num_distill_steps=n, initial_sampling_steps=n0,
               min_sampling_steps=n_min, round_steps=k, teacher_grid=grid, sampling_eps=eps)

  # ---------------------------------------------------------------- schedule
  def dt(self, round_) -> jax.Array:
    """float32 [] step size of the teacher in round ``round_``."""
    return round_dt(round_, sampling_eps=self.sampling_eps,
                    initial_sampling_steps=self.initial_sampling_steps,
                    num_distill_steps=self.num_distill_steps)

  # ---------------------------------------------------------------- state
  def init_aux(self, params) -> dict[str, Any]:
    return base.teacher_state(params)

  def aux_shardings(self, aux, mesh, param_shardings) -> dict[str, Any]:
    del aux
    return base.teacher_state_shardings(mesh, param_shardings)

  def end_step(self, aux, params, step) -> tuple[dict[str, Any], dict[str, jax.Array]]:
    """At step counts K, 2K, ...: teacher ← params, round + 1 (released ``training_step``
    at ``global_step % grow_dt_every == 0``, before that step's loss).

    Written as "round < step // K" rather than "step % K == 0": the same in a normal run,
    and a boundary step whose update was not applied (``train.nonfinite="skip"`` keeps the
    old auxiliary state) is caught up at the next applied step instead of being lost.
    """
    step = jnp.asarray(step, jnp.int32)
    target = step // self.round_steps
    refresh = aux["round"] < target
    teacher = base.refreshed_teacher(aux["teacher"], params, refresh)
    round_ = jnp.where(refresh, target, aux["round"]).astype(jnp.int32)
    return ({"teacher": teacher, "round": round_},
            {"sdtt_round": round_, "sdtt_dt": self.dt(round_)})

  # ---------------------------------------------------------------- the step
  def microstep(self, ctx, params, frozen, aux, batch, key):
    del frozen
    losses.check_batch(batch)
    if ctx.prompt.active:
      raise ValueError(f"objective 'sdtt' does not support prompts (config.prompt.mode="
                       f"{ctx.prompt.mode!r}); set config.prompt.mode='none'")
    if ctx.prompt.pad_id is not None:
      raise ValueError(f"objective 'sdtt' does not support padded rows "
                       f"(config.prompt.pad_id={ctx.prompt.pad_id}); set it to -1")
    x0, keep = prompt_lib.split_prompt(ctx.prompt, batch)
    if keep is not None:
      raise ValueError("objective 'sdtt' does not support prompts")
    process = ctx.process
    k_t, k_x, k_teacher, k_drop = jax.random.split(key, 4)
    x0 = ctx.constrain_batch(x0)
    b, length = x0.shape
    t = process.sample_t(k_t, b)
    xt = ctx.constrain_batch(process.corrupt(k_x, x0, t))
    predicted = process.predicted_positions(xt)
    dt = self.dt(aux["round"])

    teacher_ctx = dataclasses.replace(ctx, dropout=False)
    teacher_fn = losses.generator(teacher_ctx, jax.lax.stop_gradient(aux["teacher"]), None)
    targets, _ = teacher_targets(
        process, teacher_fn, xt, t, dt,
        _uniforms(k_teacher, (b, length, process.vocab_size)),
        num_steps=self.num_distill_steps, grid=self.teacher_grid)
    targets = jax.lax.stop_gradient(targets)
    sigma = process.model_sigma(t)

    def loss_fn(p):
      logits = losses.generator(ctx, p, k_drop)(xt, sigma)
      student = process.log_probs(logits, xt).astype(jnp.float32)
      return distill_loss(self.distill_mode, student, targets, predicted)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    metrics = {"loss": loss,
               "masked_frac": jnp.mean(predicted.astype(jnp.float32))}
    return loss, grads, aux, metrics

  # ---------------------------------------------------------------- bookkeeping
  def extra_flops(self, fm, cfg, *, length: int, micro_batch: int, n_micro: int,
                  remat_policy: str) -> tuple[dict[str, int], int]:
    """n teacher forwards (with the output layer) per sequence; no backward, no remat."""
    del cfg, remat_policy
    seqs = micro_batch * n_micro
    return ({"teacher_fwd": self.num_distill_steps * seqs
             * fm.forward(length, output_layer=True)}, 0)

  def resume_fields(self) -> Mapping[str, Any]:
    return {"sdtt.distill_mode": self.distill_mode,
            "sdtt.num_distill_steps": self.num_distill_steps,
            "sdtt.initial_sampling_steps": self.initial_sampling_steps,
            "sdtt.min_sampling_steps": self.min_sampling_steps,
            "sdtt.round_steps": self.round_steps,
            "sdtt.teacher_grid": self.teacher_grid,
            "diffusion.sampling_eps": self.sampling_eps}


OBJECTIVE = SDTT
