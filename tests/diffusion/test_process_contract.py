"""The process contract: a diffusion process defined here alone samples through the unchanged
``diffusion.make_sampler``, is evaluated through the unchanged ``SampleEvaluator`` with the
synthetic judge (extended here by one named metric, which the rows carry), and trains a step
through the unchanged trainer; the registry refuses what is not a process."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import checkpoints
from tokendrift_jax import diffusion
from tokendrift_jax import sharding
from tokendrift_jax.data import synthetic
from tokendrift_jax.diffusion import common
from tokendrift_jax.diffusion import registry
from tokendrift_jax.diffusion import sampling
from tokendrift_jax.eval import judges
from tokendrift_jax.eval import sampling_eval
from tokendrift_jax.train import trainer


@dataclasses.dataclass(frozen=True)
class LinearMaskProcess(sampling.LoopProcess):
  """A toy masked process: each token is masked with probability t (no ε, no σ schedule),
  the mask logit is dropped and visible tokens are carried over; loss −log p(x0) / t on
  masked positions; its own sampler step unmasks each mask with probability (t − s) / t,
  drawing the token from p_x0 (the shared loop, greedy noise removal)."""

  vocab_size: int
  mask_id: int = 0
  sampling_eps: float = 1e-3
  time_conditioning: ClassVar[bool] = False

  name: ClassVar[str] = "toy_linear_mask"
  noise_removals: ClassVar[tuple[str, ...]] = ("greedy", "none")
  default_noise_removal: ClassVar[str] = "greedy"

  @classmethod
  def for_model(cls, model_cfg, **kwargs):
    kwargs.pop("eps", None)          # process_from_config passes every process's fields
    kwargs.pop("antithetic", None)
    return cls(vocab_size=model_cfg.vocab_size, mask_id=model_cfg.mask_id, **kwargs)

  @property
  def text_vocab_size(self) -> int:
    return self.vocab_size - 1       # the mask is the last id

  def prepare_tokenizer(self, tokenizer):
    return tokenizer

  def sample_t(self, key, batch):
    return jax.random.uniform(key, (batch,), minval=self.sampling_eps, maxval=1.0)

  def model_sigma(self, t):
    return jnp.zeros(jnp.shape(t), jnp.float32)

  def corrupt(self, key, x0, t):
    masked = jax.random.uniform(key, x0.shape) < t[:, None]
    return jnp.where(masked, self.mask_id, x0).astype(jnp.int32)

  def prior(self, key, batch, length):
    del key
    return jnp.full((batch, length), self.mask_id, jnp.int32)

  def log_probs(self, logits, xt):
    ids = jnp.arange(self.vocab_size)
    lp = jax.nn.log_softmax(jnp.where(ids == self.mask_id, -1e6, logits.astype(jnp.float32)))
    carry = jnp.where(ids == xt[..., None], 0.0, -1e6)
    return jnp.where(self.predicted_positions(xt)[..., None], lp, carry)

  def predicted_positions(self, xt):
    return xt == self.mask_id

  def loss_per_token(self, log_probs, x0, xt, t):
    nll = -jnp.take_along_axis(log_probs, x0[..., None], axis=-1)[..., 0]
    return jnp.where(self.predicted_positions(xt), nll / t[:, None], 0.0)

  def loss(self, logits_fn, x0, key, valid=None):
    return common.nelbo_estimate(self, logits_fn, x0, key, valid)

  def denoise_step(self, p_x0, x, t, s, u, last):
    del last
    # One uniform per position decides unmasking (the mask column's); the token is the
    # Gumbel argmax of p_x0 over the others.
    unmask = u[..., self.mask_id] < (t - s) / t
    draw = sampling.gumbel_argmax(p_x0, u)
    return jnp.where((x == self.mask_id) & unmask, draw, x).astype(jnp.int32)

  def sample_metrics(self, tokens):
    return {"toy_masks_left": int(np.sum(np.asarray(tokens) == self.mask_id))}


registry.register_process(LinearMaskProcess)


class DistinctCountingJudge(judges.SyntheticJudge):
  """The synthetic judge yielding one more named metric: the distinct ids of the samples."""
  metrics = judges.GEN_PPL_METRICS + ("distinct_ids",)

  def score(self, tokens, texts, prompts=None):
    return {**super().score(tokens, texts, prompts), "distinct_ids": len(np.unique(tokens))}

V, L, B = 33, 16, 4      # the tiny DiT's vocabulary (mask 32) and length
TARGET = (np.arange(B * L).reshape(B, L) * 7) % (V - 1)


def _oracle(params, x, sigma):
  """A denoiser certain of TARGET (the prediction does not depend on x or σ)."""
  del params, sigma
  return jnp.where(jnp.arange(V) == jnp.asarray(TARGET)[..., None], 1e4, 0.0) + 0.0 * x[..., None]


def test_a_toy_process_samples_through_make_sampler():
  p = diffusion.make_process("toy_linear_mask", V, mask_id=V - 1)
  sampler = diffusion.make_sampler(p, _oracle, batch=B, length=L)
  for steps in (1, 3):
    res = sampler(None, jax.random.key(0), steps)
    # The oracle's target is recovered exactly at any step count (greedy noise removal
    # fills whatever the steps left masked), with one forward per step plus noise removal.
    chex.assert_trees_all_equal(np.asarray(res.tokens), TARGET.astype(np.int32))
    assert int(res.nfe_model) == steps + 1 and res.final_forward
  # Without noise removal the toy's own step decides: one step from t = 1 to s ≈ 0 unmasks
  # almost everything, and the draws are those of the documented key.
  one = diffusion.make_sampler(p, _oracle, batch=B, length=L, noise_removal="none")
  a, b = one(None, jax.random.key(1), 2), one(None, jax.random.key(1), 2)
  chex.assert_trees_all_equal(a.tokens, b.tokens)
  kept = np.asarray(a.tokens) != V - 1
  assert kept.any() and np.all(np.asarray(a.tokens)[kept] == TARGET[kept])
  with pytest.raises(ValueError, match="noise_removal='ancestral' is not one of"):
    diffusion.make_sampler(p, _oracle, batch=B, length=L, noise_removal="ancestral")


def test_a_toy_process_is_evaluated_by_the_sample_evaluator(tiny_model_config, random_params,
                                                           tiny_lang):
  cfg = tiny_model_config("mdlm")
  assert (cfg.vocab_size, cfg.length, cfg.mask_id) == (V, L, V - 1)
  p = diffusion.make_process_for_model("toy_linear_mask", cfg)
  lang = synthetic.make_language(**tiny_lang)
  judge = DistinctCountingJudge(lang, process=p, progress=False)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  ev = sampling_eval.SampleEvaluator(cfg, p, judge, mesh=mesh, batch=B, progress=False)
  assert ev.noise_removal == "greedy" and not ev.float64
  params = random_params(cfg, 0)
  out = ev.evaluate(params, (2,), (0,), num_samples=B)
  (row,) = out.rows
  tokens = np.asarray([s["token_ids"] for s in out.samples])
  chex.assert_shape(tokens, (B, L))
  # The judge's verdict on exactly these samples, and the toy's own row entry.
  nll = float(np.sum(synthetic.nll_per_token(lang, tokens), dtype=np.float64)) * L
  assert math.isclose(row["gen_ppl"], math.exp(nll / (B * L)), rel_tol=1e-9)
  assert row["toy_masks_left"] == 0 and row["nfe"] == 2 and row["nfe_model"] == 3
  # Every metric the judge names is a column of the row.
  assert row["distinct_ids"] == len(np.unique(tokens)) and row["num_tokens"] == B * L


@pytest.mark.slow  # ~10 s; the suite keeps the toy process's sampling and evaluation above
def test_a_toy_process_trains_a_step(tiny_run_config, tiny_dir, tmp_path):
  c = tiny_run_config(tiny_dir, "mdlm", "continuation", steps=1, mesh_shape=(1, 1),
                      num_devices=1, global_batch=4, micro_batch=4)
  c.diffusion.process = LinearMaskProcess.name
  c.init_checkpoint = ""       # its weights start random: the mdlm backbone is not its own
  workdir = str(tmp_path / "run")
  trainer.train(c, workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if '"loss"' in line]
  assert [r["step"] for r in rows] == [1] and math.isfinite(rows[0]["loss"])
  _, meta = checkpoints.read_backbone_config(os.path.join(workdir, "backbone"))
  assert meta["process"] == LinearMaskProcess.name


def test_the_registry_refuses_what_is_not_a_process():
  with pytest.raises(TypeError, match="not a diffusion Process"):
    registry.register_process(dict)
  with pytest.raises(ValueError, match="built in"):
    registry.register_process(type("Shadow", (LinearMaskProcess,), {"name": "mdlm"}))
  with pytest.raises(ValueError, match="unknown diffusion process 'nope'"):
    diffusion.make_process("nope", V)
  assert LinearMaskProcess.name in registry.names()
  assert registry.get("mdlm") is diffusion.MDLMProcess

