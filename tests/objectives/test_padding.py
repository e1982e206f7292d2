"""Padded training rows (``config.prompt.pad_id``) give the losses, features and drift of
the same rows run unpadded, for DiT (MDLM), LLaDA and Dream.

A padded micro-batch holds rows of different lengths (right-padded text rows; for the
prompted families also SFT pairs whose prompts differ in length, left-padded so that the
completions start in one column, P_i counting the pads). Each row is then run alone,
unpadded, with the *same* corruption (its real positions of the padded draw's xt and t):

* TokenDrift: the clean and generated features u, h (the completion or all real
  positions pooled), the drift V of the stacked unpadded features and the micro-step's
  loss (fixed point + base diffusion loss) equal the padded batch's;
* continuation: the micro-step's loss equals the unpadded rows' loss combined as the
  padded loss promises (pretraining: Σ nll / Σ real tokens; SFT: the mean over rows of
  each row's Σ CE/(p_mask · A_i), A_i its real answer length).

Bound 1e-5 (float32 rounding of the same function; a pad that leaks into attention,
pooling or the mean moves these by >1e-2 with random non-zero weights).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import models
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.diffusion import metrics as diff_metrics
from tokendrift_jax.drift import objective as obj_lib
from tokendrift_jax.drift import queue as queue_lib
from tokendrift_jax.models.dit import DiTConfig
from tokendrift_jax.models.dream import DreamConfig
from tokendrift_jax.models.llada import LLaDAConfig
from tokendrift_jax.objectives import tokendrift
from tokendrift_jax.objectives.continuation import Continuation
from tokendrift_jax.train import losses
from tokendrift_jax.train import prompt as prompt_lib

TOL = 1e-5
L = 12
TINY = {
    "dit": (DiTConfig(vocab_size=64, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=2,
                      length=16, dropout=0.0), "mdlm"),
    "llada": (LLaDAConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                          mlp_hidden_size=48, length=16, mask_token_id=60), "llada"),
    "dream": (DreamConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          length=16, mask_token_id=60), "dream"),
}
PAD = 61   # neither text (ids < 56) nor any family's mask (60; the DiT's is 63)
# (real tokens, prompt tokens) per row; "text" rows are right-padded, "sft" rows have
# their prompts left-padded to the widest prompt (4), completions from column 4 on.
# Two distinct lengths per kind: one compile of each unpadded shape.
TEXT_ROWS = ((12, 0), (7, 0), (7, 0))
SFT_ROWS = ((12, 4), (9, 1), (9, 3))
# The default run: the prompted LLaDA case (left-padded prompts, right pads, completion
# pooling); every family's padded logits and features are tests/models/test_padding.py's;
# the unprompted micro-steps of all three families run under --runslow.
CASES = [("llada", "sft", "completion"),
         pytest.param("dream", "text", "all", marks=pytest.mark.slow),
         pytest.param("dit", "text", "all", marks=pytest.mark.slow),
         pytest.param("llada", "text", "all", marks=pytest.mark.slow),
         pytest.param("dream", "sft", "all", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def weights(random_params):
  """{family: params}, every leaf perturbed: the generator's and, as at the first step of
  a run, the frozen encoder's."""
  return {name: random_params(cfg, seed=30 + i) for i, (name, (cfg, _)) in
          enumerate(TINY.items())}


def _batch(kind: str):
  """(batch int32 [3, L (+1)], [(start, real length, prompt length)] per row)."""
  rng = np.random.default_rng(7)
  spec = TEXT_ROWS if kind == "text" else SFT_ROWS
  width = max(p for _, p in spec)
  x0 = np.full((len(spec), L), PAD, np.int32)
  layout = []
  for i, (n, p) in enumerate(spec):
    start = width - p   # left pads before the prompt; text rows start at 0
    x0[i, start:start + n] = rng.integers(0, 56, n)
    layout.append((start, n, p))
  if kind == "text":
    return x0, layout
  ends = np.array([width for _ in spec], np.int32)[:, None]   # P_i counts the pads
  return np.concatenate([x0, ends], axis=1), layout


def _setup(family, kind, pool):
  cfg, process_name = TINY[family]
  process = make_process(process_name, cfg.vocab_size, mask_id=cfg.mask_id)
  mode = "none" if kind == "text" else "data"
  spec = prompt_lib.PromptSpec(mode, 0, L, pad_id=PAD)
  ctx = losses.StepContext(graphdef=models.graphdef(cfg), process=process, mesh=None,
                           dropout=False, prompt=spec)
  dcfg = obj_lib.DriftConfig(queue_size=8, pool=pool, base_loss_weight=1.0)
  return cfg, ctx, dcfg


def _row_draw(draw, i, start, n, p, pool):
  """The unpadded draw of row i: its real positions of the padded draw (what drift_draw
  makes for an unpadded row with that xt: the prompt kept, masks predicted outside it)."""
  sl = slice(start, start + n)
  x0, xt = draw.x0[i:i + 1, sl], draw.xt[i:i + 1, sl]
  keep = None if draw.keep is None else (jnp.arange(n) < p)[None]
  predicted = draw.predicted[i:i + 1, sl]
  pooled = None if keep is None or pool == "all" else jnp.logical_not(keep)
  return tokendrift.DriftDraw(x0=x0, keep=keep, t=draw.t[i:i + 1], xt=xt,
                              sigma=draw.sigma[i:i + 1], predicted=predicted, pooled=pooled)


def _empty_queues(m):
  return {"real": queue_lib.init_queue(8, m), "gen": queue_lib.init_queue(8, m)}


@pytest.mark.parametrize("family,kind,pool", CASES)
def test_tokendrift_padded_batch_matches_unpadded_rows(weights, family, kind, pool):
  cfg, ctx, dcfg = _setup(family, kind, pool)
  params = enc_params = weights[family]
  batch, layout = _batch(kind)
  key = jax.random.key(10)
  queues = _empty_queues(cfg.feature_dim)
  # The padded micro-step itself: loss, and h, u as it pushed them into the empty queues.
  loss, _, pushed, metrics = jax.jit(
      lambda b, k: tokendrift.drift_microstep(ctx, dcfg, params, enc_params, queues, b, k))(
          jnp.asarray(batch), key)
  h, u, base = pushed["gen"].buf[:3], pushed["real"].buf[:3], metrics["loss_diffusion"]
  # Its draw (the micro-step's key use: k_t, k_x, k_drop = split(key, 3)).
  x0, keep = prompt_lib.split_prompt(ctx.prompt, jnp.asarray(batch))
  real = prompt_lib.real_positions(ctx.prompt, x0)
  k_t, k_x, _ = jax.random.split(key, 3)
  draw = jax.jit(lambda *a: tokendrift.drift_draw(ctx, dcfg, *a))(x0, keep, k_t, k_x, real)
  # Pads are never predicted, and never corrupted when a prompt is kept. Every row has
  # some but not all of its real positions predicted (key 10), so that attending a pad
  # would change what is read (an all-mask row sees the same masks in its pads).
  assert not bool(jnp.any(draw.predicted & ~real))
  counts = [int(c) for c in jnp.sum(draw.predicted, axis=1)]
  assert all(0 < c < n - p for c, (_, n, p) in zip(counts, layout)), counts
  if keep is not None:
    assert bool(jnp.all(jnp.where(real, True, draw.xt == x0)))

  def run(d):
    """(loss, u, h, base loss) of an unpadded row's micro-step pieces for its draw d."""
    enc = tokendrift.frozen_encoder(ctx, dcfg, enc_params, d.x0.shape[0])
    u = tokendrift.clean_features(enc, d)
    logits = losses.generator(ctx, params, None)(d.xt, d.sigma)
    loss, (queues, metrics) = tokendrift.drift_loss_from_logits(
        ctx, dcfg, enc, d, u, _empty_queues(cfg.feature_dim), logits)
    n = d.x0.shape[0]
    return loss, u, queues["gen"].buf[:n], metrics["loss_diffusion"]

  run = jax.jit(run)
  rows = [run(_row_draw(draw, i, *lay, pool)) for i, lay in enumerate(layout)]
  u_ref = jnp.concatenate([r[1] for r in rows])
  h_ref = jnp.concatenate([r[2] for r in rows])
  chex.assert_trees_all_close((u, h), (u_ref, h_ref), rtol=TOL, atol=TOL)

  # V of the stacked unpadded features, and the loss it gives with the base loss.
  drift = jax.jit(lambda h, u: obj_lib.drift_from_features(h, u, queues["real"],
                                                           queues["gen"], dcfg)[0])
  v_ref, v = drift(h_ref, u_ref), drift(h, u)
  chex.assert_trees_all_close(v, v_ref, rtol=TOL, atol=TOL)
  if keep is None:   # Σ nll / Σ real tokens: each row's sums
    nll = sum(float(r[3]) * n for r, (_, n, _) in zip(rows, layout))
    base_ref = nll / sum(n for _, n, _ in layout)
  else:              # LLaDA's SFT loss: the mean over rows of each row's own loss
    base_ref = float(np.mean([float(r[3]) for r in rows]))
  fixed_point = 0.5 * float(jnp.sum(jnp.square(dcfg.alpha * v_ref))) / v_ref.shape[0]
  chex.assert_trees_all_close((float(base), float(loss)), (base_ref, fixed_point + base_ref),
                              rtol=TOL, atol=TOL)


@pytest.mark.parametrize("family,kind", [
    ("llada", "sft"), pytest.param("dit", "text", marks=pytest.mark.slow)])
def test_continuation_padded_batch_matches_unpadded_rows(weights, family, kind):
  cfg, ctx, _ = _setup(family, kind, "all")
  params = weights[family]
  batch, layout = _batch(kind)
  key = jax.random.key(9)
  loss = jax.jit(lambda b, k: Continuation().microstep(ctx, params, None, None, b, k)[0])(
      jnp.asarray(batch), key)

  # The draw the micro-step makes (its key use, then the process's loss's: k_t, k_x).
  process = ctx.process
  x0, keep = prompt_lib.split_prompt(ctx.prompt, jnp.asarray(batch))
  real = prompt_lib.real_positions(ctx.prompt, x0)
  k_loss, _ = jax.random.split(key)
  k_t, k_x = jax.random.split(k_loss)
  t = process.sample_t(k_t, x0.shape[0])
  kept = prompt_lib.kept_positions(keep, real)
  xt = process.corrupt(k_x, x0, t) if keep is None else process.corrupt(k_x, x0, t, kept)
  model = jax.jit(models.merge(ctx.graphdef, params))
  per_row = []
  for i, (start, n, p) in enumerate(layout):
    sl = slice(start, start + n)
    lp = process.log_probs(model(xt[i:i + 1, sl], process.model_sigma(t[i:i + 1])),
                           xt[i:i + 1, sl])
    if keep is None:
      per_token = process.loss_per_token(lp, x0[i:i + 1, sl], xt[i:i + 1, sl], t[i:i + 1])
    else:
      per_token = process.loss_per_token(lp, x0[i:i + 1, sl], xt[i:i + 1, sl], t[i:i + 1],
                                         keep=(jnp.arange(n) < p)[None])
    per_row.append(diff_metrics.reduce_nelbo(per_token)[1])
  if keep is None:
    ref = sum(float(m["nll_sum"]) for m in per_row) / sum(n for _, n, _ in layout)
  else:
    ref = float(np.mean([float(m["loss"]) for m in per_row]))
  chex.assert_trees_all_close(float(loss), ref, rtol=TOL, atol=TOL)
