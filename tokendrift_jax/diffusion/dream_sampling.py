"""Dream's sampler: ``diffusion_generate`` of the public ``generation_utils.py`` (``_sample``).

The state is the prompt (int[B, P], possibly empty) followed by G = gen_length masks
(``F.pad(input_ids, (0, max_length - P), value=mask_token_id)``). With the times
t_0..t_S = ``torch.linspace(1, eps, steps + 1)`` (float32; :func:`timestep`), step
i = 0..S−1 (t = t_i, s = t_{i+1}):

  1. logits = f(x), **aligned** as generation_utils.py aligns them
     (``torch.cat([logits[:, :1], logits[:, :-1]], dim=1)``: the raw logit at i − 1 is the
     prediction for position i). The Dream backbone (:mod:`tokendrift_jax.models.dream`)
     returns its logits so aligned, so ``logits_fn`` here is the backbone as it is.
  2. ``sample_tokens`` at every masked position: logits / temperature (when > 0), then
     top-p (``top_p < 1``: keep the smallest prefix of the descending order whose
     softmax mass reaches top_p, the first token always; the rest set to float32's min),
     then top-k (logits below the k-th largest set to float32's min); probs = softmax.
     x0 ~ Categorical(probs) and confidence = probs[x0] when temperature > 0, else
     (confidence, x0) = the max of probs. ``topk_margin``: confidence = top1 − top2 of
     probs; ``entropy``: confidence = Σ probs log(probs + 1e-10) (the negative entropy).
  3. ``alg = 'origin'``: each masked position independently gets its x0 with probability
     p = 1 − s/t (1 at the last step), otherwise stays masked.
     Any other ``alg`` (``maskgit_plus``, ``topk_margin``, ``entropy``): k =
     int(n̄ (1 − s/t)) (int(n̄) at the last step) with n̄ = (masked positions in the batch)
     / B in float32, the same k for every row; if k > 0, each row's k positions of highest
     confidence (−∞ where not masked; ``torch.topk``) -- or, with ``alg_temp`` > 0, k
     positions drawn without replacement with weights softmax(confidence / alg_temp)
     (``torch.multinomial``) -- are set to x0 where masked and to the mask id elsewhere.

The last rule is the public one exactly, quirks included: when a row has fewer than k
masked positions (rows whose mask counts differ, e.g. after a committed mask id), its
top-k reaches −∞ positions and writes the mask id there, remasking committed tokens.

Randomness (``k_token, k_order = jax.random.split(key)``), for step i:
``step_uniforms(k_token, i, [B, T, V])`` (only when temperature > 0) realises the
Categorical draw by Gumbel-max, x0 = argmax(log probs − log(−log u)), a draw from
Categorical(probs); ``step_uniforms(k_order, i, [B, T])`` gives the ``origin`` transfer
draws (u < p), or, with ``alg_temp`` > 0, the Gumbel-top-k realisation of
``torch.multinomial`` without replacement: the k largest of log w − log(−log u). All in
float32.

Per-row noise (``key`` of shape [B], one PRNG key per row, e.g. ``jax.random.split(key,
B)``): every draw of row b comes from its own key over its **generated positions only**,
``k_token[b], k_order[b] = jax.random.split(key[b])`` and ``row_uniforms`` of
:mod:`llada_sampling`, i.e. ``step_uniforms(k_token[b], i, [G, V])`` and
``step_uniforms(k_order[b], i, [G])``: the draws span [B, G, V] and [B, G], not
[B, P + G, ...]; the steps 2-3 then run on the generated positions (the top-k, the
sampled order's softmax over positions and the 'origin' draws), which are the only
candidates (a prompt position never is: noise there would depend on the padding;
``generate`` refuses a prompt holding the mask id). So a row's noise does not depend on
the padded width P, on B or on the other rows, and a batch of left-padded prompts gives
row b the completion that prompt b gets alone with key ``key[b:b + 1]``, as long as the
rows keep equal mask counts (n̄ of the top-k rules is the batch mean, which couples
rows only once some row has committed the mask id; the 'origin' rule is per row
always). A single key (shape []) gives the program above, unchanged.

NFE: one backbone call per step, nfe_model = steps exactly (the public loop runs every
step).

Differences from the public code (documented, not hidden): the draws use JAX's PRNG, not
torch's; ties of ``topk`` / ``max`` go to the lower position / id (torch's order among
ties is unspecified); the float math runs in float32 (the release's logits are in the
model's dtype, bfloat16 as its demos load it, and its confidences in that dtype); its
fallback to the max when ``Categorical`` raises (NaN probabilities) is not reproduced.
Not built: the generation hooks.

Padded prompts (``diffusion_generate(input_ids, attention_mask=...)`` with left-padded
``input_ids``, as a Hugging Face tokenizer with ``padding_side='left'`` gives them):
``prompt_mask`` bool [B, P], True at real prompt tokens, is extended with True over the G
generated positions (``F.pad(attention_mask, ..., value=1.0)``) and given to the backbone
as its ``attention_mask`` at every call; the Dream backbone then counts rotary positions
from each row's first real token (``tok_idx``) and masks the pads out of attention
(:mod:`tokendrift_jax.models.dream`). Nothing else changes: the loop reads the same masked
positions (pads are not the mask id; as a guard, a position outside the mask is never
filled whatever its id), and n̄ of the top-k rules is still the batch's mean mask count.
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tokendrift_jax import sharding
from tokendrift_jax.diffusion.base import Process
from tokendrift_jax.diffusion.llada_sampling import (GenerateResult, check_prompt_mask,
                                                     check_row_key_prompt, is_per_row_key,
                                                     row_uniforms, select_top, split_keys,
                                                     step_uniforms)

ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
# torch.finfo(float32).min: what top_p_logits / top_k_logits write into removed logits.
FILTERED = float(jnp.finfo(jnp.float32).min)
# sample_tokens' epsilon inside the log of the negative entropy.
ENTROPY_EPS = 1e-10

# (x, sigma) -> aligned logits; with a padded prompt also the keyword attention_mask.
LogitsFn = Callable[..., jax.Array]
ApplyFn = Callable[..., jax.Array]


# --- pieces ---------------------------------------------------------------------------


def timestep(j: jax.Array | int, steps: jax.Array | int, eps: float) -> jax.Array:
  """t_j of ``torch.linspace(1, eps, steps + 1)`` in float32, by the formula of torch's
  linspace kernels: with n = steps + 1 points and δ = (eps − 1) / (n − 1), 1 + δ·j for
  j < n // 2, else eps − δ·(n − 1 − j) (so both ends are exact). torch's own values can
  differ from it by 1 ulp (its CPU kernel vectorises as base + lane·δ, its CUDA kernel may
  contract to an FMA); what that can change, int(n̄ (1 − s/t)) at an exact integer or
  u < 1 − s/t at equality, is a measure-zero event the tests check their draws avoid."""
  j = jnp.asarray(j, jnp.int32)
  steps = jnp.asarray(steps, jnp.int32)
  one, end = jnp.float32(1.0), jnp.float32(eps)
  delta = (end - one) / steps.astype(jnp.float32)
  lo = one + delta * j.astype(jnp.float32)
  hi = end - delta * (steps - j).astype(jnp.float32)
  return jnp.where(j < (steps + 1) // 2, lo, hi)


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
  """``top_p_logits``: float32[..., V] with the ids outside the top-p nucleus set to
  float32's min (the descending order's cumulative softmax > top_p, shifted right by one
  so that the first id is always kept)."""
  order = jnp.argsort(-logits, axis=-1, stable=True)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  remove_sorted = jnp.concatenate([jnp.zeros_like(cum[..., :1], bool),
                                   (cum > top_p)[..., :-1]], axis=-1)
  remove = jnp.take_along_axis(remove_sorted, jnp.argsort(order, axis=-1), axis=-1)
  return jnp.where(remove, FILTERED, logits)


def top_k_filter(logits: jax.Array, top_k: int) -> jax.Array:
  """``top_k_logits``: logits below the k-th largest (k = min(top_k, V)) set to float32's
  min; ties with the k-th are kept."""
  k = min(int(top_k), logits.shape[-1])
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, FILTERED, logits)


def sample_tokens(logits: jax.Array, *, alg: str, temperature: float, top_p, top_k,
                  u: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``sample_tokens`` of generation_utils.py for ``alg``: (confidence float32[B, T], x0
  int32[B, T]) from logits float[B, T, V]; ``u`` float32[B, T, V] uniforms for the
  Categorical draw (required when temperature > 0; see the module doc)."""
  logits = logits.astype(jnp.float32)
  if temperature > 0:
    logits = logits / jnp.float32(temperature)
  if top_p is not None and top_p < 1:
    logits = top_p_filter(logits, top_p)
  if top_k is not None:
    logits = top_k_filter(logits, top_k)
  probs = jax.nn.softmax(logits, axis=-1)
  if temperature > 0:
    chex.assert_equal_shape([logits, u])
    x0 = jnp.argmax(jnp.log(probs) - jnp.log(-jnp.log(u)), axis=-1).astype(jnp.int32)
  else:
    x0 = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  if alg == "topk_margin":
    top2 = jax.lax.top_k(probs, 2)[0]
    return top2[..., 0] - top2[..., 1], x0
  if alg == "entropy":
    return jnp.sum(probs * jnp.log(probs + ENTROPY_EPS), axis=-1), x0
  return jnp.take_along_axis(probs, x0[..., None], axis=-1)[..., 0], x0


def transfer_count(mask_index: jax.Array, t: jax.Array, s: jax.Array,
                   last: jax.Array) -> jax.Array:
  """k = int(n̄ (1 − s/t)), or int(n̄) at the last step; n̄ = mask_index.sum() / B in
  float32 (the batch mean, as ``mask_index.sum() / mask_index.shape[0]``). int32 scalar."""
  n_bar = jnp.sum(mask_index, dtype=jnp.int32).astype(jnp.float32) / jnp.float32(
      mask_index.shape[0])
  k = jnp.where(last, n_bar, n_bar * (1 - s / t))
  return k.astype(jnp.int32)   # truncation toward zero, as int()


# --- loop -----------------------------------------------------------------------------


def check_options(*, gen_length: int, alg: str, temperature: float, top_p, top_k,
                  alg_temp, eps: float) -> None:
  """One-line errors for the static options (DreamGenerationConfig's fields)."""
  if isinstance(gen_length, bool) or not isinstance(gen_length, int) or gen_length < 1:
    raise ValueError(f"gen_length must be a positive int, got {gen_length!r}")
  if alg not in ALGS:
    raise ValueError(f"alg={alg!r} is not one of {ALGS}")
  if isinstance(temperature, bool) or not temperature >= 0:
    raise ValueError(f"temperature must be >= 0, got {temperature!r}")
  if top_p is not None and (isinstance(top_p, bool) or not 0 < top_p <= 1):
    raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")
  if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                            or top_k < 1):
    raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
  if alg_temp is not None and (isinstance(alg_temp, bool) or not alg_temp >= 0):
    raise ValueError(f"alg_temp must be None or >= 0, got {alg_temp!r}")
  if isinstance(eps, bool) or not 0 < eps < 1:
    raise ValueError(f"eps must be in (0, 1), got {eps!r}")


def check_steps(steps: int) -> None:
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be a positive int, got {steps!r}")


def generate_loop(logits_fn: LogitsFn, prompt: jax.Array, key: jax.Array, steps: jax.Array,
                  *, mask_id: int, gen_length: int, alg: str = "origin",
                  temperature: float = 0.0, top_p: float | None = None,
                  top_k: int | None = None, alg_temp: float | None = None,
                  eps: float = 1e-3, mesh: Mesh | None = None,
                  prompt_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Traceable ``diffusion_generate``: (tokens int32[B, P + G], nfe_model int32 scalar).

  Args:
    logits_fn: the aligned denoiser (x int32[B, T], sigma float32[B]) -> logits
      float[B, T, V]; σ is zeros (Dream has no time input). With ``prompt_mask`` it is
      called with the keyword ``attention_mask`` bool [B, T] too.
    prompt: int[B, P] (P may be 0), left-padded when ``prompt_mask`` is given.
    key: one PRNG key, or B keys (key[B]: per-row noise over the generated positions
      only; see the module doc for both).
    steps: int scalar (may be traced).
    mask_id, gen_length, alg, temperature, top_p, top_k, alg_temp, eps: as
      generation_utils.py (gen_length = max_new_tokens).
    mesh: if given, the batch axis of every [B, ...] array is sharded over it.
    prompt_mask: optional bool [B, P], True at real prompt tokens (see the module doc);
      None = every prompt token is real (the same program as without it).
  """
  check_options(gen_length=gen_length, alg=alg, temperature=temperature, top_p=top_p,
                top_k=top_k, alg_temp=alg_temp, eps=eps)
  chex.assert_rank(prompt, 2)
  check_prompt_mask(prompt_mask, *prompt.shape)

  def constrain(a):
    return sharding.constrain_batch(a, mesh)

  batch, p_len = prompt.shape
  total = p_len + gen_length
  steps = jnp.asarray(steps, jnp.int32)
  per_row = is_per_row_key(key, batch)
  k_token, k_order = split_keys(key, per_row)
  x = constrain(jnp.concatenate([prompt.astype(jnp.int32),
                                 jnp.full((batch, gen_length), mask_id, jnp.int32)], axis=1))
  sampled_order = bool(alg_temp)   # None or 0: torch.topk
  real = None
  if prompt_mask is not None:
    real = constrain(jnp.concatenate([prompt_mask, jnp.ones((batch, gen_length), bool)],
                                     axis=1))

  def per_row_step(logits, x, mask_index, i, t, s, last):
    """Steps 2-3 on the generated positions only (logits [B, G, V], the rest [B, G]),
    with each row's own draws: the new x int32[B, G]."""
    u_tok = None
    if temperature > 0:
      u_tok = constrain(row_uniforms(k_token, i, logits.shape[1:], jnp.float32))
    conf, x0 = sample_tokens(logits, alg=alg, temperature=temperature, top_p=top_p,
                             top_k=top_k, u=u_tok)
    if alg == "origin":
      p_transfer = jnp.where(last, jnp.float32(1.0), 1 - s / t)
      u = constrain(row_uniforms(k_order, i, (gen_length,), jnp.float32))
      return jnp.where(jnp.logical_and(mask_index, u < p_transfer), x0, x)
    k = transfer_count(mask_index, t, s, last)
    full = jnp.where(mask_index, conf, -jnp.inf)
    if sampled_order:
      u = constrain(row_uniforms(k_order, i, (gen_length,), jnp.float32))
      full = (jax.nn.log_softmax(full / jnp.float32(alg_temp), axis=-1)
              - jnp.log(-jnp.log(u)))
      # A row without masks has no weights (torch.multinomial would raise): none drawn.
      full = jnp.where(jnp.isnan(full), -jnp.inf, full)
    take = select_top(full, jnp.full((batch,), k, jnp.int32))
    return jnp.where(take, jnp.where(mask_index, x0, mask_id), x)

  def body(i, carry):
    x, nfe = carry
    t, s = timestep(i, steps, eps), timestep(i + 1, steps, eps)
    last = i == steps - 1
    mask_index = x == mask_id
    sigma = jnp.zeros((batch,), jnp.float32)
    if real is None:
      logits = constrain(logits_fn(x, sigma))
    else:
      mask_index = jnp.logical_and(mask_index, real)   # a pad is never filled
      logits = constrain(logits_fn(x, sigma, attention_mask=real))
    nfe = nfe + 1
    if per_row:
      x_gen = per_row_step(logits[:, p_len:], x[:, p_len:], mask_index[:, p_len:], i, t, s,
                           last)
      return constrain(jnp.concatenate([x[:, :p_len], x_gen], axis=1)), nfe
    u_tok = None
    if temperature > 0:
      u_tok = constrain(step_uniforms(k_token, i, logits.shape, jnp.float32))
    conf, x0 = sample_tokens(logits, alg=alg, temperature=temperature, top_p=top_p,
                             top_k=top_k, u=u_tok)
    if alg == "origin":
      p_transfer = jnp.where(last, jnp.float32(1.0), 1 - s / t)
      u = constrain(step_uniforms(k_order, i, (batch, total), jnp.float32))
      x = jnp.where(jnp.logical_and(mask_index, u < p_transfer), x0, x)
    else:
      k = transfer_count(mask_index, t, s, last)
      full = jnp.where(mask_index, conf, -jnp.inf)
      if sampled_order:
        u = constrain(step_uniforms(k_order, i, (batch, total), jnp.float32))
        full = (jax.nn.log_softmax(full / jnp.float32(alg_temp), axis=-1)
                - jnp.log(-jnp.log(u)))
        # A row without masks has no weights (torch.multinomial would raise): none drawn.
        full = jnp.where(jnp.isnan(full), -jnp.inf, full)
      take = select_top(full, jnp.full((batch,), k, jnp.int32))
      x_ = jnp.where(mask_index, x0, mask_id)
      x = jnp.where(take, x_, x)
    return constrain(x), nfe

  x, nfe = jax.lax.fori_loop(0, steps, body, (x, jnp.asarray(0, jnp.int32)))
  chex.assert_shape(x, (batch, total))
  return x, nfe


# --- public entry points --------------------------------------------------------------


def make_generate(process: Process, apply_fn: ApplyFn, *, batch: int, prompt_length: int,
                  gen_length: int, alg: str = "origin", temperature: float = 0.0,
                  top_p: float | None = None, top_k: int | None = None,
                  alg_temp: float | None = None, eps: float = 1e-3,
                  mesh: Mesh | None = None
                  ) -> Callable[[Any, jax.Array, jax.Array, int], GenerateResult]:
  """Compiles ``diffusion_generate`` once for every step count.

  Defaults are DreamGenerationConfig's (alg 'origin', temperature 0, no top-p/top-k,
  eps 1e-3).

  Args:
    process: a masked :class:`Process` (only its mask id is used).
    apply_fn: (params, x int32[B, T], sigma float32[B]) -> aligned logits float[B, T, V].
    batch: B; prompt_length: P (0 = unconditional); gen_length: G (max_new_tokens).
    alg, temperature, top_p, top_k, alg_temp, eps, mesh: see :func:`generate_loop`.

  Returns:
    ``generate(params, prompt int[B, P], key, steps: int, prompt_mask=None) ->
    GenerateResult``; ``prompt_mask`` bool [B, P] marks the real tokens of left-padded
    prompts (see the module doc), and ``apply_fn`` is then also given the keyword
    ``attention_mask`` bool [B, P + G] (the backbone contract's padding mask). ``key``:
    one PRNG key, or key[B] for per-row noise (each row's draws over its G generated
    positions only; module doc).
  """
  if not isinstance(process, Process) or process.mask_id is None:
    raise TypeError(f"process must be a masked Process (a DreamProcess), got "
                    f"{type(process).__name__}")
  check_options(gen_length=gen_length, alg=alg, temperature=temperature, top_p=top_p,
                top_k=top_k, alg_temp=alg_temp, eps=eps)
  if batch < 1 or prompt_length < 0:
    raise ValueError(f"batch must be >= 1 and prompt_length >= 0, got batch={batch}, "
                     f"prompt_length={prompt_length}")
  out_shardings = None
  if mesh is not None:
    sharding.check_batch_divisible(batch, mesh, "sampling batch")
    out_shardings = (sharding.batch_sharding(mesh, 2), sharding.replicated(mesh))
  options = dict(mask_id=process.mask_id, gen_length=gen_length, alg=alg,
                 temperature=float(temperature),
                 top_p=None if top_p is None else float(top_p), top_k=top_k,
                 alg_temp=None if alg_temp is None else float(alg_temp), eps=float(eps),
                 mesh=mesh)

  def run(params, prompt, key, steps, prompt_mask):
    return generate_loop(lambda x, sigma, **kw: apply_fn(params, x, sigma, **kw), prompt, key,
                         steps, prompt_mask=prompt_mask, **options)

  jitted = jax.jit(run, out_shardings=out_shardings)

  def generate(params, prompt: jax.Array, key: jax.Array, steps: int,
               prompt_mask: jax.Array | None = None) -> GenerateResult:
    if (prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer)
        or prompt.shape != (batch, prompt_length)):
      raise ValueError(f"prompt must be int [B, P] = [{batch}, {prompt_length}], got "
                       f"{prompt.dtype}{list(prompt.shape)}")
    check_prompt_mask(prompt_mask, batch, prompt_length)
    check_steps(steps)
    if is_per_row_key(key, batch):
      check_row_key_prompt(prompt, prompt_mask, process.mask_id)
    tokens, nfe = jitted(params, jnp.asarray(prompt, jnp.int32), key,
                         jnp.asarray(steps, jnp.int32),
                         None if prompt_mask is None else jnp.asarray(prompt_mask))
    return GenerateResult(tokens=tokens, nfe_model=nfe, steps=steps, forward_rows=batch,
                          prompt_length=prompt_length)

  return generate
