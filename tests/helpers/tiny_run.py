"""Tiny backbones, token arrays and configs for training tests (no torch, no hub).

A plain module, not tests: tests/conftest.py exposes these as fixtures (tiny_run_config,
with_periodic_eval, tiny_model_config, random_params, make_tokens, tiny_lang), and the run
config files of the launch/train.py subprocess tests import it in the child process.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from configs import base
from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.models.dit import DiTConfig

TINY = dict(vocab_size=33, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, length=16,
            dropout=0.1, mlp_ratio=4)


def tiny_model_config(arch: str, **over) -> DiTConfig:
  fields = dict(TINY, time_conditioning=(arch == "duo"))
  fields.update(over)
  return DiTConfig(**fields)


def random_params(config: DiTConfig, seed: int) -> dict:
  """Initial params with every leaf perturbed: adaLN and the output layer start at zero."""
  params = models.init_params(config, seed)
  rng = np.random.default_rng(seed + 1000)
  return jax.tree.map(
      lambda x: np.asarray(x) + 0.2 * rng.standard_normal(np.shape(x)).astype(np.float32),
      params)


def make_backbone(path: str, arch: str = "mdlm", seed: int = 0, **over) -> str:
  cfg = tiny_model_config(arch, **over)
  checkpoints.save_backbone(path, cfg, random_params(cfg, seed), meta={"process": arch})
  return path


def make_tokens(path: str, n: int, length: int, vocab: int, seed: int) -> str:
  """Rows of ids in [0, vocab) with some repeated structure (so losses move)."""
  rng = np.random.default_rng(seed)
  base_rows = rng.integers(0, vocab, size=(8, length))
  rows = base_rows[rng.integers(0, 8, size=n)]
  noise = rng.random((n, length)) < 0.2
  rows = np.where(noise, rng.integers(0, vocab, size=(n, length)), rows)
  np.save(path, rows.astype(np.int32))
  return path


def tiny_config(tmp: str, arch: str = "mdlm", objective: str = "drift", *, steps: int = 3,
                mesh_shape=(-1, 1), num_devices: int = 0, param_sharding: str = "replicated",
                global_batch: int = 16, micro_batch: int = 8, queue_size: int = 24,
                seed: int = 0):
  """A complete tiny run config with its backbone and data written under ``tmp``."""
  os.makedirs(tmp, exist_ok=True)
  mcfg = tiny_model_config(arch)
  vocab_text = mcfg.vocab_size - 1 if arch == "mdlm" else mcfg.vocab_size
  init = os.path.join(tmp, "init")
  if not os.path.isdir(init):
    make_backbone(init, arch, seed=7)
  train_npy = os.path.join(tmp, "train.npy")
  valid_npy = os.path.join(tmp, "valid.npy")
  if not os.path.exists(train_npy):
    make_tokens(train_npy, 96, mcfg.length, vocab_text, seed=1)
    make_tokens(valid_npy, 32, mcfg.length, vocab_text, seed=2)
  c = base.get_config()
  c.seed = seed
  c.diffusion.process = arch
  c.objective = objective
  c.init_checkpoint = init
  c.model.update({k: v for k, v in mcfg.to_dict().items()})
  c.model.dtype = "float32"
  c.data.kind = "tokens"
  c.data.train_tokens = train_npy
  c.data.valid_tokens = valid_npy
  c.batch.global_batch = global_batch
  c.batch.micro_batch = micro_batch
  c.batch.eval_global_batch = 8
  c.mesh.shape = tuple(mesh_shape)
  c.mesh.num_devices = num_devices
  c.mesh.param_sharding = param_sharding
  c.drift.queue_size = queue_size
  c.optim.lr = 1e-3   # large enough that parameters visibly move in 3 steps
  c.train.steps = steps
  c.train.log_every = 1
  c.train.checkpoint_every = 1000
  c.train.eval_every = 0
  c.train.progress = False
  return c


# A synthetic language whose MDLM vocabulary (32 + mask) is TINY's.
TINY_LANG = dict(seed=3, vocab_size=32, n_topics=2, order=1, successors=4, topic_vocab_size=16,
                 concentration=1.0, floor=0.01)


def with_periodic_eval(c, every: int, nfe=(2,), num_samples: int = 8, batch: int = 4):
  """Turns on validation NLL and the Fig. 2 sampling hook of a tiny MDLM config (judged
  by TINY_LANG), both every ``every`` steps."""
  c.train.eval_every, c.train.eval_batches = every, 2
  se = c.sample_eval
  se.enabled, se.every, se.nfe = True, every, tuple(nfe)
  se.num_samples, se.batch = num_samples, batch
  se.judge_kind = "synthetic"
  se.synthetic.update(TINY_LANG)
  return c


# ---------------------------------------------------------------------- tiny LLaDA runs
# A tiny LLaDA (models/llada.py) under LLaDA's process. Sizes are pairwise distinct and the
# embedding and output layer (256 x 64 = 2^14 elements) reach sharding's FSDP threshold,
# so (4, 2) + fsdp really splits parameters. The mask id is inside the vocabulary but not
# its last id, as the 8B's (126336 of 126464); clean data is drawn below it.

TINY_LLADA = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                  mlp_hidden_size=96, length=16, rope_theta=500000.0, rms_norm_eps=1e-5,
                  mask_token_id=250, weight_tying=False, rope_full_precision=True,
                  dropout=0.0, embedding_dropout=0.0)
TINY_LLADA_TEXT_VOCAB = 250  # clean ids are drawn from [0, mask id)


def tiny_llada_config(**over):
  from tokendrift_jax.models.llada import LLaDAConfig  # pylint: disable=import-outside-toplevel
  return LLaDAConfig(**dict(TINY_LLADA, **over))


def make_llada_backbone(path: str, seed: int = 0, **over) -> str:
  """A tiny LLaDA backbone with every leaf perturbed (its RMSNorm weights start at one)."""
  cfg = tiny_llada_config(**over)
  checkpoints.save_backbone(path, cfg, random_params(cfg, seed), meta={"process": "llada"})
  return path


def make_prompt_lengths(tokens_path: str, length: int, seed: int) -> str:
  """The companion ``<stem>.prompt_lengths.npy`` of ``tokens_path``: int32 [N] prompt
  lengths in [1, length - 1] (every row has a prompt and a completion)."""
  from tokendrift_jax.data import tokens  # pylint: disable=import-outside-toplevel
  n = np.load(tokens_path, mmap_mode="r").shape[0]
  rng = np.random.default_rng(seed)
  path = tokens.prompt_lengths_path(tokens_path)
  np.save(path, rng.integers(1, length, size=n).astype(np.int32))
  return path


TINY_DREAM = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, length=16,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, mask_token_id=250,
                  tie_word_embeddings=False, dropout=0.0)


def tiny_dream_run_config(tmp: str, objective: str = "drift", *, prompt_mode: str = "none",
                          prompt_length: int = 0, global_batch: int = 16, micro_batch: int = 8,
                          queue_size: int = 24, seed: int = 0):
  """A complete tiny Dream run config (configs/dream_drift.py with the tiny architecture),
  its backbone (every leaf perturbed: norms and biases start at one and zero) and token
  data written under ``tmp`` (once)."""
  # pylint: disable=import-outside-toplevel
  from configs import dream_drift
  from tokendrift_jax.models.dream import DreamConfig
  os.makedirs(tmp, exist_ok=True)
  init = os.path.join(tmp, "dream_init")
  if not os.path.isdir(init):
    cfg = DreamConfig(**TINY_DREAM)
    checkpoints.save_backbone(init, cfg, random_params(cfg, 11), meta={"process": "dream"})
  train_npy = os.path.join(tmp, "dream_train.npy")
  if not os.path.exists(train_npy):
    make_tokens(train_npy, 96, TINY_DREAM["length"], TINY_LLADA_TEXT_VOCAB, seed=5)
    make_tokens(os.path.join(tmp, "dream_valid.npy"), 32, TINY_DREAM["length"],
                TINY_LLADA_TEXT_VOCAB, seed=6)
  c = dream_drift.get_config()
  c.seed = seed
  c.objective = objective
  c.init_checkpoint = init
  c.model.update(TINY_DREAM)
  c.model.dtype = "float32"
  c.model.remat = False
  c.data.kind = "tokens"
  c.data.train_tokens = train_npy
  c.data.valid_tokens = os.path.join(tmp, "dream_valid.npy")
  c.batch.global_batch = global_batch
  c.batch.micro_batch = micro_batch
  c.batch.eval_global_batch = 8
  c.mesh.shape = (1, 1)
  c.mesh.num_devices = 1
  c.mesh.param_sharding = "replicated"
  c.prompt.mode = prompt_mode
  c.prompt.length = prompt_length
  c.drift.queue_size = queue_size
  c.optim.lr = 1e-3   # large enough that parameters visibly move in one step
  c.train.steps = 1
  c.train.log_every = 1
  c.train.checkpoint_every = 1000
  c.train.eval_every = 0
  c.train.progress = False
  return c


def tiny_llada_run_config(tmp: str, objective: str = "drift", *, steps: int = 1,
                          mesh_shape=(-1, 1), num_devices: int = 0,
                          param_sharding: str = "replicated", global_batch: int = 16,
                          micro_batch: int = 8, queue_size: int = 24, prompt_mode: str = "none",
                          prompt_length: int = 0, pool: str = "all", seed: int = 0):
  """A complete tiny LLaDA run config (configs/llada_drift.py with the tiny architecture),
  its backbone and token data (with prompt lengths) written under ``tmp`` (once)."""
  from configs import llada_drift  # pylint: disable=import-outside-toplevel
  os.makedirs(tmp, exist_ok=True)
  init = os.path.join(tmp, "llada_init")
  if not os.path.isdir(init):
    make_llada_backbone(init, seed=7)
  train_npy = os.path.join(tmp, "llada_train.npy")
  valid_npy = os.path.join(tmp, "llada_valid.npy")
  if not os.path.exists(train_npy):
    make_tokens(train_npy, 96, TINY_LLADA["length"], TINY_LLADA_TEXT_VOCAB, seed=1)
    make_tokens(valid_npy, 32, TINY_LLADA["length"], TINY_LLADA_TEXT_VOCAB, seed=2)
    make_prompt_lengths(train_npy, TINY_LLADA["length"], seed=3)
    make_prompt_lengths(valid_npy, TINY_LLADA["length"], seed=4)
  c = llada_drift.get_config()
  c.seed = seed
  c.objective = objective
  c.init_checkpoint = init
  c.model.update(TINY_LLADA)
  c.model.dtype = "float32"
  c.model.remat = False
  c.data.kind = "tokens"
  c.data.train_tokens = train_npy
  c.data.valid_tokens = valid_npy
  c.batch.global_batch = global_batch
  c.batch.micro_batch = micro_batch
  c.batch.eval_global_batch = 8
  c.mesh.shape = tuple(mesh_shape)
  c.mesh.num_devices = num_devices
  c.mesh.param_sharding = param_sharding
  c.prompt.mode = prompt_mode
  c.prompt.length = prompt_length
  c.drift.pool = pool
  c.drift.queue_size = queue_size
  c.optim.lr = 1e-3   # large enough that parameters visibly move in one step
  c.train.steps = steps
  c.train.log_every = 1
  c.train.checkpoint_every = 1000
  c.train.eval_every = 0
  c.train.progress = False
  return c
