"""Dream's sampler vs a PyTorch ``diffusion_generate`` (tests/references/torch_dream_generate.py).

The test denoiser produces *raw* logits (a deterministic function of the current tokens);
the JAX sampler receives them aligned by the backbone's own ``models.dream.align_shift``,
the reference aligns them with the public line ``torch.cat([logits[:, :1], logits[:, :-1]],
dim=1)`` itself. The reference runs a float64 copy of the denoiser and receives only the
uniforms of the documented key use (``k_token, k_order = split(key)``,
``step_uniforms(k, i, ...)``). The JAX denoiser records every input through
``io_callback``: the state before every step (hence the tokens committed at every step) and
the number of backbone calls (exact NFE) are compared, not only the final tokens. Choices
are compared exactly; the reference reports each kind of choice's smallest margin, which
must exceed what float32 rounding could move (MARGIN). With per-row keys (key[B]) the
reference receives each row's own draws at its generated positions, drawn row by row here
(``test_row_noise_trajectory_matches_public_rule``).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import io_callback

from tests.references.torch_dream_generate import diffusion_generate
from tokendrift_jax import diffusion
from tokendrift_jax.diffusion import DreamProcess, SampleResult
from tokendrift_jax.diffusion import dream_sampling as ds
from tokendrift_jax.models.dream import align_shift

V, MASK = 24, 7
B, G = 4, 10
PROCESS = DreamProcess(V, mask_id=MASK)
# Float32 denoiser and sampler vs the float64 reference: logits of magnitude <~ 15 differ by
# <~ 1e-5, probabilities, confidences and log-space Gumbel scores likewise (the uniforms are
# the same float32 arrays). A choice whose margin exceeds 1e-4 cannot flip.
MARGIN = 1e-4

_seen: list[np.ndarray] = []


def _record(x):
  _seen.append(np.asarray(x))
  return np.zeros((), np.float32)


def _params(seed, length):
  """Random denoiser weights; the mask logit lowered by 30 so that it never wins a draw
  (rows keep equal mask counts, the regime the public rule is written for)."""
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(V, V)) * 2.0
  table[:, MASK] -= 30.0
  return {"table": table, "pos": rng.normal(size=(length, V))}


def _raw_jax(params, x):
  """Token table + left neighbour + sequence mean (bidirectional context) + position."""
  a = params["table"][x]
  return (a + 0.5 * jnp.roll(a, 1, axis=1) + 0.8 * jnp.mean(a, axis=1, keepdims=True)
          + params["pos"][:x.shape[1]])


def _apply(params, x, sigma):
  chex.assert_shape(sigma, x.shape[:1])
  out = align_shift(_raw_jax(params, x))   # what the Dream backbone returns
  out = out + io_callback(_record, jax.ShapeDtypeStruct((), jnp.float32), x, ordered=True)
  return out.astype(jnp.float32)


def _raw_torch(params):
  table, pos = torch.from_numpy(params["table"]), torch.from_numpy(params["pos"])

  def fn(x):
    a = table[x]
    return a + 0.5 * torch.roll(a, 1, dims=1) + 0.8 * a.mean(dim=1, keepdim=True) + \
        pos[:x.shape[1]]
  return fn


@functools.partial(jax.jit, static_argnums=(2, 3))
def _uniforms(key, i, total, vocab):
  k_token, k_order = jax.random.split(key)
  return (ds.step_uniforms(k_token, i, (B, total, vocab), jnp.float32),
          ds.step_uniforms(k_order, i, (B, total), jnp.float32))


def _draws(key, total):
  def get(i, which):
    return np.array(_uniforms(key, jnp.asarray(i, jnp.int32), total, V)[which])
  return (lambda i: get(i, 0)), (lambda i: get(i, 1))


def _prompt(seed, p_len):
  rng = np.random.default_rng(seed)
  return rng.choice(np.delete(np.arange(V), MASK), size=(B, p_len))


# (alg, temperature, top_p, top_k, alg_temp, prompt length, step counts): every
# unmasking order, greedy and sampled tokens, both filters, the sampled order (alg_temp),
# prompted and unconditional; each compiled once and run at two step counts.
CONFIGS = {
    "maskgit_plus_greedy_prompted": ("maskgit_plus", 0.0, None, None, None, 3, (3, 10)),
    "entropy_top_p_alg_temp": ("entropy", 0.7, 0.9, None, 0.5, 0, (4, 7)),
    "origin_top_k": ("origin", 1.0, None, 5, None, 2, (5, 10)),
    # No top-p here: a nucleus of one token gives margin 1 at several positions, an exact
    # tie whose order torch.topk leaves unspecified.
    "topk_margin_sampled": ("topk_margin", 0.5, None, 6, None, 2, (6,)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_trajectory_matches_public_rule(name):
  alg, temperature, top_p, top_k, alg_temp, p_len, step_counts = CONFIGS[name]
  total = p_len + G
  params = _params(3, total)
  jparams = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  prompt = _prompt(4, p_len)
  generate = PROCESS.make_generate(_apply, batch=B, prompt_length=p_len, gen_length=G,
                                   alg=alg, temperature=temperature, top_p=top_p,
                                   top_k=top_k, alg_temp=alg_temp)
  for steps in step_counts:
    key = jax.random.PRNGKey(steps)
    _seen.clear()
    res = generate(jparams, jnp.asarray(prompt), key, steps)
    tokens = np.asarray(res.tokens)
    u_token, u_order = _draws(key, total)
    ref = diffusion_generate(_raw_torch(params), prompt, mask_id=MASK, gen_length=G,
                             steps=steps, alg=alg, temperature=temperature, top_p=top_p,
                             top_k=top_k, alg_temp=alg_temp,
                             u_token=u_token if temperature > 0 else None, u_order=u_order)
    # Exact NFE: one backbone call per step, the state before each step as the reference's.
    assert len(_seen) == steps == int(res.nfe_model) == ref["calls"] == res.steps
    for i, (got, want) in enumerate(zip(_seen, ref["states"])):
      chex.assert_trees_all_equal(got, want, custom_message=f"{name}: state before step {i}")
    chex.assert_trees_all_equal(tokens, ref["tokens"])
    chex.assert_trees_all_equal(tokens[:, :p_len], prompt)
    assert not np.any(tokens == MASK)   # the last step commits every mask (k = int(n̄))
    margin = ref["margin"]
    assert margin["argmax"] > MARGIN and margin["top_p"] > MARGIN, margin
    assert margin["order"] > MARGIN or alg == "origin", margin
    # t may differ from torch.linspace's by 1 ulp (test below), p = 1 - s/t and
    # n̄ (1 - s/t) by a few ulps (~1e-7 relative): choices farther than 1e-5 cannot flip.
    assert margin["origin"] > 1e-5 and margin["count"] > 1e-5, margin


def _row_draws(keys, p_len, vocab):
  """Per-row noise (key[B]) as the reference's [B, P + G, ...] draws: row b's documented
  draws (``split(keys[b])``, ``step_uniforms(k, i, [G, ...])``) at its generated positions,
  drawn one row at a time (not by the sampler's vmap); 0.5 at the prompt positions, which
  the reference reads only where masked (the prompts hold no mask)."""
  def get(i, which):
    rows = []
    for b in range(keys.shape[0]):
      k = jax.random.split(keys[b])[which]
      rows.append(np.asarray(ds.step_uniforms(k, i, (G, vocab) if which == 0 else (G,),
                                              jnp.float32)))
    gen = np.stack(rows)
    return np.concatenate([np.full((gen.shape[0], p_len) + gen.shape[2:], 0.5, np.float32),
                           gen], axis=1)
  return (lambda i: get(i, 0)), (lambda i: get(i, 1))


# Per-row noise (key[B]), prompted: the sampled order with tokens drawn through top-p, and
# the 'origin' transfer draws with top-k.
ROW_CONFIGS = {
    "row_entropy_top_p_alg_temp": ("entropy", 0.7, 0.9, None, 0.5, 3, 5),
    "row_origin_top_k": ("origin", 1.0, None, 5, None, 2, 5),
}


@pytest.mark.parametrize("name", sorted(ROW_CONFIGS))
def test_row_noise_trajectory_matches_public_rule(name):
  """Per-row keys: the public rule fed each row's own draws at its generated positions."""
  alg, temperature, top_p, top_k, alg_temp, p_len, steps = ROW_CONFIGS[name]
  total = p_len + G
  params = _params(3, total)
  jparams = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  prompt = _prompt(4, p_len)
  generate = PROCESS.make_generate(_apply, batch=B, prompt_length=p_len, gen_length=G,
                                   alg=alg, temperature=temperature, top_p=top_p,
                                   top_k=top_k, alg_temp=alg_temp)
  keys = jax.random.split(jax.random.key(steps), B)
  _seen.clear()
  res = generate(jparams, jnp.asarray(prompt), keys, steps)
  tokens = np.asarray(res.tokens)
  u_token, u_order = _row_draws(keys, p_len, V)
  ref = diffusion_generate(_raw_torch(params), prompt, mask_id=MASK, gen_length=G,
                           steps=steps, alg=alg, temperature=temperature, top_p=top_p,
                           top_k=top_k, alg_temp=alg_temp, u_token=u_token, u_order=u_order)
  assert len(_seen) == steps == int(res.nfe_model) == ref["calls"]
  for i, (got, want) in enumerate(zip(_seen, ref["states"])):
    chex.assert_trees_all_equal(got, want, custom_message=f"{name}: state before step {i}")
  chex.assert_trees_all_equal(tokens, ref["tokens"])
  assert not np.any(tokens == MASK)
  margin = ref["margin"]   # as in test_trajectory_matches_public_rule
  assert margin["argmax"] > MARGIN and margin["top_p"] > MARGIN, margin
  assert margin["order"] > MARGIN or alg == "origin", margin
  assert margin["origin"] > 1e-5 and margin["count"] > 1e-5, margin


def test_timesteps_are_torch_linspace_to_one_ulp():
  """torch's linspace formula in float32: the ends exact, every time within 1 ulp of
  torch.linspace (its CPU kernel vectorises as base + lane·δ, a second rounding)."""
  for steps, eps in ((1, 1e-3), (7, 1e-3), (10, 1e-5), (64, 1e-3), (255, 0.01)):
    want = torch.linspace(1, eps, steps + 1).numpy()
    got = np.asarray(jax.jit(jax.vmap(ds.timestep, (0, None, None)), static_argnums=2)(
        jnp.arange(steps + 1), steps, eps))
    assert got[0] == 1.0 and got[-1] == np.float32(eps)
    ulps = np.abs(got.view(np.int32) - want.view(np.int32))
    assert ulps.max() <= 1, (steps, eps, ulps.max())


def test_process_sampler_and_registry():
  """The unconditional sampler through the process contract: defaults (origin, τ = 1),
  exact NFE, a SampleResult; the registry builds the process from a Dream config."""
  from tokendrift_jax import models  # pylint: disable=import-outside-toplevel
  cfg = models.config_from_dict("dream", dict(models.get_family("dream").sizes["tiny"],
                                              length=16))
  proc = diffusion.make_process_for_model("dream", cfg)
  assert isinstance(proc, DreamProcess) and proc.mask_id == 1000 and proc.prompted
  assert "dream" in diffusion.process_names()
  assert proc.sampler_options({}, 16) == {"temperature": 1.0, "alg": "origin", "top_p": None,
                                          "top_k": None, "alg_temp": None, "eps": 1e-3}
  with pytest.raises(ValueError, match="not diffusion_generate's"):
    proc.sampler_options({"block_length": 4}, 16)
  with pytest.raises(ValueError, match="alg='low_confidence' is not one of"):
    proc.sampler_options({"alg": "low_confidence"}, 16)
  params = _params(5, G)
  jparams = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  sampler = PROCESS.make_sampler(_apply, batch=B, length=G, alg="maskgit_plus")
  _seen.clear()
  res = sampler(jparams, jax.random.PRNGKey(0), 5)
  assert isinstance(res, SampleResult) and int(res.nfe_model) == 5 == len(_seen)
  assert res.tokens.shape == (B, G) and not np.any(np.asarray(res.tokens) == MASK)
