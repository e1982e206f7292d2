"""LLaDA's sampler vs a float64 NumPy generate.py (tests/references/np_llada.py).

The reference runs its own float64 copy of the test denoiser (a deterministic function of
the current tokens) and receives only the uniforms of the documented key use
(``k_gumbel, k_remask = split(key)``, ``step_uniforms(k, i, ...)``). The sampler's
denoiser records every input it is called on through ``io_callback``, so the whole
trajectory (the state before every step, hence the tokens committed at every step), the
number of calls and their row counts are compared, not only the final tokens. Choices are
compared exactly: the reference reports the smallest margin of every argmax and top-k
choice, and each test checks that it exceeds what float32 rounding of the denoiser could
move.

With per-row keys (key[B]) the reference receives each row's own draws at its generated
positions (``test_row_noise_trajectory_matches_generate_py``), drawn row by row here.

The pieces (transfer_count, gumbel_perturb, select_top) run under ``chex.variants``; the
whole sampler is a compiled program (make_generate jits it), and
``test_cfg_sampler_same_tokens_on_8_devices`` is its sharded variant.
"""

from __future__ import annotations

import functools
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from tokendrift_jax import sharding
from tokendrift_jax.diffusion import LLaDAProcess, MDLMProcess, SampleResult, make_sampler
from tokendrift_jax.diffusion import llada_sampling as ls
from tests.references import np_llada

V, MASK = 16, 5
B, P, G = 8, 3, 12
PROCESS = LLaDAProcess(V, mask_id=MASK)
# Float32 denoiser vs its float64 copy: logits of magnitude ≲ 20 differ by ≲ 1e-5, so
# probabilities by ≲ 1e-5 and log-space perturbed logits by ≲ 1e-5 (the Gumbel noise is
# the same float64 array in both). A choice whose margin exceeds 1e-4 cannot flip.
MARGIN = 1e-4

_seen: list[np.ndarray] = []


def _record(x):
  _seen.append(np.asarray(x))
  return np.zeros((), np.float32)


def _params(seed, mask_shift=-4.0):
  """Random denoiser weights; ``mask_shift`` lowers the mask logit: at −4 the mask keeps
  some probability mass (it enters every softmax) but never wins an argmax, at 0 it is an
  ordinary token that LLaDA's rule may commit."""
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(V, V)) * 2.0
  table[:, MASK] += mask_shift
  return {"table": table, "pos": rng.normal(size=(P + G, V))}


def _jax_logits(params, x, sigma, *, record):
  """Token table + left neighbour + sequence mean (bidirectional context) + position."""
  chex.assert_shape(sigma, x.shape[:1])
  a = params["table"][x]
  out = (a + 0.5 * jnp.roll(a, 1, axis=1) + 0.8 * jnp.mean(a, axis=1, keepdims=True)
         + params["pos"][:x.shape[1]])
  if record:
    out = out + io_callback(_record, jax.ShapeDtypeStruct((), jnp.float32), x, ordered=True)
  return out.astype(jnp.float32)


def np_denoiser(params):
  def fn(x):
    a = params["table"][x]
    return (a + 0.5 * np.roll(a, 1, axis=1) + 0.8 * a.mean(axis=1, keepdims=True)
            + params["pos"][:x.shape[1]])
  return fn


def _jax_params(params):
  return {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}


@functools.partial(jax.jit, static_argnums=2)
def _uniforms(key, i, total):
  """The documented draws of step i (float64 Gumbel uniforms, float32 remasking ones)."""
  k_gumbel, k_remask = jax.random.split(key)
  return (ls.step_uniforms(k_gumbel, i, (B, total, V), jnp.float64),
          ls.step_uniforms(k_remask, i, (B, total), jnp.float32))


def _draws(key, p_len):
  """gumbel_u(i), remask_u(i) of a state of p_len + G positions, as float64 NumPy."""
  def get(i, which):
    with jax.enable_x64(True):
      return np.asarray(_uniforms(key, jnp.asarray(i, jnp.int32), p_len + G)[which],
                        np.float64)
  return (lambda i: get(i, 0)), (lambda i: get(i, 1))


def _prompt(seed):
  rng = np.random.default_rng(seed)
  return rng.choice(np.delete(np.arange(V), MASK), size=(B, P))


def _check_against_reference(res, ref, prompt, *, steps, cfg, remasking, temperature,
                             masks_left=False):
  seen = list(_seen)
  # Every backbone call: the state before each step (rows 2b, 2b + 1 with guidance).
  assert len(seen) == steps == int(res.nfe_model) == res.steps
  assert [s.shape[0] for s in seen] == ref["calls"] == [res.forward_rows] * steps
  p_len = prompt.shape[1]
  for i, (got, want) in enumerate(zip(seen, ref["states"])):
    cond = got[0::2] if cfg else got
    chex.assert_trees_all_equal(cond, want, custom_message=f"state before step {i}")
    if cfg:   # the un-prompted copy: the prompt masked, the rest as the state
      un = want.copy()
      un[:, :p_len] = MASK
      chex.assert_trees_all_equal(got[1::2], un, custom_message=f"uncond copy, step {i}")
  tokens = np.asarray(res.tokens)
  chex.assert_trees_all_equal(tokens, ref["tokens"])
  chex.assert_trees_all_equal(tokens[:, :p_len], np.asarray(prompt))  # prompt unchanged
  if masks_left:
    # The mask won some argmaxes and was committed: it stays a mask (and eligible in later
    # blocks, before the current one), as in generate.py; the case is really exercised.
    assert np.any(tokens[:, p_len:] == MASK)
  else:
    assert not np.any(tokens == MASK)   # every mask committed
  # Exact choices are meaningful only if rounding could not flip them (see MARGIN).
  if temperature > 0 or cfg:
    assert ref["margin"]["argmax"] > MARGIN, ref["margin"]
  if remasking == "low_confidence":
    assert ref["margin"]["confidence"] > MARGIN, ref["margin"]
  else:   # the same float32 uniforms in both: only exact ties could be broken differently
    assert ref["margin"]["confidence"] > 0, ref["margin"]


# Static configurations, each compiled once and run at several step counts (the step
# count is traced): remasking, temperature, cfg_scale, block_length, steps, and the
# denoiser's (seed, mask_shift).
CONFIGS = {
    # 3 blocks of 4: 1, 3 (2, 1, 1: remainder) and 6 (1, 1, 1, 1, 0, 0) steps per block;
    # the mask competes here (its softmax mass matters) and wins a few argmaxes.
    "greedy_3_blocks": ("low_confidence", 0.0, 0.0, 4, (3, 9, 18), (5, -1.0)),
    "gumbel_cfg_2_blocks": ("low_confidence", 0.7, 1.5, 6, (4, 10), (1, -4.0)),
    "random_cfg_1_block": ("random", 0.0, 0.8, 12, (5,), (1, -4.0)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prompted_trajectory_matches_generate_py(name):
  remasking, temperature, cfg, block, steps_list, (seed, mask_shift) = CONFIGS[name]
  params = _params(seed, mask_shift)
  prompt = _prompt(2)
  gen = ls.make_generate(PROCESS, lambda p, x, s: _jax_logits(p, x, s, record=True),
                         batch=B, prompt_length=P, gen_length=G, block_length=block,
                         temperature=temperature, cfg_scale=cfg, remasking=remasking)
  for n, steps in enumerate(steps_list):
    key = jax.random.key(10 + n)
    gumbel_u, remask_u = _draws(key, P)
    ref = np_llada.generate(np_denoiser(params), prompt, steps=steps, gen_length=G,
                            block_length=block, temperature=temperature, cfg_scale=cfg,
                            remasking=remasking, mask_id=MASK, gumbel_u=gumbel_u,
                            remask_u=remask_u)
    _seen.clear()
    start = time.perf_counter()
    res = gen(_jax_params(params), jnp.asarray(prompt, jnp.int32), key, steps)
    jax.block_until_ready(res.tokens)
    print(f"{name} steps={steps}: {time.perf_counter() - start:.2f}s")
    chex.assert_shape(res.tokens, (B, P + G))
    chex.assert_type(res.tokens, jnp.int32)
    _check_against_reference(res, ref, prompt, steps=steps, cfg=cfg > 0, remasking=remasking,
                             temperature=temperature, masks_left=mask_shift > -4)


def _row_draws(keys, p_len):
  """Per-row noise (key[B]) as the reference's [B, P + G, ...] draws: row b's documented
  draws (``split(keys[b])``, ``step_uniforms(k, i, [G, ...])``, float64 Gumbel and float32
  remasking uniforms) at its generated positions, drawn one row at a time (not by the
  sampler's vmap); 0.5 at the prompt positions, never candidates (the prompts hold no
  mask)."""
  def get(i, which):
    rows = []
    with jax.enable_x64(True):
      for b in range(keys.shape[0]):
        k = jax.random.split(keys[b])[which]
        rows.append(np.asarray(ls.step_uniforms(k, i, (G, V), jnp.float64) if which == 0
                               else ls.step_uniforms(k, i, (G,), jnp.float32), np.float64))
    gen = np.stack(rows)
    return np.concatenate([np.full((gen.shape[0], p_len) + gen.shape[2:], 0.5), gen], axis=1)
  return (lambda i: get(i, 0)), (lambda i: get(i, 1))


# Per-row noise (key[B]): Gumbel noise with guidance over 2 blocks (also batch-sharded
# over 8 devices); random remasking with Gumbel noise over 3 blocks.
# (remasking, temperature, cfg_scale, block_length, steps).
ROW_CONFIGS = {
    "row_gumbel_cfg_2_blocks": ("low_confidence", 0.7, 1.5, 6, 4),
    "row_random_gumbel_3_blocks": ("random", 1.0, 0.0, 4, 6),
}


@pytest.mark.parametrize("name", sorted(ROW_CONFIGS))
def test_row_noise_trajectory_matches_generate_py(name):
  """Per-row keys: generate.py fed each row's own draws at its generated positions."""
  remasking, temperature, cfg, block, steps = ROW_CONFIGS[name]
  params = _params(1)
  prompt = _prompt(2)
  gen = ls.make_generate(PROCESS, lambda p, x, s: _jax_logits(p, x, s, record=True),
                         batch=B, prompt_length=P, gen_length=G, block_length=block,
                         temperature=temperature, cfg_scale=cfg, remasking=remasking)
  keys = jax.random.split(jax.random.key(30), B)
  gumbel_u, remask_u = _row_draws(keys, P)
  ref = np_llada.generate(np_denoiser(params), prompt, steps=steps, gen_length=G,
                          block_length=block, temperature=temperature, cfg_scale=cfg,
                          remasking=remasking, mask_id=MASK, gumbel_u=gumbel_u,
                          remask_u=remask_u)
  _seen.clear()
  res = gen(_jax_params(params), jnp.asarray(prompt, jnp.int32), keys, steps)
  _check_against_reference(res, ref, prompt, steps=steps, cfg=cfg > 0, remasking=remasking,
                           temperature=temperature)
  if cfg:   # the sharded variant: batch-sharded over 8 devices, the same tokens
    mesh = sharding.make_mesh(devices=jax.devices())
    res = ls.generate(PROCESS, lambda x, s: _jax_logits(_jax_params(params), x, s,
                                                        record=False),
                      jnp.asarray(prompt, jnp.int32), keys, steps=steps, gen_length=G,
                      block_length=block, temperature=temperature, cfg_scale=cfg,
                      remasking=remasking, mesh=mesh)
    assert res.tokens.sharding.is_equivalent_to(sharding.batch_sharding(mesh, 2), 2)
    chex.assert_trees_all_equal(np.asarray(res.tokens), ref["tokens"])


def test_unconditional_make_sampler_matches_generate_py():
  """make_sampler's LLaDA sampler: empty prompt, gen_length = length, SampleResult."""
  params = _params(3)
  length = P + G   # the prompted tests' state size: the same uniforms helper (one compile)
  sampler = make_sampler(PROCESS, lambda p, x, s: _jax_logits(p, x, s, record=True),
                         batch=B, length=length, block_length=5, remasking="random")
  key = jax.random.key(4)
  steps = 6
  gumbel_u, remask_u = _draws(key, P)
  # The unconditional default temperature (1: a draw from the model).
  ref = np_llada.generate(np_denoiser(params), np.zeros((B, 0), np.int64), steps=steps,
                          gen_length=length, block_length=5, temperature=1.0, cfg_scale=0.0,
                          remasking="random", mask_id=MASK, gumbel_u=gumbel_u,
                          remask_u=remask_u)
  _seen.clear()
  res = sampler(_jax_params(params), key, steps)
  assert isinstance(res, SampleResult) and not res.final_forward and res.nfe == steps
  assert res.loop_forwards == steps and res.forward_rows == B
  chex.assert_shape(res.tokens, (B, length))
  _check_against_reference(res, ref, np.zeros((B, 0), np.int64), steps=steps, cfg=False,
                           remasking="random", temperature=1.0)
  assert len({tuple(r) for r in np.asarray(res.tokens)}) > 1   # rows differ: a real draw


def test_cfg_sampler_same_tokens_on_8_devices():
  """The sharded variant: a batch-sharded 8-device run gives the reference's tokens."""
  assert len(jax.devices()) == 8, "conftest should provide 8 CPU devices"
  remasking, temperature, cfg, block, (steps, _), _ = CONFIGS["gumbel_cfg_2_blocks"]
  params = _params(1)
  prompt = _prompt(2)
  key = jax.random.key(10)
  mesh = sharding.make_mesh(devices=jax.devices())
  res = ls.generate(PROCESS, lambda x, s: _jax_logits(_jax_params(params), x, s,
                                                      record=False),
                    jnp.asarray(prompt, jnp.int32), key, steps=steps, gen_length=G,
                    block_length=block, temperature=temperature, cfg_scale=cfg,
                    remasking=remasking, mesh=mesh)
  gumbel_u, remask_u = _draws(key, P)
  ref = np_llada.generate(np_denoiser(params), prompt, steps=steps, gen_length=G,
                          block_length=block, temperature=temperature, cfg_scale=cfg,
                          remasking=remasking, mask_id=MASK, gumbel_u=gumbel_u,
                          remask_u=remask_u)
  assert res.tokens.sharding.is_equivalent_to(sharding.batch_sharding(mesh, 2), 2)
  chex.assert_trees_all_equal(np.asarray(res.tokens), ref["tokens"])
  assert res.forward_rows == 2 * B and int(res.nfe_model) == steps


class PiecesVariantsTest(chex.TestCase):
  """generate.py's helpers, traced (jit) and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_transfer_count_is_get_num_transfer_tokens(self):
    counts = np.asarray([0, 1, 4, 5, 7, 12, 13, 31])
    fn = self.variant(ls.transfer_count)
    for s in (1, 3, 4, 6, 16):
      ref = np_llada.get_num_transfer_tokens(counts, s)
      got = np.stack([np.asarray(fn(jnp.asarray(counts), s, j)) for j in range(s)], 1)
      chex.assert_trees_all_equal(got, ref.astype(np.int32))

  @chex.variants(with_jit=True, without_jit=True)
  def test_gumbel_perturb_is_log_of_add_gumbel_noise(self):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4, 6, V)) * 3
    u = rng.random((4, 6, V))
    for tau in (0.0, 0.3, 1.0, 2.0):
      with jax.enable_x64(True):
        got = np.asarray(self.variant(ls.gumbel_perturb, static_argnums=2)(
            jnp.asarray(logits, jnp.float32), jnp.asarray(u), tau))
      ref = np_llada.add_gumbel_noise(logits.astype(np.float32), u, tau)
      if tau:
        # float64 log of the same float64 quantity: rounding only (values ≲ 50).
        chex.assert_trees_all_close(got, np.log(ref), rtol=0, atol=1e-12)
      else:
        chex.assert_trees_all_equal(got, logits.astype(np.float32))
      chex.assert_trees_all_equal(got.argmax(-1), ref.argmax(-1))

  @chex.variants(with_jit=True, without_jit=True)
  def test_select_top_is_topk(self):
    rng = np.random.default_rng(6)
    conf = rng.random((5, 9)).astype(np.float32)
    conf[rng.random((5, 9)) < 0.4] = -np.inf
    k = np.asarray([0, 1, 3, 5, 2])
    got = np.asarray(self.variant(ls.select_top)(jnp.asarray(conf), jnp.asarray(k)))
    for row in range(5):
      want = np.zeros(9, bool)
      want[np.argsort(-conf[row], kind="stable")[:k[row]]] = True
      chex.assert_trees_all_equal(got[row], want)


def test_errors():
  logits_fn = lambda p, x, s: _jax_logits(p, x, s, record=False)  # noqa: E731
  with pytest.raises(ValueError, match="block_length=5 must divide gen_length=12"):
    ls.make_generate(PROCESS, logits_fn, batch=B, prompt_length=P, gen_length=G,
                     block_length=5)
  with pytest.raises(ValueError, match="remasking="):
    ls.make_generate(PROCESS, logits_fn, batch=B, prompt_length=P, gen_length=G,
                     remasking="top_p")
  gen = ls.make_generate(PROCESS, logits_fn, batch=B, prompt_length=P, gen_length=G,
                         block_length=4)
  with pytest.raises(ValueError, match="steps=4 must be a multiple of the number of blocks 3"):
    gen(None, jnp.zeros((B, P), jnp.int32), jax.random.key(0), 4)
  with pytest.raises(ValueError, match="prompt must be int"):
    gen(None, jnp.zeros((B, P + 1), jnp.int32), jax.random.key(0), 3)
  with pytest.raises(ValueError, match="noise_removal"):
    make_sampler(PROCESS, logits_fn, batch=B, length=G, noise_removal="greedy")
  with pytest.raises(ValueError, match="apply only to diffusion.process='llada'"):
    make_sampler(MDLMProcess(V), logits_fn, batch=B, length=G, block_length=4)
  with pytest.raises(TypeError, match="LLaDAProcess"):
    ls.make_generate(object(), logits_fn, batch=B, prompt_length=0, gen_length=G)
