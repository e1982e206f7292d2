"""Tests of the synthetic language and its exact-likelihood judge."""

from __future__ import annotations

import itertools
import math
import statistics

import chex
import numpy as np
import pytest

from tokendrift_jax.data import synthetic
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.eval import entropy


def _tiny(order: int) -> synthetic.SyntheticLanguage:
  # W = 3 < V = 4 so that floor moves out of a topic's vocabulary (and back) are part
  # of what the enumeration checks; a large floor makes those paths carry real mass.
  return synthetic.make_language(
      7, vocab_size=4, n_topics=2, order=order, successors=2, topic_vocab_size=3,
      concentration=0.7, floor=0.1)


def _reference_log_prob(lang, seq) -> float:
  """log p(seq) from the definition, with explicit loops and float64 scalars."""
  v = lang.vocab_size
  total = 0.0
  for k in range(lang.n_topics):
    prob = float(lang.topic_probs[k])
    history = [v] * lang.order  # the start symbol pads the context
    for token in seq:
      ctx = 0
      for j in range(1, lang.order + 1):
        ctx += history[-j] * (v + 1) ** (j - 1)
      q = 0.0
      for succ, weight in zip(lang.successors[k, ctx], lang.successor_probs[k, ctx]):
        if int(succ) == token:
          q += float(weight)
      prob *= (1.0 - lang.floor) * q + lang.floor / v
      history.append(token)
    total += prob
  return math.log(total)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_log_likelihood_matches_brute_force_enumeration(order):
  lang = _tiny(order)
  length = 4
  seqs = np.array(list(itertools.product(range(lang.vocab_size), repeat=length)),
                  dtype=np.int32)
  logp = synthetic.log_likelihood(lang, seqs)
  # 256 probabilities, each a sum of products of 4 float64 factors: the total is off
  # 1 by a few ulps of accumulated rounding, far below 1e-12.
  assert abs(np.exp(logp).sum() - 1.0) <= 1e-12
  per_topic = synthetic.topic_log_likelihoods(lang, seqs)
  chex.assert_trees_all_close(np.exp(per_topic).sum(axis=0), 1.0, rtol=0, atol=1e-12)
  reference = np.array([_reference_log_prob(lang, list(s)) for s in seqs])
  # Same float64 factors multiplied in a different order (log-sum vs product): the
  # log-probs agree to ~1e-15 relative; 1e-12 absolute on values of order 1..20.
  chex.assert_trees_all_close(logp, reference, rtol=0, atol=1e-12)
  # Per-position marginals from the forward recursion against the enumeration.
  probs = np.exp(reference)
  enumerated = np.zeros((length, lang.vocab_size))
  for t in range(length):
    np.add.at(enumerated[t], seqs[:, t], probs)
  chex.assert_trees_all_close(synthetic.position_marginals(lang, length), enumerated,
                              rtol=0, atol=1e-12)


def _reference_switching_log_prob(lang, seq) -> float:
  """log p(seq) with topic switches, by summing over every topic path z in K^L:
  pi(z_1) prod_t T(z_{t-1}, z_t) prod_t P_{z_t}(x_t | c_t), T(i, j) = (1 - rho)[i = j] +
  rho pi_j; explicit loops, float64 scalars."""
  v, rho = lang.vocab_size, lang.switch
  emit = []   # emit[t][k] = P_k(x_t | c_t)
  history = [v] * lang.order
  for token in seq:
    ctx = sum(history[-j] * (v + 1) ** (j - 1) for j in range(1, lang.order + 1))
    row = []
    for k in range(lang.n_topics):
      q = sum(float(w) for s_id, w in zip(lang.successors[k, ctx], lang.successor_probs[k, ctx])
              if int(s_id) == token)
      row.append((1.0 - lang.floor) * q + lang.floor / v)
    emit.append(row)
    history.append(token)
  total = 0.0
  for path in itertools.product(range(lang.n_topics), repeat=len(seq)):
    prob = float(lang.topic_probs[path[0]]) * emit[0][path[0]]
    for t in range(1, len(seq)):
      stay = 1.0 - rho if path[t] == path[t - 1] else 0.0
      prob *= (stay + rho * float(lang.topic_probs[path[t]])) * emit[t][path[t]]
    total += prob
  return math.log(total)


@pytest.mark.parametrize("order", [1, 2])
def test_switching_topics_likelihood_matches_enumeration_over_topic_paths(order):
  """The new testbed's judge (topics redrawn with probability rho before each position):
  the forward recursion equals the sum over all K^L topic paths, the probabilities of all
  V^L sequences sum to 1, and rho = 0 is the one-topic language."""
  lang = synthetic.make_language(7, vocab_size=4, n_topics=3, order=order, successors=2,
                                 topic_vocab_size=3, concentration=0.7, floor=0.1,
                                 switch=0.3)
  length = 4
  seqs = np.array(list(itertools.product(range(lang.vocab_size), repeat=length)),
                  dtype=np.int32)
  logp = synthetic.log_likelihood(lang, seqs)
  assert abs(np.exp(logp).sum() - 1.0) <= 1e-12   # 256 float64 probabilities, a few ulps
  reference = np.array([_reference_switching_log_prob(lang, list(x)) for x in seqs])
  # Same float64 factors, log-space recursion vs products summed over 81 paths: ~1e-15
  # relative; 1e-12 absolute on log-probs of order 1..20.
  chex.assert_trees_all_close(logp, reference, rtol=0, atol=1e-12)
  # Switching must matter here, or the check above would not see the recursion.
  assert np.max(np.abs(logp - synthetic.log_likelihood(_tiny_switch0(lang), seqs))) > 1e-2
  with pytest.raises(ValueError, match="switches topics"):
    synthetic.position_marginals(lang, length)


def _tiny_switch0(lang):
  import dataclasses  # pylint: disable=import-outside-toplevel
  return dataclasses.replace(lang, switch=0.0)


def test_switching_corpus_follows_the_process():
  """Sampled sequences of a tiny switching language against their exact probabilities:
  every one of the V^L sequences' counts within the Bonferroni bound of its binomial law;
  the topic path redraws at rate rho."""
  lang = synthetic.make_language(5, vocab_size=3, n_topics=2, order=1, successors=2,
                                 topic_vocab_size=2, concentration=1.0, floor=0.2,
                                 switch=0.25)
  n, length = 40_000, 3
  tokens, path = synthetic.sample_corpus(lang, 3, n, length, return_topics=True)
  chex.assert_shape([tokens, path], [(n, length), (n, length)])
  seqs = np.array(list(itertools.product(range(lang.vocab_size), repeat=length)))
  probs = np.exp(synthetic.log_likelihood(lang, seqs.astype(np.int32)))
  index = (tokens.astype(np.int64) * lang.vocab_size ** np.arange(length - 1, -1, -1)).sum(1)
  counts = np.bincount(index, minlength=len(seqs))
  z = (counts - n * probs) / np.sqrt(n * probs * (1 - probs))
  redraws = (path[:, 1:] != path[:, :-1]).mean()
  # A redraw changes the topic with probability 1 - 1/K.
  z_switch = (redraws - lang.switch / 2) / math.sqrt(lang.switch / 2 * (1 - lang.switch / 2)
                                                     / (n * (length - 1)))
  bound = statistics.NormalDist().inv_cdf(1 - 1e-3 / (2 * (len(seqs) + 1)))
  assert max(np.max(np.abs(z)), abs(z_switch)) < bound, (np.max(np.abs(z)), z_switch)


@pytest.mark.parametrize("order", [1, 2])
def test_language_tables_are_valid(order):
  lang = synthetic.make_language(3, order=order)
  k, c, s = lang.successors.shape
  assert (k, c, s) == (8, 251**order, 4)
  chex.assert_shape(lang.successor_probs, (k, c, s))
  # Dirichlet rows renormalised in float64: sums are 1 to a few ulps.
  chex.assert_trees_all_close(lang.successor_probs.sum(-1), 1.0, rtol=0, atol=1e-12)
  assert (lang.successor_probs >= 0).all()
  srt = np.sort(lang.successors, axis=-1)
  assert (np.diff(srt, axis=-1) > 0).all(), "successors must be distinct per row"
  chex.assert_shape(lang.topic_vocab, (8, 64))
  assert (np.diff(lang.topic_vocab, axis=1) > 0).all()
  for topic in range(k):
    assert np.isin(lang.successors[topic], lang.topic_vocab[topic]).all()
  chex.assert_trees_all_equal(lang.topic_probs, 1.0 / 8)
  # The language is the tokenizer: an MDLM backbone of V + 1 ids (mask last), a DUO one of V.
  assert make_process("mdlm", 251).text_vocab_size == lang.vocab_size == 250
  assert make_process("duo", 250).text_vocab_size == 250


def test_sample_corpus_follows_the_process():
  lang = synthetic.make_language(11, vocab_size=12, n_topics=3, order=2, successors=3,
                                 topic_vocab_size=6, floor=0.05)
  n, length = 6000, 24
  tokens, topics = synthetic.sample_corpus(lang, 5, n, length, return_topics=True)
  chex.assert_type([tokens, topics], np.int32)
  chex.assert_shape([tokens, topics], [(n, length), (n,)])
  ctx = synthetic._contexts(lang, tokens)
  z_scores = []
  # Topics: binomial counts against pi.
  counts = np.bincount(topics, minlength=lang.n_topics)
  for k in range(lang.n_topics):
    p = lang.topic_probs[k]
    z_scores.append((counts[k] - n * p) / math.sqrt(n * p * (1 - p)))
  # Transitions: for every (topic, context) seen at least 100 times, the count of each
  # allowed successor and of "any other token" against the process probabilities.
  v = lang.vocab_size
  topic_of = np.broadcast_to(topics[:, None], tokens.shape).ravel()
  ctx_flat, tok_flat = ctx.ravel(), tokens.ravel()
  key = topic_of.astype(np.int64) * lang.n_contexts + ctx_flat
  n_cells_checked = 0
  for cell in np.unique(key):
    rows = key == cell
    total = int(rows.sum())
    if total < 100:
      continue
    k, c = divmod(int(cell), lang.n_contexts)
    observed_tokens = tok_flat[rows]
    succ = lang.successors[k, c]
    for s_id, weight in zip(succ, lang.successor_probs[k, c]):
      p = (1 - lang.floor) * weight + lang.floor / v
      obs = (observed_tokens == s_id).sum()
      z_scores.append((obs - total * p) / math.sqrt(total * p * (1 - p)))
    p_other = lang.floor * (v - len(succ)) / v
    obs = (~np.isin(observed_tokens, succ)).sum()
    z_scores.append((obs - total * p_other) / math.sqrt(total * p_other * (1 - p_other)))
    n_cells_checked += 1
  assert n_cells_checked >= 100, n_cells_checked
  m = len(z_scores)
  # Four standard errors per cell, raised by Bonferroni to a family-wise false-alarm
  # rate of 1e-3 over the m cells (~5 SE here), since every cell is one more chance to
  # cross the line by luck.
  bound = max(4.0, statistics.NormalDist().inv_cdf(1 - 1e-3 / (2 * m)))
  worst = float(np.max(np.abs(z_scores)))
  print(f"\n{m} cells over {n_cells_checked} contexts, max |z| = {worst:.2f} "
        f"(bound {bound:.2f})")
  assert worst < bound


def test_seeds_are_deterministic():
  a = synthetic.make_language(1, order=2)
  b = synthetic.make_language(1, order=2)
  c = synthetic.make_language(2, order=2)
  chex.assert_trees_all_equal((a.successors, a.successor_probs),
                              (b.successors, b.successor_probs))
  # Inequalities ("other seed, other draw") stay np.array_equal: chex has no "differ" assert.
  assert not np.array_equal(a.successors, c.successors)
  x1 = synthetic.sample_corpus(a, 4, 64, 32)
  x2 = synthetic.sample_corpus(b, 4, 64, 32)
  x3 = synthetic.sample_corpus(a, 5, 64, 32)
  chex.assert_trees_all_equal(x1, x2)
  assert not np.array_equal(x1, x3)
  m1 = synthetic.sample_independent_marginals(a, 4, 64, 32)
  m2 = synthetic.sample_independent_marginals(b, 4, 64, 32)
  m3 = synthetic.sample_independent_marginals(a, 5, 64, 32)
  chex.assert_trees_all_equal(m1, m2)
  assert not np.array_equal(m1, m3)


def test_judge_rejects_non_text_ids():
  lang = synthetic.make_language(0)
  tokens = synthetic.sample_corpus(lang, 0, 4, 16)
  masked = tokens.copy()
  masked[2, 5] = lang.vocab_size   # the mask id of an MDLM backbone
  with pytest.raises(ValueError, match=r"token id 250 at \(sequence 2, position 5\)"):
    synthetic.gen_ppl(lang, masked)
  negative = tokens.copy()
  negative[0, 0] = -1
  with pytest.raises(ValueError, match="outside the text vocabulary"):
    synthetic.log_likelihood(lang, negative)
  with pytest.raises(ValueError, match=r"shape \[N, L\]"):
    synthetic.log_likelihood(lang, tokens[0])
  with pytest.raises(ValueError, match="integer ids"):
    synthetic.log_likelihood(lang, tokens.astype(np.float32))


def test_make_language_rejects_bad_arguments():
  with pytest.raises(ValueError, match="floor"):
    synthetic.make_language(0, floor=0.0)
  with pytest.raises(ValueError, match="topic_vocab_size"):
    synthetic.make_language(0, successors=8, topic_vocab_size=4)
  with pytest.raises(ValueError, match="exceeds the limit"):
    synthetic.make_language(0, order=3)


def test_nll_and_gen_ppl_definitions():
  lang = synthetic.make_language(0, order=2)
  tokens = synthetic.sample_corpus(lang, 1, 32, 20)
  logp = synthetic.log_likelihood(lang, tokens)
  chex.assert_trees_all_close(synthetic.nll_per_token(lang, tokens), -logp / 20,
                              rtol=1e-15, atol=0)
  # Gen-PPL pools all tokens: total NLL over total token count.
  pooled = math.exp(-logp.sum() / tokens.size)
  assert synthetic.gen_ppl(lang, tokens) == pytest.approx(pooled, rel=1e-12)


def test_language_punishes_parallel_decoding():
  """The property the demo relies on, at the default size (numbers in SYNTHETIC.md)."""
  lang = synthetic.make_language(0)
  n, length = 2000, 64
  true = synthetic.sample_corpus(lang, 1, n, length)
  parallel = synthetic.sample_independent_marginals(lang, 2, n, length)
  parallel_topic = synthetic.sample_independent_marginals(lang, 3, n, length,
                                                          given_topic=True)
  ppl_true = synthetic.gen_ppl(lang, true)
  ppl_parallel = synthetic.gen_ppl(lang, parallel)
  ppl_parallel_topic = synthetic.gen_ppl(lang, parallel_topic)
  rate, stderr = synthetic.true_entropy_rate(lang, 4, length, n_sequences=n)
  print(f"\nGen-PPL: true samples {ppl_true:.3f}, independent marginals "
        f"{ppl_parallel:.1f}, independent given topic {ppl_parallel_topic:.1f}; "
        f"entropy rate {rate:.4f} +- {stderr:.4f} nats (exp {math.exp(rate):.3f})")
  print(f"entropy: true {entropy.mean_entropy(true):.3f}, independent "
        f"{entropy.mean_entropy(parallel):.3f}, given topic "
        f"{entropy.mean_entropy(parallel_topic):.3f} nats")
  # Gen-PPL of true samples is the Monte-Carlo entropy rate on independent draws:
  # both are sample means of the same per-sequence NLL, so they differ by sampling
  # noise only (5 standard errors of the difference).
  assert abs(math.log(ppl_true) - rate) < 5 * math.sqrt(2) * stderr
  # Independently drawn neighbours are rarely an allowed transition (S = 4 of a
  # topic's W = 64 tokens), and each disallowed one costs a floor event,
  # log(V / delta) = log(25000) ~ 10.1 nats, against ~1.2 nats per true token. The
  # measured ratio is ~4800 (true ~3.4, independent ~16000); 100x is asserted: any
  # ratio that large means one parallel step is catastrophically wrong, while the
  # margin keeps the check independent of the seed.
  assert ppl_parallel > 100 * ppl_true
  assert ppl_parallel_topic > 100 * ppl_true
