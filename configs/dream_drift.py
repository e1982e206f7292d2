"""TokenDrift refinement of Dream-v0-Base-7B, unconditional (the paper's method on Dream).

The generator and the frozen encoder are both Dream-v0-Base-7B (``models/dream.py``, the
7B architecture of ``sizes["7b"]``), refined under the ``dream`` process
(``diffusion/dream.py``): masked diffusion with mask ratio (1 − ε)t + ε over the backbone's
**aligned** logits (the raw logit at i − 1 predicts position i, as Dream's
``generation_utils.py`` reads them), the lift p·E at the masked positions with p the
softmax over all ids (mask logit included). The lift, the features and the drift are the
family-generic ones, unchanged: they read the aligned logits and the block outputs.

Paper settings kept (App. F): AdamW at 3e-5, global batch 512 in micro-batches of 8, α = 1,
T = {0.02, 0.05, 0.2}, queues of 1024. Training length 1024 (Dream has rotary positions
only; max_position_embeddings 131072), as configs/llada_drift.py and for the same reasons;
override with ``--config.model.length=...``.

Memory: ~7.6B float32 parameters, AdamW moments, EMA and the frozen encoder copy are
~150 GB, so parameters are FSDP-sharded over every device (mesh (1, -1)) with bf16
compute and rematerialised blocks, as for LLaDA-8B (docs/SHARDING.md).

Checkpoint: ``init_checkpoint`` names the hub release; this project reads converted
checkpoints only, so on a machine without the hub the run stops at once saying what to
download (``huggingface-cli download Dream-org/Dream-v0-Base-7B --local-dir SRC``), how to
convert it (``python -m convert SRC DST``: the family is read from its config.json) and to
pass ``--config.init_checkpoint=DST``; a local converted directory is accepted as it is.

Data: the base config's OpenWebText, tokenized with Dream's (Qwen2.5's) tokenizer.
"""

import ml_collections

from configs import base
from tokendrift_jax import models

DREAM_7B = "Dream-org/Dream-v0-Base-7B"
TRAIN_LENGTH = 1024


def dream_model(size: str = "7b", length: int = TRAIN_LENGTH) -> ml_collections.ConfigDict:
  """``config.model`` for a Dream size of ``models.get_family("dream").sizes``."""
  fields = dict(models.get_family("dream").sizes[size])
  fields.update(length=int(length), dropout=0.0)
  m = ml_collections.ConfigDict(dict(family="dream", **fields))
  m.dtype = "bfloat16"
  m.attention_impl = ""
  m.remat = True
  m.remat_policy = ""
  m.scan_layers = True
  return m


def get_config():
  c = base.get_config()
  c.objective = "drift"
  c.init_checkpoint = DREAM_7B
  c.model = dream_model()
  c.diffusion.process = "dream"
  c.diffusion.sampling_eps = 0.0
  c.diffusion.antithetic = False
  c.optim.lr = 3e-5
  c.batch.global_batch = 512
  c.batch.micro_batch = 8
  c.mesh.shape = (1, -1)
  c.mesh.param_sharding = "fsdp"
  c.data.tokenizer = DREAM_7B
  return c
