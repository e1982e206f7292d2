"""The padding mask of the backbone contract (``attention_mask``), for every family.

* Consistency: rows of different lengths, left- or right-padded into one batch, give at
  every real position the logits and the last two block outputs (the drift features'
  input) of the same rows run unpadded, one at a time (random non-zero weights: every
  leaf perturbed). Bound 1e-5: float32 rounding of the same function (Dream's positions
  are the unpadded ones exactly; LLaDA's and the DiT's rotary angles differ by the pad
  count, which rotary cancels up to rounding, ~1e-6 at these sizes).
* Unchanged program: with no mask, the lowered StableHLO of each family is the one the
  package lowered before padding existed (``_MAIN_DIGESTS``: sha256 of
  ``jax.jit(...).lower(...).as_text()`` computed from the main checkout at commit cb377d2
  with jax 0.10.2 under this conftest; another jax version lowers differently, so the
  check is skipped there).
"""

from __future__ import annotations

import hashlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import models
from tokendrift_jax.models import common
from tokendrift_jax.models.dit import DiTConfig
from tokendrift_jax.models import dream as dream_model
from tokendrift_jax.models.dream import DreamConfig
from tokendrift_jax.models.llada import LLaDAConfig

# Float32 rounding of the same function (see the module doc); a padded key that leaked
# into attention moves logits by O(0.1) with these weights.
TOL = 1e-5

TINY = {
    "dit": DiTConfig(vocab_size=64, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=2,
                     length=16, dropout=0.0),
    "llada": LLaDAConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         mlp_hidden_size=48, length=16, mask_token_id=60),
    "dream": DreamConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         length=16, mask_token_id=60),
}
LENGTHS = (12, 7, 7)   # real tokens per row (one unpadded row); the batch is padded to 12


def _lowered_texts() -> dict[str, str]:
  """{family/variant: lowered StableHLO text} of the unpadded calls (no attention_mask)."""
  out = {}
  for name, cfg in TINY.items():
    gdef = models.graphdef(cfg)
    params = models.abstract_params(cfg)
    ids = jax.ShapeDtypeStruct((2, 12), jnp.int32)
    embeds = jax.ShapeDtypeStruct((2, 12, 32), jnp.float32)
    sigma = jax.ShapeDtypeStruct((2,), jnp.float32)

    def logits(p, x, s):
      return models.merge(gdef, p)(x, s)

    def encoder(p, e, s):
      return models.merge(gdef, p)(None, s, embeds=e, return_hidden=2)[1]

    out[f"{name}/logits"] = jax.jit(logits).lower(params, ids, sigma).as_text()
    out[f"{name}/encoder"] = jax.jit(encoder).lower(params, embeds, sigma).as_text()
  return out


_MAIN_JAX = "0.10.2"
_MAIN_DIGESTS = {
    "dit/encoder": "15b4d0c70107e2576bd552f3da1ea367cf91f15a2f8c6e99261c4e4ad0caa674",
    "dit/logits": "88e8af7bbf10360a5977d50e227f3528a4fd8abbf75b6a1e7cbe085bb3c12688",
    "dream/encoder": "3596a84c1528a235a2d75be94969445df393866f1658d6c23a32e1b172f2b58b",
    "dream/logits": "73d9acd040760910ed60ee388a044d64ef124cc0a94b78def7be212acd1fa372",
    "llada/encoder": "8080e4cf1d8c7a2c284e7e4f99df041e28edbfa1af4d1b06854f141e093738d6",
    "llada/logits": "da64dd2c1afb4f9a947d685fe2a7fb25e6b0a01238143d6af1bf8857d049dbd8",
}


def test_unpadded_program_is_unchanged():
  if jax.__version__ != _MAIN_JAX:
    pytest.skip(f"digests were taken with jax {_MAIN_JAX}, this is {jax.__version__}")
  digests = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in _lowered_texts().items()}
  assert digests == _MAIN_DIGESTS


@pytest.fixture(scope="module")
def tiny_params(random_params):
  """{family: params with every leaf perturbed} (adaLN / output layers start at zero)."""
  return {name: random_params(cfg, seed=3 + i) for i, (name, cfg) in enumerate(TINY.items())}


def _rows(vocab: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab - 8, size=n).astype(np.int32) for n in LENGTHS]


def _pad(rows, side: str, pad_id: int):
  """(ids int32 [B, max], attention_mask bool [B, max], offsets) with ``side`` padding."""
  width = max(len(r) for r in rows)
  ids = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  offsets = []
  for i, r in enumerate(rows):
    start = width - len(r) if side == "left" else 0
    ids[i, start:start + len(r)] = r
    mask[i, start:start + len(r)] = True
    offsets.append(start)
  return jnp.asarray(ids), jnp.asarray(mask), offsets


@pytest.fixture(scope="module")
def unpadded(tiny_params):
  """{family: (model, rows, sigma, [(logits [n, V], [2 x hidden [n, d]]) per row])}: each
  row run alone, unpadded (one compile per distinct length, shared by both sides)."""
  out = {}
  for family, cfg in TINY.items():
    model = models.merge(models.graphdef(cfg), tiny_params[family])
    rows = _rows(cfg.vocab_size)
    sigma = jnp.full((len(rows),), 0.3, jnp.float32)
    run = jax.jit(lambda x, s, model=model: model(x, s, return_hidden=2))
    refs = []
    for i, row in enumerate(rows):
      logits, hidden = run(jnp.asarray(row)[None], sigma[i:i + 1])
      refs.append((logits[0], [h[0] for h in hidden]))
    out[family] = (model, rows, sigma, refs)
  return out


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", sorted(TINY))
def test_padded_batch_matches_unpadded_rows(unpadded, family, side):
  model, rows, sigma, refs = unpadded[family]
  ids, mask, offsets = _pad(rows, side, pad_id=TINY[family].vocab_size - 2)
  logits, hidden = jax.jit(lambda x, m: model(x, sigma, attention_mask=m, return_hidden=2))(
      ids, mask)
  got = [(logits[i, a:a + len(r)], [h[i, a:a + len(r)] for h in hidden])
         for i, (r, a) in enumerate(zip(rows, offsets))]
  chex.assert_trees_all_close(got, refs, rtol=TOL, atol=TOL)


def test_mask_is_not_vacuous(tiny_params):
  """The mask acts: the same padded batch without it differs at real positions (so the
  consistency above is not the pads being harmless by accident)."""
  cfg = TINY["llada"]
  model = models.merge(models.graphdef(cfg), tiny_params["llada"])
  ids, mask, _ = _pad(_rows(cfg.vocab_size), "left", pad_id=cfg.vocab_size - 2)
  diff = jax.jit(lambda x, m: jnp.abs(model(x, attention_mask=m) - model(x)))(ids, mask)
  assert float(jnp.max(jnp.where(mask[..., None], diff, 0.0))) > 1e-2


def test_dream_positions_and_alignment_follow_generation_utils():
  """tok_idx = cumsum(mask) − 1, 1 at pads; the aligned value at a row's first real token
  is its own (a hand-written example, not the function's formula)."""
  mask = jnp.array([[False, False, True, True, True], [True, True, True, True, True]])
  np.testing.assert_array_equal(dream_model.padded_positions(mask), [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
  a = jnp.arange(10.0).reshape(2, 5)
  np.testing.assert_array_equal(dream_model.align_shift(a, mask), [[0, 1, 2, 2, 3], [5, 5, 6, 7, 8]])
  np.testing.assert_array_equal(dream_model.align_shift(a), [[0, 0, 1, 2, 3], [5, 5, 6, 7, 8]])


@pytest.mark.parametrize("family", sorted(TINY))
def test_attention_mask_errors_name_the_argument(tiny_params, family):
  cfg = TINY[family]
  model = models.merge(models.graphdef(cfg), tiny_params[family])
  ids = jnp.zeros((2, 6), jnp.int32)
  with pytest.raises(ValueError, match=r"attention_mask must be bool \[B, L\] = \[2, 6\]"):
    model(ids, attention_mask=jnp.ones((2, 5), bool))
  with pytest.raises(ValueError, match="attention_mask must be bool"):
    model(ids, attention_mask=jnp.ones((2, 6), jnp.int32))


def test_cudnn_gets_the_mask_with_the_query_length():
  """cuDNN's fused attention takes the mask as a bias of shape [B, N, T, S] (jax's
  check_layout refuses T = 1), XLA broadcasts [B, 1, 1, S] itself; None stays None."""
  mask = jnp.array([[False, True, True], [True, True, True]])
  keys = common.key_mask(mask)
  chex.assert_shape(keys, (2, 1, 1, 3))
  assert common.mask_for_impl(keys, "xla", 3) is keys
  wide = common.mask_for_impl(keys, "cudnn", 3)
  chex.assert_trees_all_equal(wide, np.repeat(np.asarray(mask)[:, None, None, :], 3, axis=2))
  assert common.mask_for_impl(None, "cudnn", 3) is None


@pytest.mark.parametrize("family", ["llada", pytest.param("dream", marks=pytest.mark.slow)])
def test_scan_and_remat_carry_the_mask(random_params, family):
  """The padded function is the same with scanned, rematerialised blocks (3 blocks, so
  that two are scanned): the mask reaches every block on both paths."""
  cfg = TINY[family]
  cfg = type(cfg).from_dict(dict(cfg.to_dict(), **(
      {"n_layers": 3} if family == "llada" else {"num_hidden_layers": 3})))
  params = random_params(cfg, seed=9)
  ids, mask, _ = _pad(_rows(cfg.vocab_size), "left", pad_id=cfg.vocab_size - 2)

  def logits(**compute):
    model = models.merge(models.graphdef(cfg, **compute), params)
    return jax.jit(lambda x, m: model(x, attention_mask=m))(ids, mask)

  # Same operations, grouped differently by the scan: float32 reassociation only.
  chex.assert_trees_all_close(logits(scan_layers=True, remat=True), logits(), rtol=TOL,
                              atol=TOL)
