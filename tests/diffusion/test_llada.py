"""LLaDA process: forward process, parameterisation, pre-training and SFT losses vs float64
NumPy (tests/references/np_llada.py, written from LLaDA's GUIDELINES.md).

The reference draws nothing itself: it receives the uniforms of the documented key use
(``k_t, k_x = split(key)``; t from ``uniform(k_t, [B])``, masking from
``uniform(k_x, [B, L])``), drawn here with jax.random directly, not through the process.

The process functions (corrupt, log_probs, loss_per_token) run under
``chex.variants(with_jit=True, without_jit=True)``; the composed ``loss`` runs jitted.
"""

from __future__ import annotations

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax.diffusion import (LLaDAProcess, NLLMeter, make_process,
                                      make_process_for_model, registry)
from tokendrift_jax.models.dit import DiTConfig
from tests.references import np_llada

EPS = 1e-3
V, MASK = 17, 9    # the mask in the middle of the vocabulary, as LLaDA's (never V − 1)
B, L = 6, 12
PROMPT_LENGTHS = np.asarray([0, 3, 5, 12, 1, 7])   # a row without prompt, one all prompt


def _params(seed):
  rng = np.random.default_rng(seed)
  return {"table": rng.normal(size=(V, V)) * 2.0, "bias": rng.normal(size=(L, V))}


def np_logits(params, x):
  """A deterministic test denoiser in float64: token table + neighbour mix + position bias."""
  a = params["table"][x]
  return a + 0.5 * np.roll(a, 1, axis=1) + params["bias"]


def _logits_fn(params):
  p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}

  def fn(x, sigma):
    chex.assert_shape(sigma, x.shape[:1])   # ignored: LLaDA has no time input
    a = p["table"][x]
    return a + 0.5 * jnp.roll(a, 1, axis=1) + p["bias"]

  return fn


def _x0(seed):
  rng = np.random.default_rng(seed)
  return rng.choice(np.delete(np.arange(V), MASK), size=(B, L))   # clean data has no mask


def _prompt_mask(lengths=PROMPT_LENGTHS):
  return np.arange(L)[None, :] < np.asarray(lengths)[:, None]


def _draws(key):
  """The documented key use of LLaDAProcess.loss, with jax.random directly."""
  k_t, k_x = jax.random.split(key)
  return (jax.random.uniform(k_t, (B,), jnp.float32),
          jax.random.uniform(k_x, (B, L), jnp.float32))


def np_log_softmax(z):
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


class LLaDAVariantsTest(chex.TestCase):
  """The process math, traced (jit) and eager."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_corrupt_is_forward_process(self):
    """The SFT draw here; the pre-training draw (keep=None) in the composed loss below."""
    p = LLaDAProcess(V, mask_id=MASK)
    x0 = _x0(0)
    key = jax.random.key(1)
    t, u = _draws(key)
    got = self.variant(p.corrupt)(jax.random.split(key)[1], jnp.asarray(x0, jnp.int32), t,
                                  jnp.asarray(_prompt_mask()))
    chex.assert_type(got, jnp.int32)
    ref, p_mask = np_llada.forward_process(x0, np.asarray(t, np.float64),
                                           np.asarray(u, np.float64), MASK,
                                           prompt_lengths=PROMPT_LENGTHS)
    # The same float32 uniforms against (1 − ε) t + ε: exact agreement, as no uniform lies
    # within float32 rounding (~1e-7) of its threshold.
    assert np.min(np.abs(np.asarray(u, np.float64) - p_mask)) > 1e-6
    chex.assert_trees_all_equal(np.asarray(got), ref)

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_probs_include_the_mask_logit(self):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(B, L, V)) * 2.5
    xt = np.where(rng.random((B, L)) < 0.5, MASK, _x0(2))
    p = LLaDAProcess(V, mask_id=MASK)
    with jax.enable_x64(True):
      got = np.asarray(self.variant(p.log_probs)(jnp.asarray(logits), jnp.asarray(xt)))
      probs = np.asarray(self.variant(p.probs)(jnp.asarray(logits), jnp.asarray(xt)))
    masked = xt == MASK
    # Masked rows: the log-softmax over all V ids (mask included, as F.cross_entropy and
    # generate.py's softmax); float64 evaluation of the same formula: rounding only.
    chex.assert_trees_all_close(got[masked], np_log_softmax(logits)[masked], rtol=1e-12,
                                atol=1e-12)
    assert np.all(probs[masked][:, MASK] > 0)   # the mask keeps its probability mass
    # Unmasked rows: a point mass on the visible token (exp(−1e6) == 0 exactly).
    chex.assert_trees_all_equal(probs[~masked], np.eye(V)[xt[~masked]])
    # float64 rows sum to 1 up to V·ulp.
    chex.assert_trees_all_close(probs.sum(-1), np.ones((B, L)), rtol=0, atol=1e-14)
    chex.assert_trees_all_equal(p.predicted_positions(jnp.asarray(xt)), masked)

  @chex.variants(with_jit=True, without_jit=True)
  def test_loss_per_token_vs_reference(self):
    """Explicit xt, t: pre-training and SFT token losses reduce to the GUIDELINES losses."""
    params = _params(3)
    x0 = _x0(3)
    t = np.asarray([0.0, 1.0, 0.3, 0.9, 0.05, 0.6])   # both ends of [0, 1)
    u = np.random.default_rng(3).random((B, L))
    p = LLaDAProcess(V, mask_id=MASK)
    fn = self.variant(lambda lp, a, b, c, k: p.loss_per_token(lp, a, b, c, k))
    for lengths in (None, PROMPT_LENGTHS):
      xt, p_mask = np_llada.forward_process(x0, t, u, MASK, prompt_lengths=lengths)
      logits = np_logits(params, xt)
      keep = None if lengths is None else jnp.asarray(_prompt_mask(lengths))
      with jax.enable_x64(True):
        per_tok = np.asarray(fn(p.log_probs(jnp.asarray(logits), jnp.asarray(xt)),
                                jnp.asarray(x0), jnp.asarray(xt), jnp.asarray(t), keep))
      if lengths is None:
        ref, _ = np_llada.pretrain_loss(logits, x0, xt, p_mask, MASK)
      else:
        ref = np_llada.sft_loss(logits, x0, xt, p_mask, lengths, MASK)
        assert np.all(per_tok[_prompt_mask(lengths)] == 0)   # the prompt carries no loss
      # float64 sums of ≤ 72 terms: rounding only.
      chex.assert_trees_all_close(per_tok.mean(), ref, rtol=1e-12, atol=0)
      chex.assert_trees_all_equal(per_tok[xt != MASK], np.zeros((xt != MASK).sum()))


@jax.jit
def _loss_and_logit_grad(params, x0, key, keep):
  """LLaDAProcess.loss and its gradient w.r.t. the logits (an additive zero offset), for
  pre-training (keep=None) and SFT; one program for both."""
  p = LLaDAProcess(V, mask_id=MASK)
  base = _logits_fn(params)

  def run(kp):
    def loss(delta):
      return p.loss(lambda x, s: base(x, s) + delta, x0, key, keep=kp)
    return jax.value_and_grad(loss, has_aux=True)(jnp.zeros((B, L, V), jnp.float32))

  return run(None), run(keep)


def test_loss_vs_reference_pretraining_and_sft():
  """The composed loss (jitted) against GUIDELINES.md with the reproduced draws; the SFT
  gradient w.r.t. the prompt positions' logits is exactly zero."""
  params = _params(4)
  x0 = _x0(4)
  key = jax.random.key(5)
  t, u = (np.asarray(a, np.float64) for a in _draws(key))
  keep = _prompt_mask()
  x0j = jnp.asarray(x0, jnp.int32)
  ((got_pre, m_pre), g_pre), ((got_sft, m_sft), g_sft) = _loss_and_logit_grad(
      params, x0j, key, jnp.asarray(keep))

  xt, p_mask = np_llada.forward_process(x0, t, u, MASK)
  ref_pre, ref_sum = np_llada.pretrain_loss(np_logits(params, xt), x0, xt, p_mask, MASK)
  xt_s, p_mask_s = np_llada.forward_process(x0, t, u, MASK, prompt_lengths=PROMPT_LENGTHS)
  ref_sft = np_llada.sft_loss(np_logits(params, xt_s), x0, xt_s, p_mask_s, PROMPT_LENGTHS,
                              MASK)
  # float32 denoiser and log-softmax (≲ 1e-6 relative per term) with weights up to 1/ε:
  # sums of ≤ 72 positive terms keep 1e-5 relative.
  chex.assert_trees_all_close(
      {"pre": got_pre, "pre_sum": m_pre["nll_sum"], "sft": got_sft},
      {"pre": ref_pre, "pre_sum": ref_sum, "sft": ref_sft}, rtol=1e-5, atol=0)
  # NELBO-compatible metrics: nll_sum / num_tokens is the loss, num_tokens = B·L.
  chex.assert_trees_all_equal({"pre": m_pre["num_tokens"], "sft": m_sft["num_tokens"]},
                              {"pre": np.float32(B * L), "sft": np.float32(B * L)})
  meter = NLLMeter()
  meter.update(m_pre)
  # float32 nll_sum / num_tokens against the float64 reference ratio.
  chex.assert_trees_all_close(meter.compute()["nll"], ref_pre, rtol=1e-5)
  chex.assert_type([got_pre, got_sft], jnp.float32)
  # Gradients: exactly zero wherever nothing is masked (prompt positions in SFT), and not
  # vacuous at the masked ones.
  g_pre, g_sft = np.asarray(g_pre), np.asarray(g_sft)
  chex.assert_trees_all_equal({"pre": g_pre[xt != MASK], "sft": g_sft[keep]},
                              {"pre": np.zeros_like(g_pre[xt != MASK]),
                               "sft": np.zeros_like(g_sft[keep])})
  assert np.all(np.abs(g_sft[xt_s == MASK]).sum(-1) > 0)   # an inequality, not a value


def test_sft_prompt_is_never_masked_over_many_draws():
  p = LLaDAProcess(V, mask_id=MASK)
  n = 400   # draws of the whole batch, as one [n·B, L] batch
  x0 = np.tile(_x0(6), (n, 1))
  keep = np.tile(_prompt_mask(), (n, 1))
  ts = jnp.asarray(np.random.default_rng(8).random(n * B), jnp.float32)
  xts = np.asarray(p.corrupt(jax.random.key(7), jnp.asarray(x0, jnp.int32), ts,
                             jnp.asarray(keep)))
  chex.assert_trees_all_equal(xts[keep], x0[keep])
  # The answer is masked at rate p_mask: statistical bound, 5 standard errors of a sum of
  # independent Bernoulli draws.
  p_mask = np.broadcast_to(((1 - EPS) * np.asarray(ts, np.float64) + EPS)[:, None], x0.shape)
  hits, expect = (xts == MASK)[~keep], p_mask[~keep]
  assert abs(hits.sum() - expect.sum()) < 5 * np.sqrt((expect * (1 - expect)).sum())


def test_process_basics_and_factory():
  assert registry.get("llada") is LLaDAProcess and "llada" in registry.names()
  p = make_process("llada", 126464, mask_id=126336)
  assert p.name == "llada" and p.mask_id == 126336 and p.eps == EPS
  assert p.sampling_eps == 0.0 and not p.antithetic and not p.time_conditioning
  assert p.text_vocab_size == 126464 and hash(p) == hash(LLaDAProcess(126464, mask_id=126336))
  chex.assert_trees_all_equal(p.model_sigma(jnp.asarray([0.2, 0.7])), jnp.zeros(2, jnp.float32))
  chex.assert_trees_all_equal(p.prior(None, 2, 3), jnp.full((2, 3), 126336, jnp.int32))
  with pytest.raises(ValueError, match="needs mask_id"):
    make_process("llada", 100)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    LLaDAProcess(10, mask_id=10)
  # An MDLM DiT (mask V − 1, no time input) runs under LLaDA's process.
  dit = DiTConfig(vocab_size=33, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=2,
                  length=8)
  q = make_process_for_model("llada", dit, eps=EPS, sampling_eps=0.0, antithetic=False)
  assert isinstance(q, LLaDAProcess) and q.mask_id == 32 and q.text_vocab_size == 32
  with pytest.raises(ValueError, match="time-conditioned"):
    make_process_for_model("llada", DiTConfig(vocab_size=33, hidden_size=32, cond_dim=16,
                                              n_blocks=1, n_heads=2, length=8,
                                              time_conditioning=True))
  no_mask = types.SimpleNamespace(mask_id=None, time_conditioned=False, vocab_size=10)
  with pytest.raises(ValueError, match="needs a mask token"):
    make_process_for_model("llada", no_mask)


def test_bad_inputs_raise():
  p = LLaDAProcess(V, mask_id=MASK)
  x0 = jnp.zeros((2, 4), jnp.int32)
  with pytest.raises(ValueError, match="keep"):
    p.corrupt(jax.random.key(0), x0, jnp.zeros((2,)), jnp.zeros((2, 3), bool))
  with pytest.raises(ValueError, match="keep"):
    p.corrupt(jax.random.key(0), x0, jnp.zeros((2,)), jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="valid=None with keep"):
    p.loss(lambda x, s: jnp.zeros((2, 4, V)), x0, jax.random.key(0),
           valid=jnp.ones((2, 4), bool), keep=jnp.zeros((2, 4), bool))
  with pytest.raises(ValueError, match="logits shape"):
    p.log_probs(jnp.zeros((2, 4, V + 1)), x0)
  with pytest.raises(ValueError, match="t must have shape"):
    p.corrupt(jax.random.key(0), x0, jnp.zeros((3,)))
