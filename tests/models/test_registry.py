"""A backbone family needs no edit outside its own files: a toy family registered here.

The family below (a one-block MLP-mixer, written for this test only) is registered from
the test alone; training then runs one continuation step and one TokenDrift step with it
through the same trainer, checkpoints, step builder and FLOP accounting as the DiT.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.objectives import tokendrift
from tokendrift_jax.perf import flops as flops_lib
from tokendrift_jax.train import builder
from tokendrift_jax.train import trainer


@dataclasses.dataclass(frozen=True)
class MixerConfig:
  vocab_size: int = 33
  length: int = 16
  hidden_size: int = 16
  dropout: float = 0.0

  @property
  def feature_dim(self) -> int:
    return 2 * self.hidden_size

  @property
  def mask_id(self) -> int:
    return self.vocab_size - 1

  @property
  def time_conditioned(self) -> bool:
    return False

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d):
    return cls(**d)

  def num_params(self) -> int:
    v, d, n = self.vocab_size, self.hidden_size, self.length
    return v * d + (n * n + n) + (d * d + d) + (d * v + v)


class Mixer(nnx.Module):
  """Embedding -> token-mixing Linear over L -> channel Linear over d -> output Linear."""

  def __init__(self, cfg: MixerConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, **unused):
    del unused  # attention / remat / scan options: this toy has none
    self.cfg, self.dtype = cfg, dtype
    self.table = nnx.Param(jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.hidden_size)))
    self.token_mix = nnx.Linear(cfg.length, cfg.length, rngs=rngs)
    self.channel_mix = nnx.Linear(cfg.hidden_size, cfg.hidden_size, rngs=rngs)
    self.out = nnx.Linear(cfg.hidden_size, cfg.vocab_size, rngs=rngs)

  def embedding_table(self):
    return self.table[...]

  def __call__(self, input_ids=None, sigma=None, *, embeds=None, dropout_rng=None,
               return_hidden=False):
    del sigma, dropout_rng
    x = jnp.take(self.table[...], input_ids, axis=0) if embeds is None else embeds
    h1 = x + jax.nn.gelu(self.token_mix(x.swapaxes(1, 2))).swapaxes(1, 2)
    h2 = h1 + jax.nn.gelu(self.channel_mix(h1))
    logits = self.out(h2).astype(jnp.float32)
    if return_hidden:
      k = 2 if return_hidden is True else int(return_hidden)
      return logits, [h1, h2][2 - k:]
    return logits


@dataclasses.dataclass(frozen=True)
class MixerFlops:
  cfg: MixerConfig

  def forward(self, length, *, output_layer):
    d, v = self.cfg.hidden_size, self.cfg.vocab_size
    return 2 * length * length * d + 2 * length * d * d + (2 * length * d * v if output_layer else 0)

  def backward(self, length):
    return 2 * self.forward(length, output_layer=True)

  def input_backward(self, length):
    return self.forward(length, output_layer=False)

  def shared_forward(self, length):
    return 0

  def recompute(self, length, policy, *, weight_grads):
    return 0

  def lift(self, length):
    return 2 * length * self.cfg.vocab_size * self.cfg.hidden_size


TOY = models.base.Family(name="toy_mixer", config_cls=MixerConfig, module_cls=Mixer,
                         flops=MixerFlops)


@pytest.fixture
def toy_family():
  models.register(TOY)
  yield TOY
  models._REGISTRY.pop(TOY.name, None)  # pylint: disable=protected-access


def _config(tmp_path, process: str, objective: str, init: str):
  from configs import base  # pylint: disable=import-outside-toplevel
  cfg = MixerConfig()
  rows = np.random.default_rng(0).integers(0, cfg.vocab_size - 1, (32, cfg.length))
  np.save(tmp_path / "train.npy", rows.astype(np.int32))
  c = base.get_config()
  c.model = ml_collections.ConfigDict(dict(cfg.to_dict(), family="toy_mixer", dtype="float32",
                                           attention_impl="", remat=False, remat_policy="",
                                           scan_layers=False))
  c.diffusion.process, c.objective, c.init_checkpoint = process, objective, init
  c.data.kind, c.data.train_tokens = "tokens", str(tmp_path / "train.npy")
  c.batch.global_batch = c.batch.micro_batch = 8
  c.batch.eval_global_batch = 8
  c.drift.queue_size = 16
  c.train.update(dict(steps=1, log_every=1, eval_every=0, progress=False))
  return c


def test_toy_family_trains_with_both_objectives(toy_family, tmp_path):
  # One process is enough: the family is what is under test (both processes are covered
  # with the DiT); each objective costs a compile of the tiny step.
  process = "mdlm"
  cfg = MixerConfig()
  params = jax.tree.map(lambda x: np.asarray(x) + 0.1, models.init_params(cfg, seed=1))
  init = checkpoints.save_backbone(tmp_path / "init", cfg, params, meta={"process": process})
  loaded_cfg, meta = checkpoints.read_backbone_config(init)
  assert loaded_cfg == cfg and meta["family"] == "toy_mixer" and meta["process"] == process
  for objective in ("continuation", "drift"):
    c = _config(tmp_path, process, objective, init)
    out = trainer.train(c, str(tmp_path / objective))
    assert out["step"] == 1 and np.isfinite(out["metrics"]["loss"])
    assert out["metrics"]["grad_norm"] > 0
    _, exported, meta = checkpoints.load_backbone_params(out["backbone"])
    assert meta["family"] == "toy_mixer"
    # A lower bound (the step must move some parameter): chex has no "trees differ" assert.
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), exported, params))
    assert max(moved) > 0
  # FLOP accounting asks the family.
  parts = builder.build_step(_config(tmp_path, process, "drift", init))
  count = flops_lib.step_flops(parts.model_cfg, objective=parts.objective, length=cfg.length,
                               micro_batch=8)
  assert count.terms["generator_fwd"] == 8 * MixerFlops(cfg).forward(16, output_layer=True)
  assert count.terms["drift"] == tokendrift.drift_per_microstep(
      8, cfg.feature_dim, parts.objective.queue_size, 3)


def test_unknown_family_is_named(tmp_path):
  c = _config(tmp_path, "mdlm", "continuation", "")
  c.model.family = "nope"
  with pytest.raises(trainer.TrainError, match="unknown model family 'nope'"):
    builder.build_step(c)
