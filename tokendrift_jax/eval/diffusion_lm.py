"""A backbone checkpoint as a scored language model: likelihoods of continuations and
prompted generation, the harness-independent half of the lm-evaluation-harness adapter
(:mod:`.lm_eval_adapter` wraps it; docs/EVALUATION.md, "lm-evaluation-harness").

**Likelihood, masked processes with a prompted sampler (LLaDA, Dream):** the Monte-Carlo
estimator of LLaDA's public ``eval_llada.py`` (``LLaDAEvalHarness.get_loglikelihood`` and
``_forward_process``, ML-GSAI/LLaDA at 6d73fd1d). For a context c (P tokens) and a target
y (T tokens), each Monte-Carlo batch of b rows draws

* k ~ uniform{1..T}, then per row n_i = round(linspace(k, k + (b − 1)·T/b, b))_i wrapped
  into 1..T by ((n − 1) mod T) + 1: the rows' mask counts are spread evenly over 1..T
  (stratified), not drawn independently;
* in row i a uniformly random subset of n_i target positions is masked (a random
  permutation of [1]*n_i + [0]*(T − n_i)); the context is never masked;

runs the backbone on [c, y with those positions masked], and scores

  L_batch = (1/b) Σ_i Σ_{masked j} −log softmax(logits_ij)[y_j] · T / n_i

(the log-softmax over all V ids, mask logit included, as its ``F.cross_entropy``; the
weight 1/p_mask with p_mask = n_i / T). The estimate of log p(y | c) is −mean over the
mc_num / b batches of L_batch. With ``cfg`` > 0 the logits are classifier-free guided as
its ``get_logits``: uncond + (cfg + 1)(cond − uncond), uncond the same rows with the
context positions masked. Dream's backbone returns logits aligned to the masked positions
(:mod:`tokendrift_jax.models.dream`), so the same estimator applies to it unchanged.

Differences from the script, all deliberate: the draws use NumPy's generator
(:func:`draw_masks`), seeded per request from (seed, P, T) so that a result does not
depend on request order and equal-length choices of a question share their mask draws
(common random numbers); masked positions are the drawn ones, where the script finds them
as ``== mask_id`` (a target token that is the mask id would count as masked there); the
arithmetic is float32 on the host-summed batches (the script's bfloat16 model, float32
loss).

**Likelihood, other processes (MDLM, DUO):** the process's own continuous-time NELBO on
the target given the context. Each of the mc_num samples draws t (``process.sample_t``,
b at a time) and xt = ``process.corrupt``, puts the context back clean (the prompt is
conditioned on, never corrupted), and sums ``process.loss_per_token`` over the target
positions; the estimate of log p(y | c) is −mean of those sums (a lower bound in
expectation: −NELBO ≤ log p).

**Greedy check** (``is_check_greedy``, off by default as the script recommends): the
script's ``suffix_greedy_prediction``: from [c, all masks], T steps each committing the one
most confident masked position (argmax id, softmax confidence); True iff the result is y.
That is LLaDA's sampler with steps = gen_length = T, temperature 0, one block
(:func:`tokendrift_jax.diffusion.llada_sampling.make_generate`), which serves Dream too
(only the mask id is used). Off: False, as the script returns.

**Generation:** the process's prompted sampler (``process.make_generate``: LLaDA's
generate.py, Dream's diffusion_generate) at ``nfe`` steps on one prompt at a time (the
backbone contract has no padding mask, so prompts of different lengths cannot share a
batch; one program is compiled per prompt length).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.diffusion import llada_sampling
from tokendrift_jax.diffusion import make_process_for_model

ESTIMATORS = ("llada", "elbo")
# Sampler options a model_args string may carry to the family's prompted sampler (each
# family's make_generate refuses those it does not take).
SAMPLER_OPTIONS = ("block_length", "remasking", "temperature", "alg", "top_p", "top_k",
                   "alg_temp", "eps")


@dataclasses.dataclass(frozen=True)
class MaskDraw:
  """One Monte-Carlo batch of LLaDA's ``_forward_process`` over a target of T tokens.

  Attributes:
    num_masked: int64[b], n_i in 1..T, the masked target positions of row i.
    is_mask: bool[b, T], exactly n_i True per row (the target positions masked).
  """
  num_masked: np.ndarray
  is_mask: np.ndarray


def draw_masks(rng: np.random.Generator, target_len: int, batch: int) -> MaskDraw:
  """LLaDA's ``_forward_process`` draw for one batch (see the module doc).

  Args:
    rng: the generator the draw consumes.
    target_len: T >= 1.
    batch: b >= 1 rows.
  """
  if target_len < 1 or batch < 1:
    raise ValueError(f"target_len and batch must be >= 1, got {target_len}, {batch}")
  k = int(rng.integers(1, target_len + 1))
  # np.round rounds half to even, as torch.round.
  n = np.round(np.linspace(float(k), k + (batch - 1) * (target_len / batch), batch))
  n = ((n.astype(np.int64) - 1) % target_len) + 1
  is_mask = np.arange(target_len)[None, :] < n[:, None]
  is_mask = np.stack([row[rng.permutation(target_len)] for row in is_mask])
  return MaskDraw(num_masked=n, is_mask=is_mask)


def request_rng(seed: int, context_len: int, target_len: int) -> np.random.Generator:
  """The generator of one request's draws: a function of (seed, P, T) only."""
  return np.random.default_rng([int(seed), int(context_len), int(target_len)])


def elbo_key(seed: int, context_len: int, target_len: int, batch_index: int) -> jax.Array:
  """The key of NELBO batch ``batch_index`` of one request: fold_in(fold_in(fold_in(
  PRNGKey(seed), P), T), i); the batch splits it as ``k_t, k_x = jax.random.split(key)``,
  t = ``process.sample_t(k_t, b)``, xt = ``process.corrupt(k_x, x0, t)``."""
  key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), int(context_len))
  return jax.random.fold_in(jax.random.fold_in(key, int(target_len)), int(batch_index))


def parse_mesh_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
  """``"DxF"`` / ``"DxFxT"`` (``x``-separated, as model_args split on commas) -> ints."""
  if text is None or text == "":
    return None
  if not isinstance(text, str):
    return tuple(int(s) for s in text)
  try:
    return tuple(int(s) for s in text.lower().split("x"))
  except ValueError as e:
    raise ValueError(f"mesh={text!r} must be 'DATAxFSDP' or 'DATAxFSDPxTENSOR', e.g. "
                     f"'-1x1' or '1x1x8'") from e


class DiffusionLM:
  """A backbone checkpoint loaded on a mesh, answering likelihood and generation requests
  on token ids (the adapter tokenizes).

  Args:
    checkpoint: a backbone checkpoint directory (``python -m convert SRC DIR``, or a
      training run's ``WORKDIR/backbone``).
    mc_num: Monte-Carlo samples per likelihood (script default 128); a multiple of
      ``batch_size``.
    batch_size: rows per backbone call of the estimator (script default 32).
    cfg: classifier-free guidance scale of the likelihood (and of LLaDA's generation), 0 =
      none; the "llada" estimator only.
    estimator: "llada" or "elbo"; None: "llada" for a process with a prompted sampler and a
      mask (LLaDA, Dream), else "elbo" (MDLM, DUO).
    nfe: sampler steps of generate_until; None = the generation length.
    gen_length: generated tokens per request; None = the request's ``max_gen_toks``.
    sampler_options: the family sampler's options (:data:`SAMPLER_OPTIONS`); the LLaDA
      generation temperature defaults to 0 (greedy, as the script).
    seed: seeds the likelihood draws (:func:`request_rng`) and the sampler keys.
    max_length: longest context + target in tokens; None = the checkpoint's length.
    is_check_greedy: compute the greedy check (see the module doc); False answers False.
    mesh: mesh shape (:func:`parse_mesh_shape`); None = every device on ``data``.
    num_devices: > 0 keeps the first N devices.
    param_sharding: "replicated", "fsdp" or "rules" (:mod:`tokendrift_jax.sharding`).
    dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32).
  """

  def __init__(self, checkpoint: str, *, mc_num: int = 128, batch_size: int = 32,
               cfg: float = 0.0, estimator: str | None = None, nfe: int | None = None,
               gen_length: int | None = None, sampler_options: dict | None = None,
               seed: int = 1234, max_length: int | None = None,
               is_check_greedy: bool = False, mesh=None, num_devices: int = 0,
               param_sharding: str = "replicated", dtype: str = "float32"):
    if not checkpoint:
      raise ValueError("checkpoint is empty; pass checkpoint=DIR, a converted backbone "
                       "(`python -m convert SRC DIR`) or a training run's WORKDIR/backbone")
    ckpt = os.path.abspath(os.path.expanduser(str(checkpoint)))
    for name, value in (("mc_num", mc_num), ("batch_size", batch_size)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if mc_num % batch_size:
      raise ValueError(f"mc_num={mc_num} must be a multiple of batch_size={batch_size} "
                       f"(as eval_llada.py asserts)")
    if not cfg >= 0:
      raise ValueError(f"cfg must be >= 0 (0 = no guidance), got {cfg!r}")
    if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1):
      raise ValueError(f"nfe must be a positive int, got {nfe!r}")
    if gen_length is not None and (not isinstance(gen_length, int) or gen_length < 1):
      raise ValueError(f"gen_length must be a positive int, got {gen_length!r}")
    if dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    sampler_options = dict(sampler_options or {})
    unknown = sorted(set(sampler_options) - set(SAMPLER_OPTIONS))
    if unknown:
      raise ValueError(f"unknown sampler option(s) {unknown}; known: {list(SAMPLER_OPTIONS)}")

    model_cfg, meta = checkpoints.read_backbone_config(ckpt)
    process = make_process_for_model(checkpoints.checkpoint_process(meta, ckpt), model_cfg)
    if estimator is None:
      estimator = "llada" if process.prompted and process.mask_id is not None else "elbo"
    if estimator not in ESTIMATORS:
      raise ValueError(f"estimator={estimator!r} is not one of {ESTIMATORS}")
    if estimator == "llada" and process.mask_id is None:
      raise ValueError(f"estimator='llada' masks target tokens, but the {process.name!r} "
                       f"process has no mask; use estimator='elbo'")
    if estimator == "elbo" and cfg > 0:
      raise ValueError("cfg applies to the 'llada' estimator only (the NELBO is unguided)")
    if is_check_greedy and process.mask_id is None:
      raise ValueError(f"is_check_greedy unmasks a masked target, but the {process.name!r} "
                       f"process has no mask")

    family = models.family_of(model_cfg)
    cfg_mesh = sharding.make_mesh(parse_mesh_shape(mesh), _devices(num_devices))
    logical_axes = sharding.check_placement(param_sharding, cfg_mesh, family.logical_axes,
                                            family.name)
    _, params, _ = checkpoints.load_backbone_params(ckpt)
    self.params = sharding.to_global(params, sharding.param_sharding(
        params, cfg_mesh, param_sharding, logical_axes=logical_axes))
    compute = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    gdef = models.graphdef(model_cfg, dtype=compute)

    def apply_fn(p, x, sigma):
      return models.merge(gdef, p)(x, sigma)

    self.checkpoint, self.model_cfg, self.meta = ckpt, model_cfg, meta
    self.family, self.process, self.mesh = family, process, cfg_mesh
    self.apply_fn = apply_fn
    self.mc_num, self.batch_size, self.cfg = mc_num, batch_size, float(cfg)
    self.estimator, self.nfe, self.gen_length = estimator, nfe, gen_length
    self.sampler_options, self.seed = sampler_options, int(seed)
    self.max_length = int(max_length or model_cfg.length)
    self.is_check_greedy = bool(is_check_greedy)
    self._llada_batch = jax.jit(self._llada_batch_loss)
    self._elbo_batch = jax.jit(self._elbo_batch_loss)
    self._generators: dict[tuple, Any] = {}   # compiled samplers by shape

  # --- likelihood --------------------------------------------------------------------

  def _logits(self, params, x: jax.Array, prompt_len: int) -> jax.Array:
    """float32[b, L, V] logits of x int32[b, L], guided when cfg > 0 (``get_logits``)."""
    b = x.shape[0]
    if self.cfg == 0:
      return self.apply_fn(params, x, jnp.zeros((b,), jnp.float32)).astype(jnp.float32)
    un_x = x.at[:, :prompt_len].set(self.process.mask_id)
    out = self.apply_fn(params, jnp.concatenate([x, un_x]), jnp.zeros((2 * b,), jnp.float32))
    cond, uncond = out[:b].astype(jnp.float32), out[b:].astype(jnp.float32)
    return llada_sampling.guided_logits(cond, uncond, self.cfg)

  def _llada_batch_loss(self, params, seq: jax.Array, is_mask: jax.Array,
                        num_masked: jax.Array) -> jax.Array:
    """L_batch of the module doc, float32 scalar.

    Args:
      seq: int32[L] = [context (P), target (T)].
      is_mask: bool[b, T], the draw's masked target positions.
      num_masked: int32[b], n_i.
    """
    b, t_len = is_mask.shape
    p_len = seq.shape[0] - t_len
    masked = jnp.concatenate([jnp.zeros((b, p_len), bool), is_mask], axis=1)
    x = jnp.where(masked, self.process.mask_id, seq[None, :]).astype(jnp.int32)
    logp = jax.nn.log_softmax(self._logits(params, x, p_len), axis=-1)
    ce = -jnp.take_along_axis(logp, jnp.broadcast_to(seq, x.shape)[..., None], -1)[..., 0]
    weight = t_len / num_masked.astype(jnp.float32)    # 1 / p_mask
    return jnp.sum(jnp.where(masked, ce, 0.0) * weight[:, None]) / b

  def _elbo_batch_loss(self, params, seq: jax.Array, key: jax.Array, prompt_len: int
                       ) -> jax.Array:
    """Σ over rows of the NELBO on the target positions, float32 scalar (b rows drawn
    from ``key`` as :func:`elbo_key` says, the context restored in xt).

    Args:
      seq: int32[L] = [context (prompt_len), target]; key: PRNG key; prompt_len: P.
    """
    b = self.batch_size
    x0 = jnp.broadcast_to(seq, (b, seq.shape[0])).astype(jnp.int32)
    k_t, k_x = jax.random.split(key)
    t = self.process.sample_t(k_t, b)
    context = jnp.arange(seq.shape[0]) < prompt_len
    xt = jnp.where(context[None, :], x0, self.process.corrupt(k_x, x0, t))
    logits = self.apply_fn(params, xt, self.process.model_sigma(t)).astype(jnp.float32)
    per_token = self.process.loss_per_token(self.process.log_probs(logits, xt), x0, xt, t)
    return jnp.sum(jnp.where(context[None, :], 0.0, per_token))

  def loglikelihood_tokens(self, context: Sequence[int], target: Sequence[int],
                           draws: Sequence[MaskDraw] | None = None) -> float:
    """The estimate of log p(target | context) (module doc).

    Args:
      context: P >= 0 token ids; target: T >= 1 token ids (T = 0 gives 0.0, the log of 1).
      draws: for the "llada" estimator, the mc_num / batch_size batches' masks (default:
        drawn by :func:`draw_masks` from :func:`request_rng`); each is_mask bool[b, T].
    """
    context = [int(i) for i in context]
    target = [int(i) for i in target]
    p_len, t_len = len(context), len(target)
    if t_len == 0:
      return 0.0
    if p_len + t_len > self.max_length:
      raise ValueError(f"context + continuation is {p_len} + {t_len} tokens, longer than "
                       f"max_length={self.max_length} (eval_llada.py asserts the same)")
    seq = jnp.asarray(context + target, jnp.int32)
    n_batches = self.mc_num // self.batch_size
    if self.estimator == "elbo":
      if draws is not None:
        raise ValueError("draws apply to the 'llada' estimator only")
      total = sum(float(self._elbo_batch(self.params, seq,
                                         elbo_key(self.seed, p_len, t_len, i), p_len))
                  for i in range(n_batches))
      return -total / self.mc_num
    if draws is None:
      rng = request_rng(self.seed, p_len, t_len)
      draws = [draw_masks(rng, t_len, self.batch_size) for _ in range(n_batches)]
    losses = []
    for d in draws:
      if d.is_mask.shape[1] != t_len:
        raise ValueError(f"a draw masks {d.is_mask.shape[1]} target positions, the target "
                         f"has {t_len}")
      losses.append(float(self._llada_batch(self.params, seq, jnp.asarray(d.is_mask),
                                            jnp.asarray(d.num_masked, jnp.int32))))
    return -sum(losses) / len(losses)

  def is_greedy(self, context: Sequence[int], target: Sequence[int]) -> bool:
    """The greedy check (module doc); False when ``is_check_greedy`` is off."""
    if not self.is_check_greedy or not target:
      return bool(self.is_check_greedy)
    t_len = len(target)
    key = ("greedy", len(context), t_len)
    if key not in self._generators:   # one compiled program per (P, T)
      self._generators[key] = llada_sampling.make_generate(
          self.process, self.apply_fn, batch=1, prompt_length=len(context), gen_length=t_len,
          temperature=0.0, cfg_scale=self.cfg, float64=False)
    res = self._generators[key](self.params, np.asarray([context], np.int32),
                                jax.random.PRNGKey(0), t_len)
    return bool(np.array_equal(np.asarray(res.generated)[0], np.asarray(target)))

  # --- generation --------------------------------------------------------------------

  def generate_tokens(self, context: Sequence[int], gen_length: int, index: int = 0
                      ) -> np.ndarray:
    """int[G] generated after ``context`` by the family's prompted sampler at ``nfe``
    steps (default G), the key fold_in(PRNGKey(seed), index)."""
    if not self.process.prompted:
      raise ValueError(f"the {self.process.name!r} process has no prompt-conditioned "
                       f"sampler; generate_until needs one (LLaDA, Dream)")
    context = [int(i) for i in context]
    if gen_length >= self.max_length:
      raise ValueError(f"gen_length={gen_length} leaves no room for a prompt in "
                       f"max_length={self.max_length} tokens")
    if len(context) + gen_length > self.max_length:
      # Left truncation keeps the end of the prompt, the part the continuation follows.
      context = context[len(context) + gen_length - self.max_length:]
    key = ("generate", len(context), gen_length)
    if key not in self._generators:
      options = dict(self.sampler_options)
      if self.cfg > 0:
        options["cfg_scale"] = self.cfg
      try:
        self._generators[key] = self.process.make_generate(
            self.apply_fn, batch=1, prompt_length=len(context), gen_length=gen_length,
            **options)
      except TypeError as e:
        raise ValueError(f"sampler options {sorted(options)} are not all taken by the "
                         f"{self.process.name!r} sampler: {e}") from e
    steps = self.nfe or gen_length
    self.process.check_steps(steps, gen_length, self.sampler_options)
    res = self._generators[key](self.params, np.asarray([context], np.int32),
                                jax.random.fold_in(jax.random.PRNGKey(self.seed), index),
                                steps)
    return np.asarray(res.generated)[0]


def _devices(num_devices: int):
  devices = jax.devices()
  if num_devices:
    if not 0 < int(num_devices) <= len(devices):
      raise ValueError(f"num_devices={num_devices} but {len(devices)} devices exist")
    devices = devices[:int(num_devices)]
  return devices


__all__ = ["DiffusionLM", "ESTIMATORS", "MaskDraw", "SAMPLER_OPTIONS", "draw_masks", "elbo_key",
           "parse_mesh_shape", "request_rng"]
