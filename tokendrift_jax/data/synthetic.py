"""A synthetic language with an exact likelihood: the judge of the end-to-end demo.

The process (docs/SYNTHETIC.md has the full definition and the reference numbers):

* a topic ``k ~ Categorical(pi)`` is drawn once per sequence (``pi`` uniform over the
  ``K`` topics);
* topic ``k`` owns a random sub-vocabulary ``W_k`` of ``topic_vocab_size`` text tokens;
* tokens follow a sparse Markov chain of order ``n`` specific to the topic:

      P_k(x_t = v | c_t) = (1 - delta) * q_k(v | c_t) + delta / V,

  where the context ``c_t = (x_{t-n}, ..., x_{t-1})`` is padded on the left with a
  virtual start symbol, and ``q_k(. | c)`` puts Dirichlet(``concentration``) weights on
  ``successors`` distinct tokens of ``W_k``, drawn per (topic, context). The uniform
  floor ``delta`` is part of the true process, so every text sequence has a finite
  likelihood.

The exact sequence likelihood is the mixture over topics,
``p(x) = sum_k pi_k prod_t P_k(x_t | c_t)``, computed in float64 with log-sum-exp.

Topic switches (``switch`` rho > 0, structure at a third range: segments): before every
position after the first, the topic is redrawn from ``pi`` with probability rho (it may
redraw the same topic), so a sequence is a run of topical segments of mean length about
1/rho. The likelihood is then the forward recursion of that hidden Markov chain over
topics (:func:`log_likelihood`), exact in float64. rho = 0 is the language above exactly
(same parameters, corpora and scores).
"Gen-PPL" of a set of sequences is ``exp`` of their mean per-token NLL under it.

Token ids: ``0 .. V-1`` are text tokens, ``V = lang.vocab_size``: the language plays the
tokenizer, so a backbone's process must have ``text_vocab_size == V``
(``diffusion.*Process.text_vocab_size``). The MDLM backbone thus uses ``V + 1`` ids, the
extra id ``V`` being the mask, as MDLM does for GPT-2. The DUO backbone uses exactly ``V`` ids: DUO's uniform-state process has no
mask and its prior is uniform over the tokenizer's ids (``len(tokenizer)`` in
``trainer_base.py``), here the text ids. The judge scores only text ids: any other id
(e.g. a mask left in an unfinished MDLM sample) raises ``ValueError``; the caller has
to map such ids explicitly before scoring.

Context encoding: with base ``B = V + 1`` and the start symbol written as digit ``V``,
the context ``(x_{t-n}, ..., x_{t-1})`` has id ``sum_j x_{t-j} B^(j-1)``, so the next
context is ``(c mod B^(n-1)) * B + x_t`` and the all-start context has id ``B^n - 1``.

Everything here is NumPy on the host: corpora are generated once per seed and scoring is
an evaluation step, not part of any jitted computation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# Seed-sequence tags, so that a language, a corpus and a baseline drawn with the same
# integer seed still use unrelated random streams.
_LANGUAGE_TAG = 0x5E7A
_CORPUS_TAG = 0xC0B5
_MARGINAL_TAG = 0x3A26

# Largest successor table (topics x contexts x successors) make_language will build:
# 2^25 entries are ~400 MB of int32 ids plus float64 weights.
_MAX_TABLE_ENTRIES = 2**25

# Rows scored at once by the judge, bounding its temporary [rows, L, S] arrays.
_SCORE_CHUNK_TOKENS = 2**20


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticLanguage:
  """Parameters of the topic-mixture sparse Markov language.

  Attributes:
    vocab_size: V, the number of text tokens (ids ``0 .. V-1``).
    order: n, the Markov order of each topic's chain.
    floor: delta in (0, 1], weight of the uniform component of every conditional.
    topic_probs: float64[K], the topic prior pi (sums to 1).
    topic_vocab: int32[K, W], sorted text ids of each topic's sub-vocabulary.
    successors: int32[K, C, S], allowed successor ids of every (topic, context),
      distinct within a row; ``C = (V + 1) ** n`` context ids (module docstring).
    successor_probs: float64[K, C, S], their weights (each row sums to 1).
    seed: the seed ``make_language`` was called with.
    switch: rho in [0, 1), the probability that the topic is redrawn from pi before
      each position after the first (0: one topic per sequence).
  """

  vocab_size: int
  order: int
  floor: float
  topic_probs: np.ndarray
  topic_vocab: np.ndarray
  successors: np.ndarray
  successor_probs: np.ndarray
  seed: int
  switch: float = 0.0

  @property
  def n_topics(self) -> int:
    return int(self.topic_probs.shape[0])

  @property
  def n_successors(self) -> int:
    return int(self.successors.shape[2])

  @property
  def n_contexts(self) -> int:
    return int(self.successors.shape[1])

  @property
  def start_context(self) -> int:
    """Id of the all-start context (every digit is the start symbol V)."""
    return self.n_contexts - 1


def _floyd_subsets(rng: np.random.Generator, n_rows: int, population: int,
                   size: int) -> np.ndarray:
  """Uniformly random ``size``-subsets of ``range(population)``, one per row.

  Robert Floyd's algorithm, vectorised over rows: for j = population - size, ...,
  population - 1 draw t uniform in [0, j]; keep t unless already chosen, else keep j.

  Returns:
    int64[n_rows, size], distinct values within each row.
  """
  chosen = np.empty((n_rows, size), dtype=np.int64)
  for i, j in enumerate(range(population - size, population)):
    t = rng.integers(0, j + 1, size=n_rows)
    taken = (chosen[:, :i] == t[:, None]).any(axis=1)
    chosen[:, i] = np.where(taken, j, t)
  return chosen


def make_language(seed: int, *, vocab_size: int = 250, n_topics: int = 8,
                  order: int = 1, successors: int = 4, topic_vocab_size: int = 64,
                  concentration: float = 1.0, floor: float = 0.01,
                  switch: float = 0.0) -> SyntheticLanguage:
  """Draws the parameters of a synthetic language from ``seed``.

  Args:
    seed: non-negative integer; the same seed and arguments give the same language.
    vocab_size: V, number of text tokens.
    n_topics: K, number of topics (uniform prior).
    order: n >= 1, Markov order of each topic's chain.
    successors: S, allowed next tokens per (topic, context), drawn from the topic's
      sub-vocabulary.
    topic_vocab_size: W, size of each topic's sub-vocabulary (S <= W <= V).
    concentration: Dirichlet concentration of the S successor weights (1 = uniform on
      the simplex).
    floor: delta in (0, 1], weight of the uniform distribution over the V text tokens
      in every conditional.
    switch: rho in [0, 1), probability of redrawing the topic before each position
      after the first. Draws no parameters: the tables are those of rho = 0.

  Returns:
    The language; see ``SyntheticLanguage`` for array shapes.
  """
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  for name, value in (("vocab_size", vocab_size), ("n_topics", n_topics),
                      ("order", order), ("successors", successors),
                      ("topic_vocab_size", topic_vocab_size)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if not successors <= topic_vocab_size <= vocab_size:
    raise ValueError(
        "need successors <= topic_vocab_size <= vocab_size, got "
        f"successors={successors}, topic_vocab_size={topic_vocab_size}, "
        f"vocab_size={vocab_size}")
  if not 0.0 < floor <= 1.0:
    raise ValueError(f"floor must be in (0, 1] so every sequence has a finite "
                     f"likelihood, got {floor!r}")
  if not concentration > 0.0:
    raise ValueError(f"concentration must be positive, got {concentration!r}")
  if not 0.0 <= switch < 1.0:
    raise ValueError(f"switch must be in [0, 1), got {switch!r}")
  n_contexts = (vocab_size + 1) ** order
  entries = n_topics * n_contexts * successors
  if entries > _MAX_TABLE_ENTRIES:
    raise ValueError(
        f"successor table of n_topics * (vocab_size + 1) ** order * successors = "
        f"{n_topics} * {vocab_size + 1}**{order} * {successors} = {entries} entries "
        f"exceeds the limit {_MAX_TABLE_ENTRIES}; lower order or vocab_size")

  rng = np.random.default_rng([_LANGUAGE_TAG, int(seed)])
  topic_vocab = np.sort(_floyd_subsets(rng, n_topics, vocab_size, topic_vocab_size),
                        axis=1)
  local = _floyd_subsets(rng, n_topics * n_contexts, topic_vocab_size, successors)
  local = local.reshape(n_topics, n_contexts, successors)
  succ = topic_vocab[np.arange(n_topics)[:, None, None], local]
  weights = rng.dirichlet(np.full(successors, float(concentration)),
                          size=(n_topics, n_contexts))
  # Renormalise in float64 so each row sums to 1 to the last ulp of the sum.
  weights = weights / weights.sum(axis=-1, keepdims=True)
  return SyntheticLanguage(
      vocab_size=int(vocab_size), order=int(order), floor=float(floor),
      topic_probs=np.full(n_topics, 1.0 / n_topics, dtype=np.float64),
      topic_vocab=topic_vocab.astype(np.int32),
      successors=succ.astype(np.int32),
      successor_probs=weights.astype(np.float64),
      seed=int(seed), switch=float(switch))


# Everything that determines a language: the seed and the keyword arguments of
# make_language. Config sections describing a language hold these fields, and may hold the
# OPTIONAL_LANGUAGE_FIELDS (absent = their default), so that sections written before a
# field existed describe the same language and keep their digests.
LANGUAGE_FIELDS = ("seed", "vocab_size", "n_topics", "order", "successors", "topic_vocab_size",
                   "concentration", "floor")
OPTIONAL_LANGUAGE_FIELDS = {"switch": 0.0}


def language_fields(section: Any) -> dict:
  """{field: value} of a language section: LANGUAGE_FIELDS and the optional fields it
  sets (what identifies the language, e.g. in a judge's record)."""
  out = {f: section[f] for f in LANGUAGE_FIELDS if f in section}
  out.update({f: section[f] for f in OPTIONAL_LANGUAGE_FIELDS if f in section})
  return out


def language_from_config(section: Any) -> SyntheticLanguage:
  """The language a config section (``LANGUAGE_FIELDS``, plus optionally ``switch``;
  dict-like) describes.

  Raises ValueError naming missing fields or a bad value.
  """
  missing = [f for f in LANGUAGE_FIELDS if f not in section]
  if missing:
    raise ValueError(f"the synthetic language lacks {missing}; it needs "
                     f"{list(LANGUAGE_FIELDS)}")
  optional = {f: section[f] if f in section else d for f, d in OPTIONAL_LANGUAGE_FIELDS.items()}
  return make_language(int(section["seed"]),
                       **{f: section[f] for f in LANGUAGE_FIELDS if f != "seed"}, **optional)


def _next_context(lang: SyntheticLanguage, context: np.ndarray,
                  token: np.ndarray) -> np.ndarray:
  """Context id after appending ``token``: drop the oldest digit, shift, add."""
  base = lang.vocab_size + 1
  return (context % base ** (lang.order - 1)) * base + token


def _contexts(lang: SyntheticLanguage, tokens: np.ndarray) -> np.ndarray:
  """int64[N, L] context id of every position of ``tokens`` int[N, L]."""
  n, length = tokens.shape
  base = lang.vocab_size + 1
  padded = np.concatenate(
      [np.full((n, lang.order), lang.vocab_size, dtype=np.int64),
       tokens.astype(np.int64)], axis=1)
  ctx = np.zeros((n, length), dtype=np.int64)
  for j in range(1, lang.order + 1):
    # Digit j (weight B^(j-1)) is the token j positions back, the start symbol before
    # the sequence begins.
    ctx += padded[:, lang.order - j: lang.order - j + length] * base ** (j - 1)
  return ctx


def _check_text_tokens(lang: SyntheticLanguage, tokens) -> np.ndarray:
  tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise ValueError(f"tokens must have shape [N, L], got shape {tokens.shape}")
  if tokens.shape[1] == 0:
    raise ValueError(f"tokens must have at least one position, got shape {tokens.shape}")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
  bad = (tokens < 0) | (tokens >= lang.vocab_size)
  if bad.any():
    row, pos = (int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"token id {int(tokens[row, pos])} at (sequence {row}, position {pos}) is "
        f"outside the text vocabulary [0, {lang.vocab_size}); {int(bad.sum())} such "
        f"ids in tokens of shape {tokens.shape}. The judge scores text ids only: map "
        f"the mask (id {lang.vocab_size} of an MDLM backbone) or other special ids "
        f"explicitly before scoring")
  return tokens


def sample_corpus(lang: SyntheticLanguage, seed: int, n_sequences: int, length: int,
                  *, return_topics: bool = False):
  """Draws ``n_sequences`` independent sequences of ``length`` tokens from the process.

  Vectorised over sequences; one step per position.

  Args:
    lang: the language.
    seed: non-negative integer; same seed, language and sizes give the same corpus.
    n_sequences: N.
    length: L.
    return_topics: also return the topic of every sequence.

  Returns:
    int32[N, L] token ids in [0, V), and int32[N] topics if ``return_topics`` (with
    topic switches: int32[N, L], the topic of every position).
  """
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  if n_sequences < 1 or length < 1:
    raise ValueError(f"n_sequences and length must be positive, got "
                     f"n_sequences={n_sequences}, length={length}")
  rng = np.random.default_rng([_CORPUS_TAG, int(seed)])
  topics = rng.choice(lang.n_topics, size=n_sequences, p=lang.topic_probs)
  context = np.full(n_sequences, lang.start_context, dtype=np.int64)
  tokens = np.empty((n_sequences, length), dtype=np.int32)
  path = np.empty((n_sequences, length), dtype=np.int32)
  for t in range(length):
    if lang.switch > 0.0 and t > 0:
      # Only with switches: rho = 0 draws exactly the stream of one topic per sequence.
      redraw = rng.random(n_sequences) < lang.switch
      fresh = rng.choice(lang.n_topics, size=n_sequences, p=lang.topic_probs)
      topics = np.where(redraw, fresh, topics)
    path[:, t] = topics
    u_choice = rng.random(n_sequences)
    u_floor = rng.random(n_sequences)
    uniform = rng.integers(0, lang.vocab_size, size=n_sequences)
    cdf = np.cumsum(lang.successor_probs[topics, context], axis=1)
    # Inverse-CDF pick; the clip covers a last cdf entry a rounding error below 1.
    pick = np.minimum((u_choice[:, None] >= cdf).sum(axis=1), lang.n_successors - 1)
    sparse = lang.successors[topics, context, pick]
    tok = np.where(u_floor < lang.floor, uniform, sparse)
    tokens[:, t] = tok
    context = _next_context(lang, context, tok.astype(np.int64))
  if return_topics:
    return tokens, (path if lang.switch > 0.0 else topics.astype(np.int32))
  return tokens


def _emission_logs(lang: SyntheticLanguage, x: np.ndarray) -> np.ndarray:
  """float64[N, L, K]: ``log P_k(x_t | c_t)`` of every position under every topic."""
  ctx = _contexts(lang, x)
  out = np.empty(x.shape + (lang.n_topics,), dtype=np.float64)
  floor_part = lang.floor / lang.vocab_size
  for k in range(lang.n_topics):
    hit = lang.successors[k][ctx] == x[:, :, None]
    q = (lang.successor_probs[k][ctx] * hit).sum(axis=-1)
    out[:, :, k] = np.log((1.0 - lang.floor) * q + floor_part)
  return out


def topic_log_likelihoods(lang: SyntheticLanguage, tokens) -> np.ndarray:
  """Exact ``log P_k(x)`` of each sequence under each topic's chain (the whole sequence
  in topic k).

  Args:
    lang: the language.
    tokens: int[N, L] text ids in [0, V).

  Returns:
    float64[N, K]; without topic switches ``log_likelihood`` is their log-sum-exp with
    ``log pi``.
  """
  tokens = _check_text_tokens(lang, tokens)
  n, length = tokens.shape
  out = np.empty((n, lang.n_topics), dtype=np.float64)
  chunk = max(1, _SCORE_CHUNK_TOKENS // length)
  for start in range(0, n, chunk):
    x = tokens[start:start + chunk].astype(np.int64)
    out[start:start + chunk] = _emission_logs(lang, x).sum(axis=1)
  return out


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
  top = a.max(axis=axis, keepdims=True)
  return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


def _switching_log_likelihood(lang: SyntheticLanguage, tokens: np.ndarray) -> np.ndarray:
  """float64[N]: the forward recursion over topic paths,

      a_1(k) = log pi_k + e_1(k),
      a_t(k) = e_t(k) + log[(1 - rho) exp a_{t-1}(k) + rho pi_k sum_j exp a_{t-1}(j)],

  with e_t(k) = log P_k(x_t | c_t) and log p(x) = logsumexp_k a_L(k)."""
  n, length = tokens.shape
  out = np.empty(n, dtype=np.float64)
  chunk = max(1, _SCORE_CHUNK_TOKENS // (length * lang.n_topics))
  log_pi = np.log(lang.topic_probs)
  log_stay, log_move = np.log1p(-lang.switch), np.log(lang.switch)
  for start in range(0, n, chunk):
    e = _emission_logs(lang, tokens[start:start + chunk].astype(np.int64))
    a = log_pi + e[:, 0]
    for t in range(1, length):
      total = _logsumexp(a, axis=1)[:, None]
      a = e[:, t] + np.logaddexp(log_stay + a, log_move + log_pi + total)
    out[start:start + chunk] = _logsumexp(a, axis=1)
  return out


def log_likelihood(lang: SyntheticLanguage, tokens) -> np.ndarray:
  """Exact ``log p(x)`` of each sequence, float64[N]: ``log sum_k pi_k P_k(x)`` (one topic
  per sequence), or with topic switches the forward recursion over topic paths."""
  if lang.switch > 0.0:
    return _switching_log_likelihood(lang, _check_text_tokens(lang, tokens))
  per_topic = topic_log_likelihoods(lang, tokens) + np.log(lang.topic_probs)
  top = per_topic.max(axis=1, keepdims=True)
  return (top + np.log(np.exp(per_topic - top).sum(axis=1, keepdims=True)))[:, 0]


def nll_per_token(lang: SyntheticLanguage, tokens) -> np.ndarray:
  """Per-token NLL ``-log p(x) / L`` of each sequence (nats), float64[N]."""
  tokens = _check_text_tokens(lang, tokens)
  return -log_likelihood(lang, tokens) / tokens.shape[1]


def gen_ppl(lang: SyntheticLanguage, tokens) -> float:
  """The judge: ``exp`` of the mean per-token NLL over all tokens of all sequences.

  All sequences have the same length L, so the mean over tokens equals the mean over
  sequences of ``nll_per_token`` (as in MDLM/DUO, which pool tokens of all samples).
  """
  return float(np.exp(nll_per_token(lang, tokens).mean()))


def position_marginals(lang: SyntheticLanguage, length: int, *,
                       per_topic: bool = False) -> np.ndarray:
  """Exact per-position marginals of the process.

  Forward recursion over context ids for each topic; the marginal of position t is
  ``P(x_t = v) = sum_k pi_k P_k(x_t = v)``.

  Args:
    lang: the language.
    length: L.
    per_topic: return ``P_k(x_t = v)`` for every topic instead of the mixture.

  Returns:
    float64[L, V], or float64[K, L, V] if ``per_topic``; each row sums to 1.
  """
  if length < 1:
    raise ValueError(f"length must be positive, got {length}")
  if lang.switch > 0.0:
    raise ValueError(f"position marginals are built for one topic per sequence; this "
                     f"language switches topics (switch={lang.switch})")
  v = lang.vocab_size
  base = v + 1
  n_tails = base ** (lang.order - 1)
  all_ctx = np.arange(lang.n_contexts, dtype=np.int64)
  tails = all_ctx % n_tails
  out = np.zeros((lang.n_topics, length, v), dtype=np.float64)
  for k in range(lang.n_topics):
    succ = lang.successors[k].astype(np.int64)
    next_ctx = _next_context(lang, all_ctx[:, None], succ).ravel()
    mass = np.zeros(lang.n_contexts, dtype=np.float64)
    mass[lang.start_context] = 1.0
    for t in range(length):
      sparse_w = ((1.0 - lang.floor) * mass[:, None] * lang.successor_probs[k]).ravel()
      out[k, t] = np.bincount(succ.ravel(), weights=sparse_w, minlength=v)
      out[k, t] += lang.floor / v * mass.sum()
      if t + 1 < length:
        new = np.bincount(next_ctx, weights=sparse_w, minlength=lang.n_contexts)
        tail_mass = np.bincount(tails, weights=mass, minlength=n_tails)
        # Floor moves: any text token v follows, from every context with that tail.
        new.reshape(n_tails, base)[:, :v] += lang.floor / v * tail_mass[:, None]
        mass = new
  if per_topic:
    return out
  return np.einsum("k,klv->lv", lang.topic_probs, out)


def sample_independent_marginals(lang: SyntheticLanguage, seed: int, n_sequences: int,
                                 length: int, *, given_topic: bool = False
                                 ) -> np.ndarray:
  """Each position drawn independently from the exact marginal ``P(x_t)``.

  What one fully parallel decoding step of a *perfect* model produces from an
  all-mask input: every position's conditional given nothing is its marginal, and
  the positions are sampled independently. The reference for how badly the language
  punishes parallel decoding.

  Args:
    lang: the language.
    seed: non-negative integer.
    n_sequences: N.
    length: L.
    given_topic: draw one topic per sequence from ``pi`` and sample the positions
      independently from that topic's marginals ``P_k(x_t)``: a perfect model that
      has already fixed the topic and decodes everything else in parallel. Separates
      the cost of breaking local structure from the cost of mixing topics.

  Returns:
    int32[N, L] token ids in [0, V).
  """
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  if n_sequences < 1:
    raise ValueError(f"n_sequences must be positive, got {n_sequences}")
  rng = np.random.default_rng([_MARGINAL_TAG, int(seed)])
  if given_topic:
    cdf = np.cumsum(position_marginals(lang, length, per_topic=True), axis=2)
    topics = rng.choice(lang.n_topics, size=n_sequences, p=lang.topic_probs)
  else:
    cdf = np.cumsum(position_marginals(lang, length), axis=1)[None]
    topics = np.zeros(n_sequences, dtype=np.int64)
  u = rng.random((n_sequences, length))
  tokens = np.empty((n_sequences, length), dtype=np.int32)
  for t in range(length):
    for k in np.unique(topics):
      rows = topics == k
      tokens[rows, t] = np.minimum(
          np.searchsorted(cdf[k, t], u[rows, t], side="right"), lang.vocab_size - 1)
  return tokens


def true_entropy_rate(lang: SyntheticLanguage, seed: int, length: int, *,
                      n_sequences: int = 4096) -> tuple[float, float]:
  """Monte-Carlo estimate of ``H(X_1..X_L) / L`` in nats, with its standard error.

  The mean per-token NLL of fresh true samples: ``exp`` of it is the Gen-PPL a
  perfect sampler reaches on average, the best achievable reference.

  Returns:
    (mean, standard error) over ``n_sequences`` sequences of length ``length``.
  """
  nll = nll_per_token(lang, sample_corpus(lang, seed, n_sequences, length))
  return float(nll.mean()), float(nll.std(ddof=1) / np.sqrt(n_sequences))
