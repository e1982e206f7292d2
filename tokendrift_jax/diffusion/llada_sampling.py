"""LLaDA's sampler (``generate.py`` ``generate``): semi-autoregressive low-confidence remasking.

The state is the prompt (int[B, P], possibly empty: unconditional generation) followed by
G = gen_length masks. The G positions are split into G / block_length blocks decoded left
to right, and the steps evenly over the blocks (S_b = steps / num_blocks). At the first
step of a block, n_b = the number of masks in that block is split evenly over its S_b
steps (``get_num_transfer_tokens``: n_b // S_b each, one more for the first n_b % S_b
steps). Every step:

  1. logits = f(x); with classifier-free guidance (cfg_scale > 0) also the un-prompted
     logits u = f(x with every prompt position masked) and logits = u + (cfg + 1)(f(x) − u);
  2. x0 = argmax of the logits at temperature 0, else of the Gumbel-perturbed logits
     exp(logits) / (−log r)^τ, r ~ U[0, 1) in float64 (``add_gumbel_noise``), computed here
     as its logarithm logits − τ log(−log r): the same argmax, without the overflow of
     exp(logits) for logits > 709;
  3. confidence = softmax(logits)[x0] ('low_confidence', the un-perturbed logits over all V
     ids, mask included) or U[0, 1) ('random'); −∞ after the end of the current block and
     at every position that is not a mask;
  4. the k = (step's share of n_b) most confident positions of each row get x0.

Positions are never remasked once committed; the argmax runs over every id including the
mask, as in generate.py (no training target is ever the mask, so a trained LLaDA gives it
little mass; a committed mask id simply stays masked and stays eligible in later steps,
before the current block too, as there).
The prompt is never changed (unless it contains mask ids, which generate.py treats as
positions to fill).

Randomness: ``k_gumbel, k_remask = jax.random.split(key)``; step i = 0..steps−1 (counted
over all blocks) draws :func:`step_uniforms` ``(k_gumbel, i, [B, P + G, V], float64)`` for the
Gumbel noise (only when temperature > 0) and ``(k_remask, i, [B, P + G], float32)`` for the
'random' confidences (only then), float32 like ``torch.rand``.

Per-row noise (``key`` of shape [B], one PRNG key per row, e.g. ``jax.random.split(key,
B)``): row b draws its own noise from its own key over its **generated positions only**,
``k_gumbel[b], k_remask[b] = jax.random.split(key[b])`` and :func:`row_uniforms`, i.e.
``step_uniforms(k_gumbel[b], i, [G, V], float64)`` (float32 without ``float64``) and
``step_uniforms(k_remask[b], i, [G], float32)``: the draws span [B, G, V] and [B, G], not
[B, P + G, ...]. So a row's noise does not depend on the padded width P, on the batch size
or on the other rows, and a batch of left-padded prompts (``prompt_mask``) gives row b
exactly the completion that prompt b gets alone (batch 1, its own unpadded length, key
``key[b:b + 1]``). Only the generated positions are candidates in this mode (a prompt
position never is): generate.py also fills mask ids inside the prompt, and noise drawn
there would depend on the padding; :func:`make_generate`'s ``generate`` refuses such a
prompt. The guided logits (cfg_scale > 0) are perturbed the same way. A single key (shape
[]) gives the program above, unchanged.

NFE: one backbone call per step, so nfe_model = steps exactly. With CFG each call runs the
backbone on 2B rows (the prompted and un-prompted copy of every row, interleaved so that a
row's two copies stay on its device under batch sharding); ``forward_rows`` reports the
rows per call.

Padded prompts (generate.py's ``attention_mask``; its ``main`` batches prompts of different
lengths by **left** padding them): ``prompt_mask`` bool [B, P], True at real prompt
tokens, is extended with True over the G generated positions (``torch.cat([attention_mask,
ones])``) and given to the backbone as its ``attention_mask`` at every call (both copies
with guidance), so no pad is ever attended; the backbone's rotary positions are those of
the padded row (LLaDA's ``RotaryEmbedding`` takes no position ids: generate.py passes no
offset, and neither does this sampler). Pads count as prompt (``prompt_index = x !=
mask_id``; the un-prompted copy masks them too, as there) and are never filled: generate.py
asserts that the pad id is not the mask id, and here a position outside the mask is never
a candidate whatever its id. The blocks start after the padded width P, as there.

Ties: torch.topk's order among equal confidences is unspecified; here the lower position
wins (a stable sort). Not built: generate.py's ``logits_eos_inf`` /
``confidence_eos_eot_inf`` options (they hard-code LLaDA's EOS/EoT ids).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tokendrift_jax import sharding
from tokendrift_jax.diffusion.base import Process

REMASKING = ("low_confidence", "random")

# (x, sigma) -> logits; with a padded prompt also the keyword attention_mask (bool [R, T]).
LogitsFn = Callable[..., jax.Array]
ApplyFn = Callable[..., jax.Array]


@flax.struct.dataclass
class GenerateResult:
  """Output of the LLaDA sampler.

  Attributes:
    tokens: int32[B, P + G], the prompt followed by the generated tokens.
    nfe_model: int32 scalar, backbone calls actually made (= steps).
    steps: sampling steps (the paper's NFE), over all blocks.
    forward_rows: rows the backbone sees per call: B, or 2B with classifier-free guidance.
    prompt_length: P.
  """

  tokens: jax.Array
  nfe_model: jax.Array
  steps: int = flax.struct.field(pytree_node=False)
  forward_rows: int = flax.struct.field(pytree_node=False)
  prompt_length: int = flax.struct.field(pytree_node=False)

  @property
  def nfe(self) -> int:
    return self.steps

  @property
  def generated(self) -> jax.Array:
    """int32[B, G], the tokens after the prompt."""
    return self.tokens[:, self.prompt_length:]


# --- pieces ---------------------------------------------------------------------------


def step_uniforms(key: jax.Array, step: jax.Array | int, shape: tuple[int, ...], dtype
                  ) -> jax.Array:
  """The uniforms of sampler step ``step``: U[0, 1) of ``shape`` from fold_in(key, step)."""
  return jax.random.uniform(jax.random.fold_in(key, step), shape, dtype=dtype)


def row_uniforms(keys: jax.Array, step: jax.Array | int, shape: tuple[int, ...], dtype
                 ) -> jax.Array:
  """Per-row uniforms, [B, *shape]: row b is ``step_uniforms(keys[b], step, shape, dtype)``
  (so it does not depend on B or on the other rows' keys).

  Args:
    keys: B PRNG keys (typed key[B], or raw uint32[B, 2]).
  """
  return jax.vmap(lambda k: step_uniforms(k, step, shape, dtype))(keys)


def split_keys(key: jax.Array, per_row: bool) -> tuple[jax.Array, jax.Array]:
  """``jax.random.split(key)``'s two keys; of per-row keys [B], each row's two, as two [B]
  key arrays (row b's pair is ``jax.random.split(key[b])``)."""
  if not per_row:
    a, b = jax.random.split(key)
    return a, b
  pairs = jax.vmap(jax.random.split)(key)   # [B, 2] keys
  return pairs[:, 0], pairs[:, 1]


def is_per_row_key(key, batch: int) -> bool:
  """Whether ``key`` is one PRNG key (False: a typed key of shape [], or a raw uint32[2])
  or one key per row (True: key[B], or raw uint32[B, 2]); one-line ValueError otherwise."""
  shape = tuple(getattr(key, "shape", ()))
  dtype = getattr(key, "dtype", None)
  typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
  base = 0 if typed else 1   # a raw key has its words on the last axis
  if len(shape) == base:
    return False
  if len(shape) == base + 1 and shape[0] == batch:
    return True
  raise ValueError(f"key must be one PRNG key or one per row ([B] = [{batch}] keys, e.g. "
                   f"jax.random.split(key, {batch})), got {dtype}{list(shape)}")


def check_row_key_prompt(prompt, prompt_mask, mask_id: int) -> None:
  """Per-row noise fills only the generated positions (module doc): a prompt that holds
  the mask id at a real position is refused with a one-line ValueError (checked when the
  prompt is on the host or fully addressable; a traced prompt is not checked)."""
  if isinstance(prompt, jax.core.Tracer) or not getattr(prompt, "is_fully_addressable",
                                                        True):
    return
  holds = np.asarray(prompt) == mask_id
  if prompt_mask is not None and not isinstance(prompt_mask, jax.core.Tracer):
    holds = np.logical_and(holds, np.asarray(prompt_mask))
  if holds.any():
    rows = np.flatnonzero(holds.any(axis=1)).tolist()
    raise ValueError(f"per-row noise fills the generated positions only, but prompt rows "
                     f"{rows} hold the mask id {mask_id} (generate.py would fill it; use "
                     f"one key for such prompts)")


def transfer_count(mask_count: jax.Array, steps_per_block: jax.Array | int,
                   step_in_block: jax.Array | int) -> jax.Array:
  """Tokens to commit at step j of a block (``get_num_transfer_tokens``), int32[B].

  n // S, plus one for the first n % S steps, so that the S steps commit n in all.

  Args:
    mask_count: int[B], masks in the block at its first step (n).
    steps_per_block: S >= 1.
    step_in_block: j in [0, S).
  """
  mask_count = jnp.asarray(mask_count, jnp.int32)
  s = jnp.asarray(steps_per_block, jnp.int32)
  extra = jnp.asarray(step_in_block, jnp.int32) < mask_count % s
  return (mask_count // s + extra.astype(jnp.int32)).astype(jnp.int32)


def gumbel_perturb(logits: jax.Array, u: jax.Array, temperature: float) -> jax.Array:
  """log of generate.py's ``add_gumbel_noise``: logits − τ log(−log u), in u's dtype.

  argmax of it is argmax of exp(logits) / (−log u)^τ, a draw from softmax(logits / τ)
  (Gumbel-max). temperature 0 returns the logits unchanged (greedy).

  Args:
    logits: float[..., V].
    u: float[..., V] uniforms in [0, 1) (float64 as generate.py).
    temperature: τ >= 0 (a Python float).
  """
  if temperature == 0:
    return logits
  chex.assert_equal_shape([logits, u])
  return logits.astype(u.dtype) - temperature * jnp.log(-jnp.log(u))


def guided_logits(cond: jax.Array, uncond: jax.Array, cfg_scale: float) -> jax.Array:
  """Classifier-free guidance of generate.py: uncond + (cfg + 1)(cond − uncond)."""
  return uncond + (cfg_scale + 1) * (cond - uncond)


def select_top(confidence: jax.Array, k: jax.Array) -> jax.Array:
  """bool[B, T]: the k_b most confident positions of each row (torch.topk per row).

  Args:
    confidence: float[B, T] (−∞ where not eligible).
    k: int[B], 0 <= k_b <= T.
  """
  chex.assert_rank(confidence, 2)
  chex.assert_shape(k, confidence.shape[:1])
  # Rank of every position by descending confidence; ties: the lower position first.
  order = jnp.argsort(-confidence, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  return rank < k[:, None]


def confidence(logits: jax.Array, x0: jax.Array, remasking: str,
               u: jax.Array | None = None) -> jax.Array:
  """x0's confidence, float32[B, T]: softmax(logits)[x0] ('low_confidence'), or ``u``
  ('random', float[B, T] uniforms)."""
  if remasking == "low_confidence":
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(p, x0[..., None], axis=-1)[..., 0]
  if remasking == "random":
    chex.assert_shape(u, x0.shape)
    return u.astype(jnp.float32)
  raise ValueError(f"remasking={remasking!r} is not one of {REMASKING}")


# --- loop -----------------------------------------------------------------------------


def check_options(*, gen_length: int, block_length: int, temperature: float,
                  cfg_scale: float, remasking: str) -> None:
  """One-line errors for the static options (generate.py's asserts and arguments)."""
  if isinstance(gen_length, bool) or not isinstance(gen_length, int) or gen_length < 1:
    raise ValueError(f"gen_length must be a positive int, got {gen_length!r}")
  if (isinstance(block_length, bool) or not isinstance(block_length, int)
      or not 1 <= block_length <= gen_length or gen_length % block_length):
    raise ValueError(f"block_length={block_length!r} must divide gen_length={gen_length}")
  if not temperature >= 0:
    raise ValueError(f"temperature must be >= 0, got {temperature!r}")
  if not cfg_scale >= 0:
    raise ValueError(f"cfg_scale must be >= 0 (0 = no guidance), got {cfg_scale!r}")
  if remasking not in REMASKING:
    raise ValueError(f"remasking={remasking!r} is not one of {REMASKING}")


def check_prompt_mask(prompt_mask, batch: int, prompt_length: int) -> None:
  """A padded prompt's mask: None, or bool [B, P] (True = real token); one-line ValueError
  naming the argument and the shape otherwise."""
  if prompt_mask is None:
    return
  shape = tuple(getattr(prompt_mask, "shape", ()))
  dtype = getattr(prompt_mask, "dtype", None)
  if shape != (batch, prompt_length) or dtype != jnp.bool_:
    raise ValueError(f"prompt_mask must be bool [B, P] = [{batch}, {prompt_length}], got "
                     f"{dtype}{list(shape)}")


def check_steps(steps: int, gen_length: int, block_length: int) -> None:
  """generate.py's ``assert steps % num_blocks == 0``, as a one-line error."""
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}")
  num_blocks = gen_length // block_length
  if steps % num_blocks:
    raise ValueError(f"steps={steps} must be a multiple of the number of blocks "
                     f"{num_blocks} (gen_length {gen_length} / block_length {block_length})")


def generate_loop(logits_fn: LogitsFn, prompt: jax.Array, key: jax.Array, steps: jax.Array,
                  *, mask_id: int, gen_length: int, block_length: int,
                  temperature: float = 0.0, cfg_scale: float = 0.0,
                  remasking: str = "low_confidence", float64: bool = True,
                  mesh: Mesh | None = None, prompt_mask: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
  """Traceable generate.py: (tokens int32[B, P + G], nfe_model int32 scalar).

  Call it inside jit (``steps`` may be traced; a multiple of the number of blocks, which
  :func:`check_steps` checks on the host). A float64 loop (temperature > 0 and
  ``float64``) must be traced under ``jax.enable_x64(True)``.

  Args:
    logits_fn: denoiser (x int32[R, T], sigma float32[R]) -> logits float[R, T, V]; σ is
      zeros (LLaDA has no time input); R = B, or 2B with guidance. With ``prompt_mask``
      it is called with the keyword ``attention_mask`` bool [R, T] too.
    prompt: int[B, P] (P may be 0), left-padded when ``prompt_mask`` is given.
    key: one PRNG key, or B keys (key[B]: per-row noise over the generated positions
      only; see the module doc for both).
    steps: int scalar, total steps over all blocks.
    mask_id, gen_length, block_length, temperature, cfg_scale, remasking: as generate.py.
    float64: draw and apply the Gumbel noise in float64 (generate.py); False: float32.
    mesh: if given, the batch axis of every [B, ...] array is sharded over it.
    prompt_mask: optional bool [B, P], True at real prompt tokens (see the module doc);
      None = every prompt token is real (the same program as without it).
  """
  check_options(gen_length=gen_length, block_length=block_length, temperature=temperature,
                cfg_scale=cfg_scale, remasking=remasking)
  chex.assert_rank(prompt, 2)
  check_prompt_mask(prompt_mask, *prompt.shape)
  noisy = temperature > 0
  noise_dtype = jnp.float64 if float64 else jnp.float32
  if noisy and float64 and not jax.config.jax_enable_x64:
    raise RuntimeError("a float64 LLaDA sampler must be traced under jax.enable_x64(True); "
                       "use make_generate / generate, which do that")

  def constrain(a):
    return sharding.constrain_batch(a, mesh)

  batch, p_len = prompt.shape
  total = p_len + gen_length
  steps = jnp.asarray(steps, jnp.int32)
  per_block = steps // (gen_length // block_length)
  pos = jnp.arange(total, dtype=jnp.int32)
  per_row = is_per_row_key(key, batch)
  k_gumbel, k_remask = split_keys(key, per_row)

  x = jnp.concatenate([prompt.astype(jnp.int32),
                       jnp.full((batch, gen_length), mask_id, jnp.int32)], axis=1)
  x = constrain(x)
  prompt_index = x != mask_id   # generate.py's prompt_index: fixed at the start
  real = None
  if prompt_mask is not None:
    real = constrain(jnp.concatenate([prompt_mask, jnp.ones((batch, gen_length), bool)],
                                     axis=1))

  def call(x, rows):
    sigma = jnp.zeros((rows,), jnp.float32)
    if real is None:
      return logits_fn(x, sigma)
    mask = real if rows == batch else constrain(
        jnp.stack([real, real], axis=1).reshape(rows, total))
    return logits_fn(x, sigma, attention_mask=mask)

  def forward(x):
    if cfg_scale == 0:
      return call(x, batch)
    un_x = jnp.where(prompt_index, mask_id, x)
    # Row 2b is row b, row 2b + 1 its un-prompted copy (see the module doc).
    both = constrain(jnp.stack([x, un_x], axis=1).reshape(2 * batch, total))
    out = call(both, 2 * batch)
    out = out.reshape(batch, 2, total, out.shape[-1])
    return guided_logits(out[:, 0], out[:, 1], cfg_scale)

  def per_row_choice(logits, x, mask_index, pos, i, j, start, block_count):
    """Steps 2-4 on the generated positions only ([B, G, V] logits, [B, G] the rest),
    with each row's own draws: (take bool[B, G], x0 int32[B, G])."""
    if noisy:
      u = constrain(row_uniforms(k_gumbel, i, (gen_length, logits.shape[-1]), noise_dtype))
      x0 = jnp.argmax(gumbel_perturb(logits, u, temperature), axis=-1).astype(jnp.int32)
    else:
      x0 = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    u_remask = None
    if remasking == "random":
      u_remask = constrain(row_uniforms(k_remask, i, (gen_length,), jnp.float32))
    conf = confidence(logits, x0, remasking, u_remask)
    conf = jnp.where(pos >= start + block_length, -jnp.inf, conf)
    conf = jnp.where(mask_index, conf, -jnp.inf)
    x0 = jnp.where(mask_index, x0, x)
    return select_top(conf, transfer_count(block_count, per_block, j)), x0

  def body(i, carry):
    x, block_count, nfe = carry
    block, j = i // per_block, i % per_block
    start = p_len + block * block_length
    in_block = jnp.logical_and(pos >= start, pos < start + block_length)
    mask_index = x == mask_id
    if real is not None:
      mask_index = jnp.logical_and(mask_index, real)   # a pad is never filled
    count_now = jnp.sum(jnp.logical_and(mask_index, in_block), axis=1, dtype=jnp.int32)
    block_count = jnp.where(j == 0, count_now, block_count)

    logits = constrain(forward(x))
    nfe = nfe + 1
    if per_row:
      take, x0 = per_row_choice(logits[:, p_len:], x[:, p_len:], mask_index[:, p_len:],
                                pos[p_len:], i, j, start, block_count)
      x = jnp.concatenate([x[:, :p_len], jnp.where(take, x0, x[:, p_len:])], axis=1)
      return constrain(x), block_count, nfe
    if noisy:
      u = constrain(step_uniforms(k_gumbel, i, logits.shape, noise_dtype))
      x0 = jnp.argmax(gumbel_perturb(logits, u, temperature), axis=-1).astype(jnp.int32)
    else:
      x0 = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    u_remask = None
    if remasking == "random":
      u_remask = constrain(step_uniforms(k_remask, i, (batch, total), jnp.float32))
    conf = confidence(logits, x0, remasking, u_remask)
    # generate.py blanks only the positions after the block; those before it are prompt
    # or committed, hence unmasked (−∞ below) unless a mask id was committed there.
    conf = jnp.where(pos >= start + block_length, -jnp.inf, conf)
    conf = jnp.where(mask_index, conf, -jnp.inf)
    x0 = jnp.where(mask_index, x0, x)
    take = select_top(conf, transfer_count(block_count, per_block, j))
    return constrain(jnp.where(take, x0, x)), block_count, nfe

  carry = (x, jnp.zeros((batch,), jnp.int32), jnp.asarray(0, jnp.int32))
  x, _, nfe = jax.lax.fori_loop(0, steps, body, carry)
  chex.assert_shape(x, (batch, total))
  chex.assert_type([x, nfe], jnp.int32)
  return x, nfe


# --- public entry points --------------------------------------------------------------


def make_generate(process: Process, apply_fn: ApplyFn, *, batch: int,
                  prompt_length: int, gen_length: int, block_length: int | None = None,
                  temperature: float = 0.0, cfg_scale: float = 0.0,
                  remasking: str = "low_confidence", float64: bool = True,
                  mesh: Mesh | None = None
                  ) -> Callable[[Any, jax.Array, jax.Array, int], GenerateResult]:
  """Compiles generate.py once for every step count (prompt-conditioned entry point).

  Defaults are generate.py's, except block_length: None = gen_length (a single block;
  generate.py's default 128 equals its default gen_length).

  Args:
    process: the LLaDAProcess (its mask id; any masked :class:`Process` serves, as only
      the mask id is used: ``LLaDAProcess.make_sampler`` is the process-level entry).
    apply_fn: (params, x int32[R, T], sigma float32[R]) -> logits float[R, T, V].
    batch: B; prompt_length: P (0 for unconditional generation); gen_length: G.
    block_length, temperature, cfg_scale, remasking, float64, mesh: see
      :func:`generate_loop`. With a mesh, ``batch`` must divide over its batch shards.

  Returns:
    ``generate(params, prompt int[B, P], key, steps: int, prompt_mask=None) ->
    GenerateResult``; ``prompt_mask`` bool [B, P] marks the real tokens of left-padded
    prompts (see the module doc), and ``apply_fn`` is then also given the keyword
    ``attention_mask`` bool [R, P + G] (the backbone contract's padding mask). ``key``:
    one PRNG key, or key[B] for per-row noise (each row's draws over its G generated
    positions only, so that a padded batch completes every prompt as it is completed
    alone; module doc). ``generate.lower(params, prompt, key, steps, prompt_mask=None)``
    its jit ``Lowered`` (planning).
  """
  # Only the mask id is used; a process without one cannot be sampled by remasking.
  if not isinstance(process, Process) or process.mask_id is None:
    raise TypeError(f"process must be a masked Process (an LLaDAProcess), got "
                    f"{type(process).__name__}")
  block_length = gen_length if block_length is None else block_length
  check_options(gen_length=gen_length, block_length=block_length, temperature=temperature,
                cfg_scale=cfg_scale, remasking=remasking)
  if batch < 1 or prompt_length < 0:
    raise ValueError(f"batch must be >= 1 and prompt_length >= 0, got batch={batch}, "
                     f"prompt_length={prompt_length}")
  if mesh is not None:
    sharding.check_batch_divisible(batch, mesh, "sampling batch")
    out_shardings = (sharding.batch_sharding(mesh, 2), sharding.replicated(mesh))
  else:
    out_shardings = None
  float64 = bool(float64)
  options = dict(mask_id=process.mask_id, gen_length=gen_length, block_length=block_length,
                 temperature=float(temperature), cfg_scale=float(cfg_scale),
                 remasking=remasking, float64=float64, mesh=mesh)

  def run(params, prompt, key, steps, prompt_mask):
    return generate_loop(lambda x, sigma, **kw: apply_fn(params, x, sigma, **kw), prompt, key,
                         steps, prompt_mask=prompt_mask, **options)

  jitted = jax.jit(run, out_shardings=out_shardings)
  rows = 2 * batch if cfg_scale > 0 else batch

  def generate(params, prompt: jax.Array, key: jax.Array, steps: int,
               prompt_mask: jax.Array | None = None) -> GenerateResult:
    if (prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer)
        or prompt.shape != (batch, prompt_length)):
      raise ValueError(f"prompt must be int [B, P] = [{batch}, {prompt_length}], got "
                       f"{prompt.dtype}{list(prompt.shape)}")
    check_prompt_mask(prompt_mask, batch, prompt_length)
    check_steps(steps, gen_length, block_length)
    if is_per_row_key(key, batch):
      check_row_key_prompt(prompt, prompt_mask, process.mask_id)
    with jax.enable_x64(float64):
      tokens, nfe = jitted(params, jnp.asarray(prompt, jnp.int32), key,
                           jnp.asarray(steps, jnp.int32),
                           None if prompt_mask is None else jnp.asarray(prompt_mask))
    return GenerateResult(tokens=tokens, nfe_model=nfe, steps=steps, forward_rows=rows,
                          prompt_length=prompt_length)

  def lower(params, prompt, key, steps, prompt_mask=None):
    """The jitted generate.py lowered for ``(params, prompt int32[B, P], key (one, or
    [B]), steps int32 scalar[, prompt_mask bool [B, P]])`` (arrays or ShapeDtypeStructs),
    at its precision (for planning)."""
    with jax.enable_x64(float64):
      return jitted.lower(params, prompt, key, steps, prompt_mask)

  generate.lower = lower
  return generate


def generate(process: Process, logits_fn: LogitsFn, prompt: jax.Array, key: jax.Array,
             *, steps: int, gen_length: int, block_length: int | None = None,
             temperature: float = 0.0, cfg_scale: float = 0.0,
             remasking: str = "low_confidence", float64: bool = True,
             mesh: Mesh | None = None, prompt_mask: jax.Array | None = None
             ) -> GenerateResult:
  """One-off generate.py with a closed-over denoiser ``logits_fn(x, sigma)``
  (``logits_fn(x, sigma, attention_mask=...)`` with a left-padded prompt's ``prompt_mask``);
  ``key``: one PRNG key, or key[B] for per-row noise (module doc).

  Compiles on every call; for repeated use :func:`make_generate`.
  """
  prompt = jnp.asarray(prompt)
  if prompt.ndim != 2:
    raise ValueError(f"prompt must be int [B, P], got shape {list(prompt.shape)}")
  gen = make_generate(process, lambda _, x, sigma, **kw: logits_fn(x, sigma, **kw),
                      batch=prompt.shape[0],
                      prompt_length=prompt.shape[1], gen_length=gen_length,
                      block_length=block_length, temperature=temperature,
                      cfg_scale=cfg_scale, remasking=remasking, float64=float64, mesh=mesh)
  return gen(None, prompt, key, steps, prompt_mask)
