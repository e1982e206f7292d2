"""objectives/tokendrift (and the continuation micro-step with prompts): the full TokenDrift
micro-step (Alg. 1), sharded == single device; prompts never corrupted, lifted or
differentiated; LLaDA's SFT loss."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.drift import features as feat_lib
from tokendrift_jax.drift import objective as obj_lib
from tokendrift_jax.drift import queue as queue_lib
from tokendrift_jax.objectives import tokendrift
from tokendrift_jax.objectives.continuation import Continuation
from tokendrift_jax.objectives.tokendrift import TokenDrift
from tokendrift_jax.train import losses
from tokendrift_jax.train import prompt as prompt_lib


def _setup(arch, tiny_model_config, random_params):
  cfg = tiny_model_config(arch)
  params = random_params(cfg, seed=3)
  encoder = random_params(cfg, seed=4)
  process = make_process(arch, cfg.vocab_size)
  text_vocab = cfg.vocab_size - 1 if arch == "mdlm" else cfg.vocab_size
  x0 = np.random.default_rng(5).integers(0, text_vocab, size=(8, cfg.length)).astype(np.int32)
  return cfg, params, encoder, process, x0, _partial_queues(2 * cfg.hidden_size)


def _partial_queues(dim, seed=6):
  """Partly filled queues (10 of 16 slots) with unit-norm features."""
  rng = np.random.default_rng(seed)
  queues = {}
  for name in ("real", "gen"):
    q = queue_lib.init_queue(16, dim)
    feats = rng.standard_normal((10, dim)).astype(np.float32)
    queues[name] = queue_lib.push(q, feats / np.linalg.norm(feats, axis=1, keepdims=True))
  return queues


def _run(arch, mesh, setup):
  cfg, params, encoder, process, x0, queues = setup
  ctx = losses.StepContext(graphdef=models.graphdef(cfg, scan_layers=True),
                           process=process, mesh=mesh, dropout=True)
  objective = TokenDrift(config=obj_lib.DriftConfig(queue_size=16), feature_dim=cfg.feature_dim)
  rep = sharding.replicated(mesh)
  fn = jax.jit(lambda p, e, q, x, k: objective.microstep(ctx, p, e, q, x, k),
               in_shardings=(rep, rep, rep, sharding.batch_sharding(mesh), rep))
  loss, grads, new_q, metrics = fn(params, encoder, queues, x0, jax.random.PRNGKey(11))
  return jax.device_get((loss, grads, new_q, metrics))


# MDLM's is slow: an MDLM TokenDrift step on a (4, 2) + FSDP mesh against one device is in
# the suite through tests/train/test_trainer.py::test_one_device_equals_eight_devices_fsdp;
# DUO's (the soft lift on every position) only here.
@pytest.mark.parametrize("arch", [pytest.param("mdlm", marks=pytest.mark.slow), "duo"])
def test_sharded_microstep_equals_single_device(arch, tiny_model_config, random_params):
  setup = _setup(arch, tiny_model_config, random_params)
  one = _run(arch, sharding.make_mesh((1, 1), jax.devices()[:1]), setup)
  eight = _run(arch, sharding.make_mesh((8, 1)), setup)
  loss1, grads1, q1, m1 = one
  loss8, grads8, q8, m8 = eight
  assert np.isfinite(loss1) and loss1 > 0
  # float32 sums split over 8 devices reorder the additions; 1e-5 is the bound.
  chex.assert_trees_all_close(loss8, loss1, rtol=1e-5, atol=1e-7)
  # Gradients: max |diff| <= 1e-5 of the largest gradient entry (at least 1e-5 absolute).
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads1))
  assert scale > 0
  chex.assert_trees_all_close(grads8, grads1, rtol=0, atol=1e-5 * max(scale, 1.0))
  # Whole queues (buffers to 1e-6; pointer and count, integers, therefore exactly).
  chex.assert_trees_all_close(q8, q1, rtol=0, atol=1e-6)
  for name in ("real", "gen"):
    assert int(q8[name].count) == int(q1[name].count) == 16   # 10 + 8 pushed, capacity 16
    assert int(q8[name].ptr) == int(q1[name].ptr) == 2        # wrapped
  keys = ("v_norm", "scale", "pos_weight_frac")
  chex.assert_trees_all_close({k: m8[k] for k in keys}, {k: m1[k] for k in keys},
                              rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ prompt-conditioned (LLaDA)
# A tiny LLaDA under LLaDA's process, one device, dropout off. Rows carry per-row prompt
# lengths (the "data" layout, [b, L + 1]) of 0 to L - 1 tokens.

PROMPT_LENGTHS = np.array([0, 3, 7, 15, 1, 9, 5, 12], np.int32)  # 15 = L - 1


def _llada_setup(tiny_llada_config, random_params, pool="all", base_loss_weight=1.0):
  from tests.helpers.tiny_run import TINY_LLADA_TEXT_VOCAB  # pylint: disable=import-outside-toplevel
  cfg = tiny_llada_config()
  process = make_process("llada", cfg.vocab_size, mask_id=cfg.mask_id)
  ctx = losses.StepContext(
      graphdef=models.graphdef(cfg, scan_layers=True), process=process,
      mesh=None, dropout=False, prompt=prompt_lib.PromptSpec("data"))
  dcfg = obj_lib.DriftConfig(queue_size=16, pool=pool, base_loss_weight=base_loss_weight)
  x0 = np.random.default_rng(8).integers(0, TINY_LLADA_TEXT_VOCAB, (8, cfg.length)).astype(
      np.int32)
  batch = np.concatenate([x0, PROMPT_LENGTHS[:, None]], axis=1)
  keep = np.arange(cfg.length)[None, :] < PROMPT_LENGTHS[:, None]
  params, encoder = random_params(cfg, seed=3), random_params(cfg, seed=4)
  return (ctx, dcfg), params, encoder, _partial_queues(cfg.feature_dim), x0, batch, keep


def _llada_draw(ctx, dcfg, encoder, batch, key):
  """The micro-step's own draw (its key use: k_t, k_x, k_drop = split(key, 3))."""
  x0, keep = prompt_lib.split_prompt(ctx.prompt, jnp.asarray(batch))
  k_t, k_x, _ = jax.random.split(key, 3)
  draw = tokendrift.drift_draw(ctx, dcfg, x0, keep, k_t, k_x)
  enc = tokendrift.frozen_encoder(ctx, dcfg, encoder, x0.shape[0])
  return draw, enc


def _np_pool(hidden, positions):
  """float64 normalize([mean_{t∈S} H^(L-1)_t, mean_{t∈S} H^(L)_t]) for bool [b, L] S."""
  w = np.asarray(positions, np.float64)[..., None]
  pooled = np.concatenate([(np.asarray(x, np.float64) * w).sum(1) / w.sum(1)
                           for x in hidden[-2:]], -1)
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def test_prompt_is_never_corrupted_lifted_or_differentiated(tiny_llada_config, random_params):
  """Per-row prompts, "completion" pooling, base loss on: the prompt keeps x0, enters the
  encoder as E[x0] exactly and gets exactly zero gradient; u and h pool the completion
  only (float64 NumPy pooling of the same encoder output)."""
  (ctx, dcfg), params, encoder, queues, x0, batch, keep = _llada_setup(
      tiny_llada_config, random_params, pool="completion")
  key = jax.random.PRNGKey(21)

  @jax.jit
  def pieces(params, encoder, queues, batch):
    draw, enc = _llada_draw(ctx, dcfg, encoder, batch, key)
    u = tokendrift.clean_features(enc, draw)
    logits = losses.generator(ctx, params, None)(draw.xt, draw.sigma)
    # ℓ = log_probs(logits) and its vjp: the chain rule through the parameterisation
    # gives ∂L/∂logits from ∂L/∂ℓ without a second backward pass through the encoder.
    log_probs, lp_vjp = jax.vjp(lambda lg: ctx.process.log_probs(lg, draw.xt), logits)
    lift = tokendrift.lift_embeddings(ctx, dcfg, enc, draw, log_probs)
    loss_of_lp = lambda lp: tokendrift.drift_loss_from_log_probs(ctx, dcfg, enc, draw, u,
                                                                  queues, lp)[0]
    g_lp = jax.grad(loss_of_lp)(log_probs)
    # The encoder's output (fixed) on the clean rows and on the lifted rows, and h.
    hidden = [enc.hidden(e, enc.sigma) for e in (jnp.take(enc.table, draw.x0, 0), lift)]
    h = feat_lib.encoder_features(enc.hidden, lift, enc.sigma, draw.pooled)
    return draw, enc.table, lift, lp_vjp(g_lp)[0], g_lp, u, h, hidden

  draw, table, lift, g_logits, g_lp, u, h, hidden = jax.device_get(
      pieces(params, encoder, queues, batch))
  chex.assert_trees_all_equal(draw.keep, keep)
  # Never corrupted: the prompt of xt is x0; the completion is (partly) masked.
  chex.assert_trees_all_equal(draw.xt[keep], x0[keep])
  assert np.all(draw.xt[draw.predicted] == ctx.process.mask_id)
  assert not np.any(draw.predicted & keep)
  assert draw.predicted.sum() >= 10  # a lower bound: the test sees lifted positions
  # No lift: the encoder's input at prompt positions is the exact row E[x0].
  chex.assert_trees_all_equal(lift[keep], table[x0[keep]])
  # No gradient at prompt positions, through the drift and the base loss (weight 1):
  # exactly zero w.r.t. the generator's logits and w.r.t. the lift's input ℓ.
  chex.assert_trees_all_equal(g_logits[keep], np.zeros_like(g_logits[keep]))
  chex.assert_trees_all_equal(g_lp[keep], np.zeros_like(g_lp[keep]))
  # A lower bound: the predicted completion positions do get gradient.
  assert np.all(np.abs(g_logits[draw.predicted]).sum(-1) > 0)
  # "completion" pools the non-prompt positions of both u (clean) and h (lifted).
  chex.assert_trees_all_equal(draw.pooled, ~keep)
  for got, hid in ((u, hidden[0]), (h, hidden[1])):
    # float32 sums of ≤ 16 hidden states of size O(1)-O(10), then a normalisation.
    chex.assert_trees_all_close(got, _np_pool(hid, ~keep), rtol=0, atol=2e-6)
  # Row 0 has no prompt; every other row's feature moves when its prompt is left out.
  every = _np_pool(hidden[0], np.ones_like(keep))
  chex.assert_trees_all_close(u[0], every[0], rtol=0, atol=2e-6)
  assert np.min(np.max(np.abs(u[1:] - every[1:]), axis=-1)) > 1e-4  # a lower bound


def test_pool_all_averages_every_position(tiny_llada_config, random_params):
  """DriftConfig.pool="all" (the paper's default) pools every position, prompt included."""
  (ctx, dcfg), _, encoder, _, _, batch, _ = _llada_setup(tiny_llada_config, random_params,
                                                         pool="all")

  @jax.jit
  def pieces(encoder, batch):
    draw, enc = _llada_draw(ctx, dcfg, encoder, batch, jax.random.PRNGKey(22))
    hidden = enc.hidden(jnp.take(enc.table, draw.x0, 0), enc.sigma)
    return draw.pooled, tokendrift.clean_features(enc, draw), hidden

  pooled, u, hidden = jax.device_get(pieces(encoder, batch))
  assert pooled is None
  # float32 sums of 16 hidden states of size O(1)-O(10), then a normalisation.
  chex.assert_trees_all_close(u, _np_pool(hidden, np.ones((8, 16), bool)), rtol=0, atol=2e-6)


def test_prompted_continuation_is_llada_sft_loss(tiny_llada_config, random_params):
  """The continuation micro-step with per-row prompts == LLaDA's SFT loss (GUIDELINES.md),
  float64 NumPy (tests/references/np_llada.py) on the micro-step's own draws."""
  from tests.references import np_llada  # pylint: disable=import-outside-toplevel
  (ctx, _), params, _, _, x0, batch, _ = _llada_setup(tiny_llada_config, random_params)
  key = jax.random.PRNGKey(23)
  # Only the loss and metrics leave the jit: XLA drops the unused backward pass.
  loss, metrics = jax.jit(
      lambda p, b: Continuation().microstep(ctx, p, None, None, b, key)[::3])(params, batch)
  # The documented key use: k_loss, k_drop = split(key); LLaDA's loss: k_t, k_x =
  # split(k_loss), t ~ U[0, 1) [B] (sampling_eps 0, no strata), masking uniforms [B, L].
  k_t, k_x = jax.random.split(jax.random.split(key)[0])
  t = np.asarray(jax.random.uniform(k_t, (8,), jnp.float32))
  u = np.asarray(jax.random.uniform(k_x, x0.shape, jnp.float32))
  mask_id = ctx.process.mask_id
  noisy, p_mask = np_llada.forward_process(x0, t, u, mask_id, prompt_lengths=PROMPT_LENGTHS)
  forward = jax.jit(lambda p, x: models.merge(ctx.graphdef, p)(x, jnp.zeros((8,))))
  logits = np.asarray(forward(params, jnp.asarray(noisy, jnp.int32)), np.float64)
  want = np_llada.sft_loss(logits, x0, noisy, p_mask, PROMPT_LENGTHS, mask_id)
  # float32 log-softmax over 256 ids and a sum of ~60 terms of size ~10: ≲ 1e-6 relative.
  chex.assert_trees_all_close(loss, want, rtol=1e-5, atol=0)
  chex.assert_trees_all_close(metrics["prompt_per_row"], PROMPT_LENGTHS.mean(), rtol=1e-7,
                              atol=0)


def test_completion_pooling_needs_a_prompt(tiny_llada_config):
  """config.drift.pool="completion" without a prompt is refused when the objective is built."""
  from configs import base  # pylint: disable=import-outside-toplevel
  cfg = tiny_llada_config()
  process = make_process("llada", cfg.vocab_size, mask_id=cfg.mask_id)
  c = base.get_config()
  c.drift.pool = "completion"
  with pytest.raises(ValueError, match=r"config.drift.pool='completion' pools the non-prompt "
                                       r"positions: it needs a prompt"):
    TokenDrift.from_config(c, cfg, process)
  c.prompt.mode, c.prompt.length = "prefix", 4
  assert TokenDrift.from_config(c, cfg, process).config.pool == "completion"


# ------------------------------------------------------------------ the encoder without its head


def _family_config(family, tiny_model_config, tiny_llada_config):
  from tests.helpers import tiny_run  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.models.dream import DreamConfig  # pylint: disable=import-outside-toplevel
  if family == "dit":
    cfg = tiny_model_config("duo")
    return cfg, make_process("duo", cfg.vocab_size)
  cfg = tiny_llada_config() if family == "llada" else DreamConfig(**tiny_run.TINY_DREAM)
  return cfg, make_process(family, cfg.vocab_size, mask_id=cfg.mask_id)


# The whole micro-step per family (8-12 s each on 2 cores); the suite keeps the DiT's and,
# for every family, the cheaper forward check below.
@pytest.mark.parametrize("family", ["dit", pytest.param("llada", marks=pytest.mark.slow),
                                    pytest.param("dream", marks=pytest.mark.slow)])
def test_encoder_without_its_output_layer_gives_the_same_step(
    family, tiny_model_config, tiny_llada_config, random_params):
  """The frozen encoder's copy holds no output layer (placeholders of 0 elements under the
  family's ``head_keys``), and the micro-step with it equals the one with the whole
  network: ϕ's features are block outputs, so the head never entered the step. Equal to
  float32 rounding (XLA may fuse the pruned program differently): 1e-6 relative."""
  cfg, process = _family_config(family, tiny_model_config, tiny_llada_config)
  fam = models.family_of(cfg)
  assert fam.head_keys
  params, encoder = random_params(cfg, seed=3), random_params(cfg, seed=4)
  objective = TokenDrift.from_config(_drift_section(), cfg, process)
  assert objective.head_keys == fam.head_keys
  dropped = objective.frozen(encoder)
  held = lambda t: sum(np.size(x) for x in jax.tree.leaves(t))
  head = sum(np.size(x) for k in fam.head_keys if k in encoder for x in jax.tree.leaves(encoder[k]))
  assert head > 0 and held(dropped) == held(encoder) - head
  for k in encoder:
    if k not in fam.head_keys:
      assert dropped[k] is encoder[k]
  from tests.helpers.tiny_run import TINY_LLADA_TEXT_VOCAB  # pylint: disable=import-outside-toplevel
  # LLaDA's and Dream's tiny configs share the mask id 250 (clean ids below it).
  text_vocab = TINY_LLADA_TEXT_VOCAB if family != "dit" else cfg.vocab_size
  x0 = np.random.default_rng(5).integers(0, text_vocab, (8, cfg.length)).astype(np.int32)
  ctx = losses.StepContext(graphdef=models.graphdef(cfg, scan_layers=True), process=process,
                           mesh=None, dropout=False)
  queues = _partial_queues(cfg.feature_dim)
  key = jax.random.PRNGKey(11)
  run = lambda enc, only: jax.device_get(jax.jit(
      lambda p, e, q, x, k: tokendrift.drift_microstep(ctx, objective.config, p, e, q, x, k,
                                                       features_only=only))(
          params, enc, queues, x0, key))
  whole, without = run(encoder, False), run(dropped, True)
  assert np.isfinite(whole[0])
  chex.assert_trees_all_close(without[:3], whole[:3], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family", ["dit", "llada", "dream"])
def test_encoder_without_its_output_layer_gives_the_same_features(
    family, tiny_model_config, tiny_llada_config, random_params):
  """ϕ's last two block outputs from the dropped-head copy (``head=False``) equal the whole
  network's, on soft-token inputs as the lift makes them (exactly: the same blocks run)."""
  cfg, _ = _family_config(family, tiny_model_config, tiny_llada_config)
  fam = models.family_of(cfg)
  encoder = random_params(cfg, seed=4)
  gdef = models.graphdef(cfg, scan_layers=True)
  embeds = np.random.default_rng(2).standard_normal((2, cfg.length, cfg.feature_dim // 2))
  embeds = embeds.astype(np.float32)
  sigma = np.full((2,), 0.3, np.float32)
  whole = jax.jit(lambda e, x: models.merge(gdef, e)(None, sigma, embeds=x,
                                                     return_hidden=2)[1])(encoder, embeds)
  without = jax.jit(lambda e, x: models.merge(gdef, e)(None, sigma, embeds=x, return_hidden=2,
                                                       head=False))(
      tokendrift.drop_head(encoder, fam.head_keys), embeds)
  assert without[0] is None
  chex.assert_trees_all_equal(list(without[1]), list(whole))


def _drift_section():
  from configs import mdlm_drift  # pylint: disable=import-outside-toplevel
  c = mdlm_drift.get_config()
  c.drift.queue_size = 16
  return c


def test_head_false_needs_return_hidden(tiny_model_config, random_params):
  cfg = tiny_model_config("mdlm")
  net = models.merge(models.graphdef(cfg), random_params(cfg, seed=1))
  with pytest.raises(ValueError, match="head=False returns only hidden states"):
    net(np.zeros((1, cfg.length), np.int32), head=False)
