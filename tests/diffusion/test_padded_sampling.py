"""Batched prompted sampling with left-padded prompts equals per-prompt sampling.

Prompts of different lengths, left-padded into one batch with ``prompt_mask`` (as LLaDA's
generate.py ``main`` and Dream's ``diffusion_generate(attention_mask=...)`` batch them),
give, row by row, the completion that each prompt gets when sampled alone (batch 1, its
own length, no padding), with the same noise:

* no noise: greedy decoding (temperature 0) with LLaDA's low-confidence remasking
  (guidance too under --runslow) and Dream's ``maskgit_plus`` order (``entropy`` too under
  --runslow), one key;
* per-row noise (temperature 1, key[B]: each row's draws from its own key over its
  generated positions only, the samplers' module docs): LLaDA with low-confidence and
  random remasking (guidance under --runslow), Dream with ``maskgit_plus`` and ``entropy``
  with a sampled order (alg_temp > 0) (``topk_margin`` with top-p and ``origin`` under
  --runslow); the prompt alone gets its row's key, ``key[i:i + 1]``. That the noise is
  real (other keys, or greedy, complete differently) is checked too.

The per-row draws themselves are checked against the public rules with injected noise
in tests/diffusion/test_llada_sampling.py and test_dream_sampling.py.

The tiny backbones have random weights with every leaf perturbed; the completions are
compared exactly (the padded logits equal the unpadded ones to float rounding,
tests/models/test_padding.py, and these draws have no near-ties at that scale: a wrong
mask or position changes the argmax at O(1) margins, and the same uniforms perturb both).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import models
from tokendrift_jax.diffusion import dream_sampling, llada_sampling
from tokendrift_jax.diffusion.dream import DreamProcess
from tokendrift_jax.diffusion.llada import LLaDAProcess
from tokendrift_jax.models.dream import DreamConfig
from tokendrift_jax.models.llada import LLaDAConfig

MASK = 60
PAD = 61   # a pad id that is not the mask id (generate.py asserts as much)
TINY = {
    "llada": LLaDAConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         mlp_hidden_size=48, length=16, mask_token_id=MASK),
    "dream": DreamConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         length=16, mask_token_id=MASK),
}
PROMPT_LENGTHS = (5, 2, 5)   # padded to 5: one padded row between two full ones
GEN = 8


@pytest.fixture(scope="module")
def backbones(random_params):
  """{family: apply_fn(params, x, sigma, **kw), params} of the tiny random backbones."""
  out = {}
  for i, (family, cfg) in enumerate(TINY.items()):
    gdef = models.graphdef(cfg)
    out[family] = (lambda p, x, s, gdef=gdef, **kw: models.merge(gdef, p)(x, s, **kw),
                   random_params(cfg, seed=21 + i))
  return out


def _prompts():
  rng = np.random.default_rng(4)
  rows = [rng.integers(0, MASK - 4, size=n).astype(np.int32) for n in PROMPT_LENGTHS]
  width = max(PROMPT_LENGTHS)
  ids = np.full((len(rows), width), PAD, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    ids[i, width - len(r):] = r
    mask[i, width - len(r):] = True
  return rows, jnp.asarray(ids), jnp.asarray(mask)


def _check_rows(make, steps, keys=None):
  """Batched (padded) completions == each prompt's own completion; with per-row ``keys``
  (key[B]) prompt i alone gets ``keys[i:i + 1]``. Returns the batched completions."""
  rows, ids, mask = _prompts()
  batched = make(len(rows), ids.shape[1])(ids, steps, mask, keys)
  for i, r in enumerate(rows):
    alone = make(1, len(r))(jnp.asarray(r)[None], steps, None,
                            None if keys is None else keys[i:i + 1])
    np.testing.assert_array_equal(np.asarray(batched.generated[i]),
                                  np.asarray(alone.generated[0]), err_msg=f"row {i}")
    np.testing.assert_array_equal(np.asarray(batched.tokens[i]), np.asarray(ids[i]).tolist()
                                  + np.asarray(alone.generated[0]).tolist())
  return np.asarray(batched.generated)


def _row_keys(seed):
  return jax.random.split(jax.random.key(seed), len(PROMPT_LENGTHS))


def _llada_make(backbones, **options):
  apply_fn, params = backbones["llada"]
  process = LLaDAProcess(vocab_size=64, mask_id=MASK)

  def make(batch, plen):
    gen = llada_sampling.make_generate(process, apply_fn, batch=batch, prompt_length=plen,
                                       gen_length=GEN, block_length=4, **options)
    return lambda p, steps, m, keys: gen(params, p, jax.random.key(0) if keys is None
                                         else keys, steps, m)
  return make


def _dream_make(backbones, lower_mask=True, **options):
  apply_fn, params = backbones["dream"]
  process = DreamProcess(vocab_size=64, mask_id=MASK)

  def no_mask(p, x, s, **kw):
    # The random backbone gives the mask id ~1/64 of the mass, a trained one ~none. Lowered
    # here so that no row draws it: Dream's top-k count is the batch mean of the rows'
    # mask counts (the public rule), which couples the rows once their counts differ.
    return apply_fn(p, x, s, **kw).at[..., MASK].add(-30.0)

  def make(batch, plen):
    gen = dream_sampling.make_generate(process, no_mask if lower_mask else apply_fn,
                                       batch=batch, prompt_length=plen,
                                       gen_length=GEN, **options)
    return lambda p, steps, m, keys: gen(params, p, jax.random.key(0) if keys is None
                                         else keys, steps, m)
  return make


@pytest.mark.parametrize("cfg_scale", [0.0, pytest.param(1.0, marks=pytest.mark.slow)])
def test_llada_padded_batch_equals_per_prompt(backbones, cfg_scale):
  _check_rows(_llada_make(backbones, cfg_scale=cfg_scale), steps=4)


@pytest.mark.parametrize("alg", ["maskgit_plus", pytest.param("entropy", marks=pytest.mark.slow)])
def test_dream_padded_batch_equals_per_prompt(backbones, alg):
  _check_rows(_dream_make(backbones, lower_mask=False, alg=alg), steps=4)


@pytest.mark.parametrize("remasking,cfg_scale", [
    # random remasking draws both noises (Gumbel and the remasking order); the
    # low-confidence variants repeat the Gumbel draw under --runslow.
    ("random", 0.0),
    pytest.param("low_confidence", 0.0, marks=pytest.mark.slow),
    pytest.param("low_confidence", 1.0, marks=pytest.mark.slow)])
def test_llada_padded_batch_equals_per_prompt_with_row_noise(backbones, remasking,
                                                             cfg_scale):
  """Temperature 1 (float64 Gumbel noise, as generate.py) with per-row keys."""
  make = _llada_make(backbones, temperature=1.0, remasking=remasking, cfg_scale=cfg_scale)
  _check_rows(make, steps=4, keys=_row_keys(5))


@pytest.mark.parametrize("options", [
    # entropy with alg_temp draws both noises (the token and the order); the others
    # repeat the token draw under --runslow.
    pytest.param(dict(alg="maskgit_plus"), marks=pytest.mark.slow),
    dict(alg="entropy", alg_temp=0.5),
    pytest.param(dict(alg="topk_margin", top_p=0.9), marks=pytest.mark.slow),
    pytest.param(dict(alg="origin"), marks=pytest.mark.slow),
], ids=lambda o: o["alg"])
def test_dream_padded_batch_equals_per_prompt_with_row_noise(backbones, options):
  """Temperature 1 (the Categorical draw) and, with alg_temp, the sampled order."""
  make = _dream_make(backbones, temperature=1.0, **options)
  out = _check_rows(make, steps=4, keys=_row_keys(5))
  assert not np.any(out == MASK)   # the regime of the note in _dream_make


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_row_noise_is_not_vacuous(backbones, family):
  """Per-row keys drive the draws: other keys, or one row's key given to another row,
  complete differently, and so does greedy decoding; the rows' keys are independent
  (row 0's completion does not change when only row 1's key does)."""
  maker = _dream_make if family == "dream" else _llada_make
  greedy_options = dict(alg="entropy") if family == "dream" else {}
  sampled_options = dict(alg="entropy", alg_temp=0.5) if family == "dream" else {}
  sampled = maker(backbones, temperature=1.0, **sampled_options)
  _, ids, mask = _prompts()
  gen = sampled(3, ids.shape[1])
  a = np.asarray(gen(ids, 4, mask, _row_keys(5)).generated)
  b = np.asarray(gen(ids, 4, mask, _row_keys(6)).generated)
  keys = _row_keys(5)
  swapped = keys.at[1].set(_row_keys(6)[1])
  c = np.asarray(gen(ids, 4, mask, swapped).generated)
  greedy = np.asarray(maker(backbones, **greedy_options)(3, ids.shape[1])(ids, 4, mask, None)
                      .generated)
  for i in range(3):
    assert not np.array_equal(a[i], b[i]), f"row {i}: keys 5 and 6 agree"
    assert not np.array_equal(a[i], greedy[i]), f"row {i}: the draw is the greedy one"
  np.testing.assert_array_equal(c[[0, 2]], a[[0, 2]])   # rows 0, 2 kept their keys
  np.testing.assert_array_equal(c[1], b[1])             # row 1 took key 6's row-1 key


def test_row_keys_refuse_a_prompt_holding_the_mask(backbones):
  """Per-row noise fills the generated positions only; a prompt mask id (generate.py
  would fill it) is refused rather than left in place; so is a key of the wrong shape."""
  apply_fn, params = backbones["llada"]
  gen = llada_sampling.make_generate(LLaDAProcess(vocab_size=64, mask_id=MASK), apply_fn,
                                     batch=3, prompt_length=5, gen_length=GEN,
                                     block_length=4, temperature=1.0)
  _, ids, mask = _prompts()
  with pytest.raises(ValueError, match=r"prompt rows \[2\] hold the mask id 60"):
    gen(params, ids.at[2, 3].set(MASK), _row_keys(5), 4, mask)
  gen(params, ids.at[1, 0].set(MASK), jax.random.key(0), 4, mask)   # one key: allowed
  with pytest.raises(ValueError, match=r"key must be one PRNG key or one per row \(\[B\] "
                                       r"= \[3\] keys"):
    gen(params, ids, jax.random.split(jax.random.key(0), 2), 4, mask)


def test_padding_reaches_the_backbone(backbones):
  """Without its mask the same padded batch completes the padded row differently (the
  consistency above is not the pads being harmless by accident)."""
  apply_fn, params = backbones["llada"]
  process = LLaDAProcess(vocab_size=64, mask_id=MASK)
  _, ids, mask = _prompts()
  gen = llada_sampling.make_generate(process, apply_fn, batch=3, prompt_length=5,
                                     gen_length=GEN, block_length=4)
  with_mask = gen(params, ids, jax.random.key(0), 4, mask).generated[1]
  without = gen(params, ids, jax.random.key(0), 4).generated[1]
  assert not np.array_equal(np.asarray(with_mask), np.asarray(without))


def test_prompt_mask_errors_name_the_argument(backbones):
  apply_fn, params = backbones["dream"]
  gen = dream_sampling.make_generate(DreamProcess(vocab_size=64, mask_id=MASK), apply_fn,
                                     batch=3, prompt_length=5, gen_length=GEN)
  _, ids, _ = _prompts()
  with pytest.raises(ValueError, match=r"prompt_mask must be bool \[B, P\] = \[3, 5\]"):
    gen(params, ids, jax.random.key(0), 4, jnp.ones((3, 4), bool))
