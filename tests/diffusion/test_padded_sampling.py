"""Batched prompted sampling with left-padded prompts equals per-prompt sampling.

Prompts of different lengths, left-padded into one batch with ``prompt_mask`` (as LLaDA's
generate.py ``main`` and Dream's ``diffusion_generate(attention_mask=...)`` batch them),
give, row by row, the completion that each prompt gets when sampled alone (batch 1, its
own length, no padding), with the same (here: no) noise: greedy decoding (temperature 0)
with LLaDA's low-confidence remasking (guidance too under --runslow) and Dream's
``maskgit_plus`` order (``entropy`` too under --runslow). The tiny backbones have random weights with every
leaf perturbed; the completions are compared exactly (the padded logits equal the
unpadded ones to float rounding, tests/models/test_padding.py, and these draws have no
near-ties at that scale: a wrong mask or position changes the argmax at O(1) margins).
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


def _check_rows(make, steps):
  """Batched (padded) completions == each prompt's own completion."""
  rows, ids, mask = _prompts()
  batched = make(len(rows), ids.shape[1])(ids, steps, mask)
  for i, r in enumerate(rows):
    alone = make(1, len(r))(jnp.asarray(r)[None], steps, None)
    np.testing.assert_array_equal(np.asarray(batched.generated[i]),
                                  np.asarray(alone.generated[0]), err_msg=f"row {i}")
    np.testing.assert_array_equal(np.asarray(batched.tokens[i]), np.asarray(ids[i]).tolist()
                                  + np.asarray(alone.generated[0]).tolist())


@pytest.mark.parametrize("cfg_scale", [0.0, pytest.param(1.0, marks=pytest.mark.slow)])
def test_llada_padded_batch_equals_per_prompt(backbones, cfg_scale):
  apply_fn, params = backbones["llada"]
  process = LLaDAProcess(vocab_size=64, mask_id=MASK)

  def make(batch, plen):
    gen = llada_sampling.make_generate(process, apply_fn, batch=batch, prompt_length=plen,
                                       gen_length=GEN, block_length=4, cfg_scale=cfg_scale)
    return lambda p, steps, m: gen(params, p, jax.random.key(0), steps, m)

  _check_rows(make, steps=4)


@pytest.mark.parametrize("alg", ["maskgit_plus", pytest.param("entropy", marks=pytest.mark.slow)])
def test_dream_padded_batch_equals_per_prompt(backbones, alg):
  apply_fn, params = backbones["dream"]
  process = DreamProcess(vocab_size=64, mask_id=MASK)

  def make(batch, plen):
    gen = dream_sampling.make_generate(process, apply_fn, batch=batch, prompt_length=plen,
                                       gen_length=GEN, alg=alg)
    return lambda p, steps, m: gen(params, p, jax.random.key(0), steps, m)

  _check_rows(make, steps=4)


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
