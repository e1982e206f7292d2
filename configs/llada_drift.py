"""TokenDrift refinement of LLaDA-8B-Base, unconditional (the paper's method on LLaDA).

The generator and the frozen encoder are both LLaDA-8B-Base (``models/llada.py``, the
8B architecture of ``sizes["8b"]``), refined under LLaDA's own masked process
(``diffusion/llada.py``): mask ratio (1 − ε)t + ε with t ~ U[0, 1) (sampling_eps 0, no
antithetic strata, as LLaDA's ``forward_process``), the lift p·E at the masked positions
with p the softmax over all ids (mask logit included, as LLaDA's loss and sampler).

Paper settings kept (App. F): AdamW at 3e-5, global batch 512 in micro-batches of 8, α = 1,
T = {0.02, 0.05, 0.2}, queues of 1024.

Training length 1024 (LLaDA-8B was pretrained at 4096): the paper refines at 1024, so 512
rows keep its 0.5M tokens per step and the drift compares features pooled over as many
positions; at 4096 every step would cost ~4x the tokens (and more attention) of a paper
step for an 8B generator plus three encoder passes. LLaDA has no absolute positions
(rotary only) and saw random-length crops in pretraining, so 1024-token rows are inputs
it knows. Override with ``--config.model.length=4096`` if the budget allows.

Memory: 8B float32 parameters, AdamW moments, EMA and the frozen encoder copy are
~160 GB, so parameters are FSDP-sharded over every device (mesh (1, -1)); bf16 compute and
rematerialised blocks bound the activations. A micro-batch is split over data x fsdp, so
the paper's 8 rows fill at most 8 such devices: beyond that add a tensor axis, e.g.
``--config.mesh.shape=(1,8,8) --config.mesh.param_sharding=rules`` on 64 devices
(docs/SHARDING.md), or raise ``batch.micro_batch``.

Data: the base config's OpenWebText, tokenized with LLaDA's tokenizer.
"""

import ml_collections

from configs import base
from tokendrift_jax import models

LLADA_8B = "GSAI-ML/LLaDA-8B-Base"
TRAIN_LENGTH = 1024


def llada_model(size: str = "8b", length: int = TRAIN_LENGTH) -> ml_collections.ConfigDict:
  """``config.model`` for a LLaDA size of ``models.get_family("llada").sizes``."""
  fields = dict(models.get_family("llada").sizes[size])
  fields.update(length=int(length), dropout=0.0, embedding_dropout=0.0)
  m = ml_collections.ConfigDict(dict(family="llada", **fields))
  m.dtype = "bfloat16"
  m.attention_impl = ""
  m.remat = True
  m.remat_policy = ""
  m.scan_layers = True
  return m


def get_config():
  c = base.get_config()
  c.objective = "drift"
  c.init_checkpoint = LLADA_8B
  c.model = llada_model()
  c.diffusion.process = "llada"
  c.diffusion.sampling_eps = 0.0
  c.diffusion.antithetic = False
  c.optim.lr = 3e-5
  c.batch.global_batch = 512
  c.batch.micro_batch = 8
  c.mesh.shape = (1, -1)
  c.mesh.param_sharding = "fsdp"
  c.data.tokenizer = LLADA_8B
  return c
