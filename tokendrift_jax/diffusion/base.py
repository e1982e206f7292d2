"""The process contract: what a discrete diffusion process is to the trainer, the samplers and
the evaluator.

A process is one class (a frozen dataclass, so hashable and usable as a static jit argument)
deriving from :class:`Process`, registered under the name ``config.diffusion.process`` and
checkpoints' ``meta['process']`` take (:mod:`tokendrift_jax.diffusion.registry`). It owns:

* its **forward process and loss**: ``sample_t``, ``model_sigma``, ``corrupt``, ``prior``,
  ``log_probs`` / ``probs``, ``predicted_positions``, ``loss_per_token`` and ``loss`` (the
  trainer and the objectives call only these);
* its **vocabulary rule**: ``vocab_size``, ``mask_id`` (None without a mask),
  ``text_vocab_size`` (the ids a tokenizer and clean data may use), ``prepare_tokenizer``;
* how it is **built for a backbone** (:meth:`Process.for_model`);
* its **sampler** (:meth:`Process.make_sampler`) and the sampler settings the name tables
  used to hold (:attr:`noise_removals`, :attr:`default_noise_removal`,
  :attr:`default_float64`, :meth:`sampler_options`, :meth:`check_steps`); optionally a
  prompt-conditioned sampler (:attr:`prompted`, :meth:`make_generate`);
* what its samples add to an evaluation row (:meth:`sample_metrics`).

``diffusion.make_sampler(process, ...)`` calls :meth:`Process.make_sampler`, and the
evaluator asks the process for its defaults and checks; nothing outside a process's own
files tests which process it is.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

import jax

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]
ApplyFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
# sampler(params, key, steps: int) -> sampling.SampleResult
Sampler = Callable[[Any, jax.Array, int], Any]


class Process(abc.ABC):
  """Base class of the diffusion processes (subclasses are frozen dataclasses).

  Class attributes:
    name: the value of ``config.diffusion.process`` (and of a checkpoint's
      ``meta['process']``) that selects it.
    noise_removals: the ``noise_removal`` values its sampler accepts.
    default_noise_removal: the one used when none is given.
    default_float64: whether its sampler computes in float64 by default.
    prompted: whether it has a prompt-conditioned sampler (:meth:`make_generate`).

  Instance attributes every process has: ``vocab_size`` (V, the logits' size), ``mask_id``
  (int, or None for a process without a mask) and ``time_conditioning`` (whether the
  backbone is fed σ(t)).
  """

  name: ClassVar[str] = ""
  noise_removals: ClassVar[tuple[str, ...]] = ("none",)
  default_noise_removal: ClassVar[str] = "none"
  default_float64: ClassVar[bool] = False
  prompted: ClassVar[bool] = False

  vocab_size: int
  mask_id: int | None
  time_conditioning: bool

  # --------------------------------------------------------------- building
  @classmethod
  def for_model(cls, model_cfg, **kwargs) -> "Process":
    """The process sized and conditioned like ``model_cfg`` (any backbone config; fields
    ``vocab_size``, ``mask_id``, ``time_conditioned``); ``kwargs``: further dataclass fields
    (eps, ...). ValueError when the backbone cannot serve this process. Default: sized by
    the vocabulary only."""
    return cls(vocab_size=model_cfg.vocab_size, **kwargs)

  # --------------------------------------------------------------- vocabulary
  @property
  @abc.abstractmethod
  def text_vocab_size(self) -> int:
    """Ids a tokenizer (and clean data) may use (V or V − 1)."""

  @abc.abstractmethod
  def prepare_tokenizer(self, tokenizer):
    """The tokenizer as this process uses it (possibly changed in place)."""

  # --------------------------------------------------------------- forward process
  @abc.abstractmethod
  def sample_t(self, key: jax.Array, batch: int) -> jax.Array:
    """Training times, float32[batch]."""

  @abc.abstractmethod
  def model_sigma(self, t: jax.Array) -> jax.Array:
    """What the backbone is fed at times t float[B]: float32[B]."""

  @abc.abstractmethod
  def corrupt(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
    """xt ~ q(xt | x0): int32[B, L] from x0 int[B, L] at times t float[B]."""

  @abc.abstractmethod
  def prior(self, key: jax.Array, batch: int, length: int) -> jax.Array:
    """The t = 1 state, int32[batch, length]."""

  # --------------------------------------------------------------- parameterisation
  @abc.abstractmethod
  def log_probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    """log p_θ(x0 | xt), float[B, L, V] from logits float[B, L, V] at xt int[B, L]."""

  def probs(self, logits: jax.Array, xt: jax.Array) -> jax.Array:
    """p_θ(x0 | xt) = exp(:meth:`log_probs`), float[B, L, V]."""
    return jax.numpy.exp(self.log_probs(logits, xt))

  @abc.abstractmethod
  def predicted_positions(self, xt: jax.Array) -> jax.Array:
    """bool[B, L]: where the model predicts a token."""

  # --------------------------------------------------------------- loss
  @abc.abstractmethod
  def loss_per_token(self, log_probs: jax.Array, x0: jax.Array, xt: jax.Array,
                     t: jax.Array) -> jax.Array:
    """The per-token loss float[B, L] (0 where nothing is predicted)."""

  @abc.abstractmethod
  def loss(self, logits_fn: LogitsFn, x0: jax.Array, key: jax.Array,
           valid: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One loss estimate on x0 int[B, L]: (float32 scalar, metrics with ``loss``,
    ``nll_sum``, ``num_tokens``)."""

  # --------------------------------------------------------------- sampling
  def check_sampler_settings(self, noise_removal: str | None, float64: bool | None,
                             cache: bool = True) -> tuple[str, bool]:
    """(noise_removal, float64) with the process's defaults filled in; ValueError for a
    noise removal it does not know or ``cache=False`` (only a process whose
    :meth:`reuses_forward` can use a cache may be asked to turn it off)."""
    if noise_removal is None:
      noise_removal = self.default_noise_removal
    if noise_removal not in self.noise_removals:
      raise ValueError(f"noise_removal={noise_removal!r} is not one of "
                       f"{self.noise_removals} for {self.name}")
    if not cache and not self.has_cache:
      raise ValueError(f"cache=False only applies to MDLM; the {self.name} sampler has no "
                       f"cache")
    return noise_removal, bool(self.default_float64 if float64 is None else float64)

  @property
  def has_cache(self) -> bool:
    """Whether ``cache=False`` means anything to its sampler."""
    return False

  def sampler_options(self, options: dict, length: int) -> dict:
    """Its sampler's ``**options`` with the defaults filled in, for samples of ``length``
    tokens (what an evaluation records); ValueError naming an option it does not take.
    Default: ``temperature`` only (1 = the model's own distribution)."""
    options = dict(options)
    extra = sorted(k for k in options if k != "temperature")
    if extra:
      raise ValueError(f"sampler option(s) {extra} apply only to diffusion.process='llada', "
                       f"not {self.name!r}")
    del length
    return options

  def check_steps(self, steps: int, length: int, options: dict) -> None:
    """Refuses (ValueError) a step count its sampler cannot run for ``length`` tokens with
    the (filled-in) ``options``; any step count >= 1 by default."""
    del steps, length, options

  @abc.abstractmethod
  def make_sampler(self, apply_fn: ApplyFn, *, batch: int, length: int,
                   noise_removal: str | None = None, cache: bool = True,
                   float64: bool | None = None, mesh=None, **options) -> Sampler:
    """Compiles an unconditional sampler once for every step count:
    ``sampler(params, key, steps: int) -> sampling.SampleResult`` of int32[batch, length]
    tokens (see :func:`tokendrift_jax.diffusion.sampling.make_sampler`)."""

  def make_generate(self, apply_fn: ApplyFn, *, batch: int, prompt_length: int,
                    gen_length: int, float64: bool | None = None, mesh=None, **options):
    """A prompt-conditioned sampler (only when :attr:`prompted`):
    ``generate(params, prompt int[B, P], key, steps) -> result`` with ``tokens``
    int32[B, P + G], ``nfe_model`` and ``forward_rows``."""
    del apply_fn, batch, prompt_length, gen_length, float64, mesh, options
    raise ValueError(f"prompt-conditioned sampling is not built for the {self.name} process")

  # --------------------------------------------------------------- evaluation
  def sample_metrics(self, tokens) -> dict:
    """Extra entries of an evaluation row for the samples ``tokens`` int[N, L] (host
    arrays); none by default."""
    del tokens
    return {}
