"""Few-step samplers: the shared denoising loop (MDLM ``ddpm_cache``, DUO ``ancestral``) and
the one entry point of every process's sampler, with exact forward counts.

:func:`make_sampler` / :func:`sample` call the process's own
:meth:`~tokendrift_jax.diffusion.base.Process.make_sampler` (LLaDA's is generate.py,
:mod:`llada_sampling`, unconditional: empty prompt); what follows is about the loop that
:class:`LoopProcess` subclasses (MDLM, DUO) share.

Both samplers walk the grid t_i = 1 − i (1 − 1e-5) / steps, i = 0..steps−1 (the references'
``linspace(1, 1e-5, steps + 1)``), then optionally apply a noise-removal step at t = 1e-5.
That step is iteration i = steps of the same loop, so the backbone is traced and compiled
once per sampler. The update of one step is the process's :meth:`LoopProcess.denoise_step`
(MDLM: :func:`mdlm.ddpm_step`; DUO: :func:`duo.ancestral_step`).

NFE accounting (see docs/DIFFUSION.md):
  * ``SampleResult.steps`` is the number of denoising steps; this is the paper's "NFE".
  * ``SampleResult.nfe_model`` is the number of backbone forwards actually made, *including*
    the final noise-removal forward when there is one (``final_forward``). MDLM ``ddpm_cache``
    skips a forward whenever no token of the batch changed in the previous step, so
    nfe_model ≤ steps + 1 and is data dependent; DUO ancestral makes steps + 1 forwards
    (steps when noise_removal='none').

Randomness: ``k_prior, k_steps = jax.random.split(key)``; step i (and the noise-removal step,
i = steps) draws its uniforms with :func:`step_uniforms` ``(k_steps, i, [B, L, V])``. Every
draw has the global batch shape and is made inside jit; threefry is partitionable, so the
samples do not depend on how many devices the batch is split over. The cached and uncached
MDLM samplers consume identical draws, so they return identical tokens.

Precision: MDLM samples in float32 like the MDLM repository (its p_x0 and Gumbel noise are
float32); DUO samples in float64 like the DUO repository (``sampling.use_float64``: the
float32 log-softmax output is cast to float64 before exp, posterior and Gumbel noise are
float64). The default is the process's ``default_float64``; it can be overridden with
``float64=``; float64 runs trace and execute under a scoped ``jax.enable_x64(True)``.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tokendrift_jax import sharding
from tokendrift_jax.diffusion import schedule
from tokendrift_jax.diffusion.base import Process

T_MIN = 1e-5  # last grid point (``eps=1e-5`` of the reference ``_sample``/``generate_samples``)
GUMBEL_EPS = 1e-10  # offsets of the references' ``_sample_categorical``

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class SampleResult:
  """Output of a sampler.

  Attributes:
    tokens: int32[B, L] samples.
    nfe_model: int32 scalar, backbone forwards actually made, counting the final
      noise-removal forward when ``final_forward``.
    steps: denoising steps = the paper's NFE.
    final_forward: whether a noise-removal forward was made (and counted in nfe_model).
    forward_rows: rows of each backbone forward; None = the batch B (MDLM, DUO). The
      LLaDA sampler sets it: B, or 2B with classifier-free guidance.
  """

  tokens: jax.Array
  nfe_model: jax.Array
  steps: int = flax.struct.field(pytree_node=False)
  final_forward: bool = flax.struct.field(pytree_node=False)
  forward_rows: int | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def nfe(self) -> int:
    """The paper's NFE reading: the number of denoising steps."""
    return self.steps

  @property
  def loop_forwards(self) -> jax.Array:
    """Forwards made inside the denoising loop (nfe_model minus the noise-removal one)."""
    return self.nfe_model - int(self.final_forward)


# --- pieces ---------------------------------------------------------------------------


def gumbel_argmax(probs: jax.Array, u: jax.Array) -> jax.Array:
  """argmax_v probs_v / (1e-10 − log(u_v + 1e-10)): the references' ``_sample_categorical``.

  With u ~ U[0, 1), −log u ~ Exp(1) and argmax p_v / E_v is a draw from p / Σp (the
  exponential-race form of the Gumbel-max trick). Computes in the dtype of ``probs``.

  Args:
    probs: float[..., V] unnormalised non-negative weights.
    u: float[..., V] uniforms in [0, 1).

  Returns:
    int32[...].
  """
  chex.assert_type(probs, float)
  chex.assert_equal_shape([probs, u])
  noise = GUMBEL_EPS - jnp.log(u.astype(probs.dtype) + GUMBEL_EPS)
  return jnp.argmax(probs / noise, axis=-1).astype(jnp.int32)


def step_uniforms(key: jax.Array, step: jax.Array | int, shape: tuple[int, ...], dtype
                  ) -> jax.Array:
  """The uniforms of sampler step ``step``: U[0, 1) of ``shape`` from fold_in(key, step)."""
  return jax.random.uniform(jax.random.fold_in(key, step), shape, dtype=dtype)


def sample_categorical(key: jax.Array, probs: jax.Array) -> jax.Array:
  """One draw per row of ``probs`` (float[..., V]) with :func:`gumbel_argmax`; int32[...]."""
  return gumbel_argmax(probs, jax.random.uniform(key, probs.shape, dtype=probs.dtype))


# --- loops ----------------------------------------------------------------------------


def check_temperature(temperature) -> float:
  """A sampling temperature: a finite Python number > 0 (ValueError otherwise)."""
  if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
      or not math.isfinite(temperature) or temperature <= 0):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
  return float(temperature)


def tempered_log_probs(log_probs: jax.Array, temperature: float) -> jax.Array:
  """log softmax(ℓ / τ) over the last axis: the log-probabilities of p^(1/τ) / Σ p^(1/τ)
  for ℓ = log p [..., V]; ℓ itself (no operation) at τ = 1. Positions whose p is one-hot
  (MDLM's carried-over tokens, whose other entries are −1e6) stay one-hot."""
  if temperature == 1.0:
    return log_probs
  return jax.nn.log_softmax(log_probs / jnp.asarray(temperature, log_probs.dtype), axis=-1)


class LoopProcess(Process):
  """A process sampled by the shared denoising loop (:func:`sampling_loop`): it states one
  step's update and whether an unchanged state may reuse the previous forward."""

  @abc.abstractmethod
  def denoise_step(self, p_x0: jax.Array, x: jax.Array, t: jax.Array, s: jax.Array,
                   u: jax.Array, last: jax.Array) -> jax.Array:
    """One update from time t to s < t: int32[B, L].

    Args:
      p_x0: float[B, L, V] model distribution over x0 at x (tempered; float64 when
        sampling in float64).
      x: int32[B, L] current tokens.
      t, s: float scalars, s = t − dt.
      u: float[B, L, V] the step's uniforms.
      last: bool scalar, True at the noise-removal step (i = steps, t = T_MIN).
    """

  def reuses_forward(self, cache: bool) -> bool:
    """Whether the loop may reuse the previous step's p_x0 when no token changed (a forward
    that does not depend on t); never by default."""
    del cache
    return False

  def make_sampler(self, apply_fn: ApplyFn, *, batch: int, length: int,
                   noise_removal: str | None = None, cache: bool = True,
                   float64: bool | None = None, mesh: Mesh | None = None, **options):
    return make_loop_sampler(self, apply_fn, batch=batch, length=length,
                             noise_removal=noise_removal, cache=cache, float64=float64,
                             mesh=mesh, **options)


def sampling_loop(process: LoopProcess, logits_fn: LogitsFn, key: jax.Array,
                  steps: jax.Array, *, batch: int, length: int,
                  noise_removal: str | None = None, cache: bool = True,
                  float64: bool | None = None, mesh: Mesh | None = None,
                  temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Traceable sampler body: (tokens int32[B, L], nfe_model int32 scalar).

  Call it inside jit (``steps`` may be traced); :func:`make_sampler` does that for you.
  A float64 loop must be traced under ``jax.enable_x64(True)``; tracing it without raises
  rather than silently dropping to float32.

  Args:
    process: a :class:`LoopProcess` (MDLMProcess, DUOProcess, ...).
    logits_fn: denoiser (x int32[B, L], sigma float32[B]) -> logits float[B, L, V].
    key: PRNG key.
    steps: int scalar, number of denoising steps (>= 1).
    batch, length: output shape.
    noise_removal: one of ``process.noise_removals`` (default
      ``process.default_noise_removal``): 'greedy' = the argmax of one more forward (the
      MDLM reference's); 'ancestral' = one more ``denoise_step`` to s = 0 (DUO's default);
      'none'.
    cache: reuse p_x0 when no token changed, where ``process.reuses_forward(cache)``
      (MDLM's ``ddpm_cache``; not for a time-conditioned MDLM, as in the reference). Must
      stay True for a process without a cache (DUO).
    float64: sampling precision; default ``process.default_float64``.
    mesh: if given, the batch axis of every [B, ...] array is sharded over it.
    temperature: τ > 0 (a Python float): every step draws from p_x0^(1/τ), renormalised
      (``tempered_log_probs``); 1 = the model's own p_x0 (the program is then exactly the
      untempered one). The greedy noise-removal argmax does not depend on τ.
  """
  if not isinstance(process, LoopProcess):
    raise TypeError(f"sampling_loop needs a LoopProcess (MDLM, DUO, ...), got "
                    f"{type(process).__name__}")
  noise_removal, float64 = process.check_sampler_settings(noise_removal, float64, cache)
  check_temperature(temperature)
  dtype = jnp.float64 if float64 else jnp.float32
  if float64 and not jax.config.jax_enable_x64:
    raise RuntimeError("a float64 sampling loop must be traced under jax.enable_x64(True); "
                       "use make_sampler/sample, which do that")

  def constrain(a):
    return sharding.constrain_batch(a, mesh)

  reuse = process.reuses_forward(cache)
  final_forward = noise_removal != "none"
  vocab = process.vocab_size
  k_prior, k_steps = jax.random.split(key)
  dt = schedule.grid_dt(steps, dtype, T_MIN)

  # The noise-removal step, when there is one, is iteration i = steps of the same loop, so
  # the backbone appears once in the compiled program.
  def body(i, carry):
    x, lp_cache, cache_ok, nfe = carry
    last = i == steps
    t = jnp.where(last, jnp.asarray(T_MIN, dtype), schedule.grid_time(i, steps, dtype, T_MIN))
    # The reference always runs the noise-removal forward, even when the cache is valid.
    use_cache = jnp.logical_and(cache_ok, jnp.logical_not(last))

    def forward():
      sigma = jnp.broadcast_to(process.model_sigma(t), (batch,))
      # Log-probs in the backbone's float32; cast up before exp (DUO's use_float64).
      return constrain(process.log_probs(logits_fn(x, sigma), x))

    lp = jax.lax.cond(use_cache, lambda: lp_cache, forward)
    nfe = nfe + jnp.logical_not(use_cache).astype(jnp.int32)
    p_x0 = jnp.exp(tempered_log_probs(lp.astype(dtype), temperature))
    u = constrain(step_uniforms(k_steps, i, (batch, length, vocab), dtype))
    x_next = process.denoise_step(p_x0, x, t, t - dt, u, last)
    if noise_removal == "greedy":
      x_next = jnp.where(last, jnp.argmax(lp, axis=-1).astype(jnp.int32), x_next)
    x_next = constrain(x_next)
    cache_ok = jnp.logical_and(reuse, jnp.all(x_next == x))
    return x_next, lp, cache_ok, nfe

  x = constrain(process.prior(k_prior, batch, length))
  lp0 = constrain(jnp.zeros((batch, length, vocab), jnp.float32))
  n_iter = steps + int(final_forward)
  x, _, _, nfe = jax.lax.fori_loop(
      0, n_iter, body, (x, lp0, jnp.asarray(False), jnp.asarray(0, jnp.int32)))
  chex.assert_shape(x, (batch, length))
  chex.assert_type([x, nfe], jnp.int32)
  return x, nfe


def make_loop_sampler(process: LoopProcess, apply_fn: ApplyFn, *, batch: int, length: int,
                      noise_removal: str | None = None, cache: bool = True,
                      float64: bool | None = None, mesh: Mesh | None = None, **options
                      ) -> Callable[[Any, jax.Array, int], SampleResult]:
  """:func:`make_sampler` for a :class:`LoopProcess`: :func:`sampling_loop` jitted once for
  every step count. ``options``: its ``sampler_options`` (``temperature``, default 1)."""
  options = process.sampler_options(options, length)
  temperature = check_temperature(options.pop("temperature", 1.0))
  if options:
    raise ValueError(f"sampler option(s) {sorted(options)} are not used by the "
                     f"{process.name} sampler")
  noise_removal, float64 = process.check_sampler_settings(noise_removal, float64, cache)
  if batch < 1 or length < 1:
    raise ValueError(f"batch and length must be >= 1, got batch={batch}, length={length}")
  if mesh is not None:
    sharding.check_batch_divisible(batch, mesh, "sampling batch")
    out_shardings = (sharding.batch_sharding(mesh, 2), sharding.replicated(mesh))
  else:
    out_shardings = None

  def run(params, key, steps):
    return sampling_loop(process, lambda x, sigma: apply_fn(params, x, sigma), key, steps,
                         batch=batch, length=length, noise_removal=noise_removal,
                         cache=cache, float64=float64, mesh=mesh, temperature=temperature)

  jitted = jax.jit(run, out_shardings=out_shardings)
  final_forward = noise_removal != "none"

  def sampler(params, key: jax.Array, steps: int) -> SampleResult:
    check_steps(steps)
    # Scoped precision: the trace and the call both happen in this mode.
    with jax.enable_x64(float64):
      tokens, nfe = jitted(params, key, jnp.asarray(steps, jnp.int32))
    return SampleResult(tokens=tokens, nfe_model=nfe, steps=steps, final_forward=final_forward)

  def lower(params, key, steps):
    """The jitted sampler lowered for ``(params, key, steps int32 scalar)`` (arrays or
    ShapeDtypeStructs with shardings), at its precision: what a planner compiles for a
    target (``perf/memory_plan.py``) is the program :func:`sampler` runs."""
    with jax.enable_x64(float64):
      return jitted.lower(params, key, steps)

  sampler.lower = lower
  return sampler


def check_steps(steps) -> int:
  """A step count: a positive Python int (ValueError otherwise)."""
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}")
  return steps


# --- public entry points --------------------------------------------------------------


def make_sampler(process: Process, apply_fn: ApplyFn, *, batch: int, length: int,
                 noise_removal: str | None = None, cache: bool = True,
                 float64: bool | None = None, mesh: Mesh | None = None, **options
                 ) -> Callable[[Any, jax.Array, int], SampleResult]:
  """Compiles ``process``'s sampler once for every step count (its
  :meth:`~tokendrift_jax.diffusion.base.Process.make_sampler`).

  Args:
    process: a registered :class:`~tokendrift_jax.diffusion.base.Process`.
    apply_fn: (params, x int32[B, L], sigma float32[B]) -> logits float[B, L, V]; params
      are a traced argument, so new weights do not recompile.
    batch, length, noise_removal, cache, float64, mesh: see :func:`sampling_loop`.
      With a mesh, ``batch`` must divide over its batch shards; tokens come back
      batch-sharded.
    **options: the process's ``sampler_options``: ``temperature`` (every process;
      MDLM/DUO: see :func:`sampling_loop`, default 1; LLaDA: generate.py's, default
      ``LLaDAProcess.unconditional_temperature``); LLaDA only: generate.py's
      ``block_length`` (default: length), ``cfg_scale``, ``remasking`` (see
      :func:`llada_sampling.make_generate`); unconditional (empty prompt,
      gen_length = length).

  Returns:
    ``sampler(params, key, steps: int) -> SampleResult``; ``sampler.lower(params, key,
    steps)`` gives its jit ``Lowered`` for shape structs (compiling for a target).
  """
  if not isinstance(process, Process):
    raise TypeError(f"process must be a diffusion Process (MDLMProcess, DUOProcess, "
                    f"LLaDAProcess or a registered one), got {type(process).__name__}")
  return process.make_sampler(apply_fn, batch=batch, length=length,
                              noise_removal=noise_removal, cache=cache, float64=float64,
                              mesh=mesh, **options)


def sample(process, logits_fn: LogitsFn, key: jax.Array, *, batch: int, length: int,
           steps: int, noise_removal: str | None = None, cache: bool = True,
           float64: bool | None = None, mesh: Mesh | None = None, **options) -> SampleResult:
  """One-off sampling with a closed-over denoiser ``logits_fn(x, sigma)``.

  Compiles on every call; for repeated sampling use :func:`make_sampler`, which takes the
  parameters as an argument. ``options``: LLaDA's, as in :func:`make_sampler`.
  """
  sampler = make_sampler(process, lambda _, x, sigma: logits_fn(x, sigma), batch=batch,
                         length=length, noise_removal=noise_removal, cache=cache,
                         float64=float64, mesh=mesh, **options)
  return sampler(None, key, steps)
