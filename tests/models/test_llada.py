"""Flax LLaDA == the PyTorch LLaDA reference; the 8B shape; FLOPs vs XLA; logical axes.

Reference: tests/references/torch_llada.py (written from the public modeling_llada.py),
run in float64 so that the only error left is the Flax float32 forward. The weights reach
Flax as the release ships them: a sharded HF directory converted by ``python -m convert
--family llada`` (in-process) and read back with ``checkpoints.load_backbone``.
Tolerance: relative max logit error <= 1e-4 (max |diff| / max |ref|).
"""

from __future__ import annotations

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references.torch_llada import reference_outputs
from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.models import llada
from tokendrift_jax.models.llada import LLaDAConfig
from tokendrift_jax.perf import hlo

# Float32 forward vs float64 reference: a few 1e-7 measured (3 blocks, float32 rounding
# ~6e-8 per op); 1e-4 is the project's parity bound and far below any real error (a wrong
# term moves logits by O(1)).
REL_TOL = 1e-4
# Measured on this CPU over GQA, MQA and tied tiny models, two weight seeds and four inputs
# each (docs/MODEL.md): Flax bfloat16 vs float64 reference 2.9e-3..7.7e-3; PyTorch's own
# CPU autocast(bfloat16) of the same weights 2.4e-3..7.4e-3 from it. bfloat16 rounds to
# 2^-9 ~ 2e-3 relative per op; 3e-2 (4x the largest measurement) leaves room for
# accumulation over blocks and other inputs without hiding a real bug (a wrong term gives
# O(1) errors).
BF16_BOUND = 3e-2

CASES = {"gqa": {}, "tied_mha": dict(n_kv_heads=4, weight_tying=True)}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, llada_hf_config, build_torch_llada, save_llada_dir):
  """{case: (torch reference, converted checkpoint dir)}: each tiny LLaDA saved as a
  3-shard HF directory and converted by the CLI, once per module."""
  from convert.__main__ import main as convert_main  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("llada")
  out = {}
  for i, (case, over) in enumerate(CASES.items()):
    model = build_torch_llada(llada_hf_config(**over), seed=10 + i)
    src = save_llada_dir(model, str(root / case / "hf"), n_shards=3)
    dst = root / case / "out"
    assert convert_main([src, str(dst), "--family", "llada"]) == 0
    out[case] = (model, dst)
  return out


def _ids(vocab: int, seed: int, batch: int = 2, length: int = 24):
  return np.random.default_rng(seed).integers(0, vocab, size=(batch, length)).astype(np.int64)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_logits_match_reference(converted, case, rel_err):
  model, dst = converted[case]
  backbone = checkpoints.load_backbone(dst)
  assert backbone.meta["process"] == "llada" and backbone.meta["family"] == "llada"
  cfg = backbone.config
  assert cfg.mask_id == 150 and not cfg.time_conditioned and cfg.feature_dim == 2 * 64
  ids = _ids(cfg.vocab_size, seed=1)
  got = np.asarray(backbone(jnp.asarray(ids, jnp.int32), jnp.full((2,), 0.7, jnp.float32)))
  chex.assert_shape(got, (2, 24, 160))
  chex.assert_type(got, np.float32)
  ref, _ = reference_outputs(model, ids)
  err = rel_err(got, ref)
  print(f"{case}: float32 vs float64 reference {err:.2e}")
  assert err <= REL_TOL


def test_bfloat16_compute_bound(converted, rel_err):
  case = "gqa"
  model, dst = converted[case]
  backbone = checkpoints.load_backbone(dst, dtype=jnp.bfloat16)
  ids = _ids(backbone.config.vocab_size, seed=2)
  got = np.asarray(backbone(jnp.asarray(ids, jnp.int32), jnp.zeros((2,), jnp.float32)))
  chex.assert_type(got, np.float32)
  ref, _ = reference_outputs(model, ids)
  autocast, _ = reference_outputs(model, ids, autocast_bf16=True)
  err, err_torch = rel_err(got, ref), rel_err(autocast, ref)
  print(f"{case}: flax bf16 vs float64 {err:.2e}; torch autocast bf16 vs float64 "
        f"{err_torch:.2e}")
  assert err <= BF16_BOUND


def _jitted(gdef, **kwargs):
  """``f(params, ids_or_embeds)``: the module's forward under jit (eager NNX calls dispatch
  op by op and cost seconds)."""
  soft = kwargs.pop("soft", False)

  @jax.jit
  def f(params, x, key=None):
    net = models.merge(gdef, params)
    return net(None, embeds=x, **kwargs) if soft else net(x, dropout_rng=key, **kwargs)
  return f


def test_hidden_states_and_soft_inputs(converted, rel_err):
  """return_hidden gives each block's output (before ln_f); embeds input == ids input."""
  model, dst = converted["gqa"]
  cfg, params, _ = checkpoints.load_backbone_params(dst)
  params = jax.tree.map(jnp.asarray, params)
  gdef = models.graphdef(cfg)
  ids = _ids(cfg.vocab_size, seed=4)
  logits, hidden = _jitted(gdef, return_hidden=True)(params, jnp.asarray(ids, jnp.int32))
  ref_logits, ref_hidden = reference_outputs(model, ids)
  assert len(hidden) == cfg.n_layers
  # rel_err: relative to the largest activation (not elementwise), as for the logits.
  for h, r in zip(hidden, ref_hidden):
    chex.assert_type(h, jnp.float32)
    assert rel_err(h, r) <= REL_TOL
  assert rel_err(logits, ref_logits) <= REL_TOL
  # Soft inputs: the embedding rows fed as `embeds` take the same path after the lookup
  # (the last two block outputs, as the drift features read them).
  emb = params["wte"]["embedding"][jnp.asarray(ids)]
  soft_logits, last2 = _jitted(gdef, return_hidden=2, soft=True)(params, emb)
  chex.assert_trees_all_equal((soft_logits, last2), (logits, hidden[-2:]))
  # ... and the reference agrees on soft inputs (its inputs_embeds path).
  ref_soft, _ = reference_outputs(model, embeds=np.asarray(emb, np.float64))
  assert rel_err(soft_logits, ref_soft) <= REL_TOL


def test_scan_and_remat_keep_the_function(converted, rel_err):
  """scan_layers + remat: the same function, checked against the reference itself."""
  model, dst = converted["gqa"]
  cfg, params, _ = checkpoints.load_backbone_params(dst)
  ids = _ids(cfg.vocab_size, seed=5)
  gdef = models.graphdef(cfg, scan_layers=True, remat=True, remat_policy="nothing_saveable")
  # return_hidden=1: blocks 0..1 run under lax.scan, the last one outside it.
  logits, hidden = _jitted(gdef, return_hidden=1)(jax.tree.map(jnp.asarray, params),
                                                  jnp.asarray(ids, jnp.int32))
  ref_logits, ref_hidden = reference_outputs(model, ids)
  assert rel_err(logits, ref_logits) <= REL_TOL
  assert len(hidden) == 1 and rel_err(hidden[0], ref_hidden[-1]) <= REL_TOL


def test_dropout_is_explicit():
  """Dropout only with a key; the same key, the same masks."""
  cfg = _tiny(n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, mlp_hidden_size=48, length=8,
              dropout=0.3, embedding_dropout=0.2)
  gdef = models.graphdef(cfg)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype),
                        models.abstract_params(cfg))
  ids = jnp.asarray(_ids(cfg.vocab_size, seed=6, length=8), jnp.int32)

  @jax.jit
  def run(p, key):
    net = models.merge(gdef, p)
    return net(ids), net(ids, dropout_rng=key)

  det, a = run(params, jax.random.key(1))
  det2, b = run(params, jax.random.key(1))
  chex.assert_trees_all_equal((det2, b), (det, a))
  assert float(jnp.max(jnp.abs(a - det))) > 1e-3   # a key turns dropout on


def test_8b_initialises_abstractly_with_the_published_count():
  """sizes["8b"] is LLaDA-8B-Base's config.json; its parameter count is the release's.

  The published count: the release's model.safetensors.index.json (GSAI-ML/LLaDA-8B-Base,
  copied in QuentinFitteRey/LLada-Reasoning@4bfec79d llada_local/) gives total_size
  16031162368 bytes of bfloat16 tensors, i.e. 8,015,581,184 parameters. Independently,
  from the config.json numbers: embedding + output layer 2·V·d, per block two norms, q
  and attn_out d², k and v d·(n_kv·d/n_heads), three MLP matrices d·h, and ln_f.
  """
  family = models.get_family("llada")
  cfg = LLaDAConfig(**family.sizes["8b"])
  V, d, n, h, heads, kv = 126464, 4096, 32, 12288, 32, 32
  formula = 2 * V * d + n * (2 * d + 2 * d * d + 2 * d * (kv * d // heads) + 3 * d * h) + d
  assert formula == 16031162368 // 2
  t0 = time.perf_counter()
  abstract = models.abstract_params(cfg)
  print(f"8b abstract init {time.perf_counter() - t0:.2f}s")
  leaves = jax.tree.leaves(abstract)
  assert all(x.dtype == jnp.float32 for x in leaves)
  assert sum(int(np.prod(x.shape)) for x in leaves) == formula == cfg.num_params()
  assert cfg.mask_id == 126336 and cfg.length == 4096 and cfg.rope_theta == 500000.0
  assert family.hub_names == {"llada": "GSAI-ML/LLaDA-8B-Base"}
  # Every parameter of the 8B gets one logical axis per dimension.
  for path, x in jax.tree_util.tree_flatten_with_path(abstract)[0]:
    keys = tuple(str(getattr(k, "key", k)) for k in path)
    assert len(llada.logical_axes(keys, x.shape)) == len(x.shape)


def _tiny(**over) -> LLaDAConfig:
  base = dict(vocab_size=160, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
              mlp_hidden_size=96, length=16, mask_token_id=150)
  return LLaDAConfig(**dict(base, **over))


@pytest.mark.parametrize("tied", [False, True])
def test_logical_axes_name_every_dimension(tied):
  cfg = _tiny(weight_tying=tied)
  # Sizes are pairwise distinct, so the name of a dimension is checked by its size.
  size_of = {"vocab": 160, "embed": 64, "heads": 64, "kv_heads": 32, "mlp": 96}
  assert len({160, 64, 32, 96}) == 4 and cfg.kv_dim == 32
  flat = jax.tree_util.tree_flatten_with_path(models.abstract_params(cfg))[0]
  seen = set()
  for path, x in flat:
    keys = tuple(str(getattr(k, "key", k)) for k in path)
    axes = llada.logical_axes(keys, x.shape)
    assert isinstance(axes, tuple) and len(axes) == len(x.shape), keys
    assert all(size_of[a] == s for a, s in zip(axes, x.shape)), (keys, axes, x.shape)
    seen.add((keys[-2] if keys[0] == "blocks" else keys[0], axes))
  expected = {("wte", ("vocab", "embed")), ("ln_f", ("embed",)),
              ("attn_norm", ("embed",)), ("ff_norm", ("embed",)),
              ("q_proj", ("embed", "heads")), ("k_proj", ("embed", "kv_heads")),
              ("v_proj", ("embed", "kv_heads")), ("attn_out", ("heads", "embed")),
              ("ff_proj", ("embed", "mlp")), ("up_proj", ("embed", "mlp")),
              ("ff_out", ("mlp", "embed"))}
  if not tied:
    expected.add(("ff_out", ("embed", "vocab")))
  assert seen == expected
  with pytest.raises(ValueError, match="not a parameter"):
    llada.logical_axes(("blocks", "0", "q_proj", "bias"), (64,))
  with pytest.raises(ValueError, match="rank-2"):
    llada.logical_axes(("wte", "embedding"), (160,))


def _passes_program(gdef):
  """Forward + backward with weight grads, and an input-only backward of the block stack
  to the last two block outputs (the frozen encoder's soft pass), in one program."""
  def program(p_gen, p_enc, ids, embeds):
    def gen_loss(p):
      logits = models.merge(gdef, p)(ids)
      return jnp.sum(logits * logits)

    encoder = models.merge(gdef, jax.lax.stop_gradient(p_enc))

    def enc_out(e):
      hidden = encoder(None, embeds=e, return_hidden=2)[1]
      return jnp.sum(hidden[0] * hidden[1])

    return jax.grad(gen_loss)(p_gen), jax.grad(enc_out)(embeds)
  return program


def test_flop_model_matches_hlo():
  """FLOP model == the dot FLOPs of XLA's optimised program (both 2 · MACs).

  Two programs: the forward alone, and generator fwd + bwd with weight gradients plus
  encoder fwd + input-only bwd under remat "nothing_saveable" (every term of the model in
  one sum). Each term separately, tied and untied, and the other remat policies were
  checked the same way (docs/MODEL.md); left out to keep the suite's compile time down.
  """
  cfg = _tiny(length=16)
  b, L = 2, cfg.length
  fm = models.get_family("llada").flops(cfg)
  # FLOPs do not depend on the values: constant parameters (no random init) suffice.
  abstract = models.abstract_params(cfg)
  p_gen = jax.tree.map(lambda x: jnp.full(x.shape, 0.01, x.dtype), abstract)
  p_enc = jax.tree.map(lambda x: jnp.full(x.shape, 0.02, x.dtype), abstract)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, L)), jnp.int32)
  embeds = jnp.asarray(rng.standard_normal((b, L, cfg.d_model)), jnp.float32)
  fwd = jax.jit(lambda p: models.merge(models.graphdef(cfg), p)(ids)).lower(p_gen)
  assert hlo.dot_flops(fwd.compile().as_text()) == b * fm.forward(L, output_layer=True)
  policy = "nothing_saveable"
  gdef = models.graphdef(cfg, remat=True, remat_policy=policy)
  both = jax.jit(_passes_program(gdef)).lower(p_gen, p_enc, ids, embeds).compile()
  want = (fm.forward(L, output_layer=True) + fm.backward(L)
          + fm.recompute(L, policy, weight_grads=True)
          + fm.forward(L, output_layer=False) + fm.input_backward(L)
          + fm.recompute(L, policy, weight_grads=False))
  assert hlo.dot_flops(both.as_text()) == b * want
  assert fm.shared_forward(L) == 0 and fm.lift(L) == 2 * L * 160 * 64
  # 2 · (matmul parameters) per token: the usual transformer estimate.
  matmul_params = cfg.num_params() - cfg.vocab_size * cfg.d_model - (2 * cfg.n_layers + 1) * 64
  assert cfg.n_layers * fm.block_linear_per_token() + 2 * 64 * 160 == 2 * matmul_params


def test_config_contract():
  cfg = _tiny()
  assert LLaDAConfig.from_dict(cfg.to_dict()) == cfg
  assert models.config_from_dict("llada", cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="unknown LLaDAConfig field"):
    LLaDAConfig.from_dict(dict(cfg.to_dict(), n_embd=3))
  with pytest.raises(ValueError, match="n_kv_heads=3"):
    _tiny(n_kv_heads=3)
  with pytest.raises(ValueError, match="mask_token_id"):
    _tiny(mask_token_id=160)
  gdef = models.graphdef(cfg)
  params = models.abstract_params(cfg)
  with pytest.raises(ValueError, match="exceeds the model length"):
    jax.eval_shape(lambda p: models.merge(gdef, p)(jnp.zeros((1, 17), jnp.int32)), params)
  with pytest.raises(ValueError, match="either input_ids or embeds"):
    jax.eval_shape(lambda p: models.merge(gdef, p)(jnp.zeros((1, 4), jnp.int32),
                                                   embeds=jnp.zeros((1, 4, 64))), params)
