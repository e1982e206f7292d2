"""Few-step samplers: MDLM ``ddpm_cache`` and DUO ``ancestral``, with exact forward counts.

:func:`make_sampler` / :func:`sample` also serve an LLaDAProcess, with LLaDA's generate.py
sampler (:mod:`llada_sampling`, unconditional: empty prompt); what follows is about MDLM/DUO.

Both samplers walk the grid t_i = 1 − i (1 − 1e-5) / steps, i = 0..steps−1 (the references'
``linspace(1, 1e-5, steps + 1)``), then optionally apply a noise-removal step at t = 1e-5.
That step is iteration i = steps of the same loop, so the backbone is traced and compiled
once per sampler.

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
float64). Both can be overridden with ``float64=``; float64 runs trace and execute under a
scoped ``jax.enable_x64(True)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tokendrift_jax import sharding
from tokendrift_jax.diffusion import duo as duo_lib
from tokendrift_jax.diffusion import llada_sampling
from tokendrift_jax.diffusion import schedule
from tokendrift_jax.diffusion.duo import DUOProcess
from tokendrift_jax.diffusion.llada import LLaDAProcess
from tokendrift_jax.diffusion.mdlm import MDLMProcess

T_MIN = 1e-5  # last grid point (``eps=1e-5`` of the reference ``_sample``/``generate_samples``)
GUMBEL_EPS = 1e-10  # offsets of the references' ``_sample_categorical``

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]

# LLaDA's generate.py commits every mask within its steps: no noise-removal forward.
NOISE_REMOVAL = {"mdlm": ("greedy", "none"), "duo": ("ancestral", "greedy", "none"),
                 "llada": ("none",)}
DEFAULT_NOISE_REMOVAL = {"mdlm": "greedy", "duo": "ancestral", "llada": "none"}
# LLaDA: float64 Gumbel noise, as generate.py's add_gumbel_noise.
DEFAULT_FLOAT64 = {"mdlm": False, "duo": True, "llada": True}
# The unconditional LLaDA sampler's temperature: 1 draws from the model, as the MDLM/DUO
# samplers do; generate.py's default 0 would make every row and seed the same sample.
LLADA_UNCONDITIONAL_TEMPERATURE = 1.0


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


def mdlm_ddpm_step(p_x0: jax.Array, x: jax.Array, t: jax.Array, s: jax.Array, u: jax.Array,
                   mask_id: int) -> jax.Array:
  """One MDLM ``_ddpm_caching_update`` step from time t to s < t.

  q(x_s)_v ∝ p_x0,v (t − s) for v ≠ mask and s for the mask (move chances t and s, as the
  reference's log-linear caching update uses); a draw replaces masked tokens only.

  Args:
    p_x0: float[B, L, V] SUBS probabilities at xt (0 at the mask id).
    x: int[B, L] current tokens.
    t, s: float scalars or [B] times, s < t.
    u: float[B, L, V] uniforms for the Gumbel draw.
    mask_id: the mask token id.

  Returns:
    int32[B, L].
  """
  # Trace-time contract: p_x0 and u [B, L, V], x [B, L], t and s scalars or [B].
  chex.assert_rank(p_x0, 3)
  chex.assert_equal_shape([p_x0, u])
  chex.assert_shape(x, p_x0.shape[:2])
  dtype = p_x0.dtype
  t = jnp.asarray(t, dtype)
  s = jnp.asarray(s, dtype)
  chex.assert_rank([t, s], {0, 1})
  chex.assert_equal_shape([t, s])
  if t.ndim:
    t, s = t[:, None, None], s[:, None, None]
  is_mask_col = jnp.arange(p_x0.shape[-1]) == mask_id
  q = jnp.where(is_mask_col, s, p_x0 * (t - s))
  proposal = gumbel_argmax(q, u)
  return jnp.where(x != mask_id, x, proposal).astype(jnp.int32)


def duo_ancestral_step(p_x0: jax.Array, x: jax.Array, alpha_s: jax.Array, alpha_t: jax.Array,
                       u: jax.Array) -> jax.Array:
  """One DUO ``_ancestral_update``: draw z_s from the uniform-state posterior q(z_s | x, p_x0).

  Args:
    p_x0: float[B, L, V] model distribution over x0 (float64 when sampling in float64).
    x: int[B, L] current tokens.
    alpha_s, alpha_t: float scalars or [B] (alpha_s = 1 for the noise-removal step).
    u: float[B, L, V] uniforms.

  Returns:
    int32[B, L].
  """
  chex.assert_equal_shape([p_x0, u])  # the posterior checks p_x0 [B, L, V] against x
  return gumbel_argmax(duo_lib.posterior(p_x0, x, alpha_s, alpha_t), u)


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


def _check_options(process, noise_removal: str | None, float64: bool | None):
  if not isinstance(process, (MDLMProcess, DUOProcess)):
    raise TypeError(f"process must be an MDLMProcess or DUOProcess, got {type(process).__name__}")
  if noise_removal is None:
    noise_removal = DEFAULT_NOISE_REMOVAL[process.name]
  if noise_removal not in NOISE_REMOVAL[process.name]:
    raise ValueError(f"noise_removal={noise_removal!r} is not one of "
                     f"{NOISE_REMOVAL[process.name]} for {process.name}")
  if float64 is None:
    float64 = DEFAULT_FLOAT64[process.name]
  return noise_removal, bool(float64)


def sampling_loop(process, logits_fn: LogitsFn, key: jax.Array, steps: jax.Array, *,
                  batch: int, length: int, noise_removal: str | None = None,
                  cache: bool = True, float64: bool | None = None,
                  mesh: Mesh | None = None, temperature: float = 1.0
                  ) -> tuple[jax.Array, jax.Array]:
  """Traceable sampler body: (tokens int32[B, L], nfe_model int32 scalar).

  Call it inside jit (``steps`` may be traced); :func:`make_sampler` does that for you.
  A float64 loop must be traced under ``jax.enable_x64(True)``; tracing it without raises
  rather than silently dropping to float32.

  Args:
    process: MDLMProcess or DUOProcess.
    logits_fn: denoiser (x int32[B, L], sigma float32[B]) -> logits float[B, L, V].
    key: PRNG key.
    steps: int scalar, number of denoising steps (>= 1).
    batch, length: output shape.
    noise_removal: MDLM 'greedy' | 'none' (default 'greedy' = the reference's argmax of one
      more forward); DUO 'ancestral' | 'greedy' | 'none' (default 'ancestral').
    cache: MDLM only: reuse p_x0 when no token changed (``ddpm_cache``); ignored for a
      time-conditioned MDLM, as in the reference. Must stay True for DUO (unused).
    float64: sampling precision; default False for MDLM, True for DUO.
    mesh: if given, the batch axis of every [B, ...] array is sharded over it.
    temperature: τ > 0 (a Python float): every step draws from p_x0^(1/τ), renormalised
      (``tempered_log_probs``); 1 = the model's own p_x0 (the program is then exactly the
      untempered one). The greedy noise-removal argmax does not depend on τ.
  """
  noise_removal, float64 = _check_options(process, noise_removal, float64)
  check_temperature(temperature)
  dtype = jnp.float64 if float64 else jnp.float32
  if float64 and not jax.config.jax_enable_x64:
    raise RuntimeError("a float64 sampling loop must be traced under jax.enable_x64(True); "
                       "use make_sampler/sample, which do that")

  def constrain(a):
    return sharding.constrain_batch(a, mesh)

  if not isinstance(process, MDLMProcess) and not cache:
    raise ValueError("cache=False only applies to MDLM; DUO's ancestral sampler has no cache")
  is_mdlm = isinstance(process, MDLMProcess)
  reuse = is_mdlm and cache and not process.time_conditioning
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
    if is_mdlm:
      x_next = mdlm_ddpm_step(p_x0, x, t, t - dt, u, process.mask_id)
    else:
      # Noise removal 'ancestral' is one more posterior step, to α_s = 1.
      alpha_s = jnp.where(last, jnp.asarray(1.0, dtype), process.alpha(t - dt))
      x_next = duo_ancestral_step(p_x0, x, alpha_s, process.alpha(t), u)
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


# --- public entry points --------------------------------------------------------------


def make_sampler(process, apply_fn: ApplyFn, *, batch: int, length: int,
                 noise_removal: str | None = None, cache: bool = True,
                 float64: bool | None = None, mesh: Mesh | None = None, **options
                 ) -> Callable[[Any, jax.Array, int], SampleResult]:
  """Compiles a sampler once for every step count.

  Args:
    process: MDLMProcess, DUOProcess or LLaDAProcess.
    apply_fn: (params, x int32[B, L], sigma float32[B]) -> logits float[B, L, V]; params
      are a traced argument, so new weights do not recompile.
    batch, length, noise_removal, cache, float64, mesh: see :func:`sampling_loop`.
      With a mesh, ``batch`` must divide over its batch shards; tokens come back
      batch-sharded.
    **options: ``temperature`` (every process; MDLM/DUO: see :func:`sampling_loop`,
      default 1; LLaDA: generate.py's, default :data:`LLADA_UNCONDITIONAL_TEMPERATURE`);
      LLaDA only: generate.py's ``block_length`` (default: length), ``cfg_scale``,
      ``remasking`` (see :func:`llada_sampling.make_generate`); unconditional (empty
      prompt, gen_length = length).

  Returns:
    ``sampler(params, key, steps: int) -> SampleResult``.
  """
  if isinstance(process, LLaDAProcess):
    return _llada_sampler(process, apply_fn, batch=batch, length=length,
                          noise_removal=noise_removal, cache=cache, float64=float64,
                          mesh=mesh, **options)
  options = dict(options)
  temperature = check_temperature(options.pop("temperature", 1.0))
  if options:
    raise ValueError(f"sampler option(s) {sorted(options)} apply only to "
                     f"diffusion.process='llada', not {getattr(process, 'name', process)!r}")
  noise_removal, float64 = _check_options(process, noise_removal, float64)
  if batch < 1 or length < 1:
    raise ValueError(f"batch and length must be >= 1, got batch={batch}, length={length}")
  if not isinstance(process, MDLMProcess) and not cache:
    raise ValueError("cache=False only applies to MDLM; DUO's ancestral sampler has no cache")
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
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
      raise ValueError(f"steps must be a positive int, got {steps!r}")
    # Scoped precision: the trace and the call both happen in this mode.
    with jax.enable_x64(float64):
      tokens, nfe = jitted(params, key, jnp.asarray(steps, jnp.int32))
    return SampleResult(tokens=tokens, nfe_model=nfe, steps=steps, final_forward=final_forward)

  return sampler


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


def _llada_sampler(process: LLaDAProcess, apply_fn: ApplyFn, *, batch: int, length: int,
                   noise_removal: str | None, cache: bool, float64: bool | None,
                   mesh: Mesh | None, **options) -> Callable[[Any, jax.Array, int], SampleResult]:
  """The unconditional LLaDA sampler behind :func:`make_sampler` (generate.py, empty prompt)."""
  if noise_removal not in (None,) + NOISE_REMOVAL["llada"]:
    raise ValueError(f"noise_removal={noise_removal!r} is not one of {NOISE_REMOVAL['llada']} "
                     f"for llada")
  if not cache:
    raise ValueError("cache=False only applies to MDLM; LLaDA's sampler has no cache")
  if batch < 1 or length < 1:
    raise ValueError(f"batch and length must be >= 1, got batch={batch}, length={length}")
  options = dict({"temperature": LLADA_UNCONDITIONAL_TEMPERATURE}, **options)
  float64 = DEFAULT_FLOAT64["llada"] if float64 is None else bool(float64)
  generate = llada_sampling.make_generate(process, apply_fn, batch=batch, prompt_length=0,
                                          gen_length=length, float64=float64, mesh=mesh,
                                          **options)
  empty = jnp.zeros((batch, 0), jnp.int32)

  def sampler(params, key: jax.Array, steps: int) -> SampleResult:
    res = generate(params, empty, key, steps)
    return SampleResult(tokens=res.tokens, nfe_model=res.nfe_model, steps=steps,
                        final_forward=False, forward_rows=res.forward_rows)

  return sampler
