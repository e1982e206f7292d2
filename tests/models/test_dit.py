"""Flax DiT == the PyTorch DIT reference: bfloat16 compute, hidden states, the released 170M
shape, lax.scan over layers; attention and remat options.

Reference: tests/references/torch_dit.py (written from the public PyTorch code, SDPA
attention), run in float64 so that the only error left is the Flax float32 forward. The
weights reach Flax through the conversion CLI (tests/convert/test_dit.py checks every
source format). Tolerance: relative max logit error <= 1e-4 (max |diff| / max |ref|).
"""

from __future__ import annotations

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from tests.references.torch_dit import DIT, randomize_, reference_logits
from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.models import common
from tokendrift_jax.models.dit import DiT, DiTConfig, mdlm_small

REL_TOL = 1e-4


# Measured on this CPU (see docs/MODEL.md): Flax bfloat16 vs float64 reference 7e-3..9e-3
# relative max error, and vs PyTorch CPU autocast(bfloat16) of the same weights 7e-3..9e-3.
# bfloat16 has an 8-bit mantissa (relative rounding 2^-9 ~ 2e-3 per op); the bound 3e-2
# leaves room for accumulation over 3 blocks without hiding a real bug (a wrong term
# gives O(1) errors).
BF16_BOUND = 3e-2


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
def test_bfloat16_compute_bound(torch_dits, tmp_path, arch, save_hf_dir, convert_dit, dit_inputs,
                                rel_err):
  model = torch_dits[arch]
  dst = convert_dit(save_hf_dir(model, str(tmp_path / "hf"), arch), tmp_path / "out")
  f16 = checkpoints.load_backbone(dst, dtype=jnp.bfloat16)
  ids, sigma = dit_inputs(model.cfg["vocab_size"], seed=7)
  got = np.asarray(f16(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  chex.assert_type(got, np.float32)
  err64 = rel_err(got, reference_logits(model, ids, sigma))
  err_autocast = rel_err(got, reference_logits(model, ids, sigma, autocast_bf16=True))
  print(f"{arch}: bf16 vs float64 {err64:.2e}; vs torch autocast bf16 {err_autocast:.2e}")
  assert err64 <= BF16_BOUND
  assert err_autocast <= BF16_BOUND


def test_hidden_states_match_blocks(torch_dits, tmp_path, save_hf_dir, convert_dit, dit_inputs,
                                    rel_err):
  """return_hidden gives each block's output (the drift features use the last two)."""
  model = torch_dits["duo"]
  dst = convert_dit(save_hf_dir(model, str(tmp_path / "hf"), "duo"), tmp_path / "out")
  cfg, params, _ = checkpoints.load_backbone_params(dst)
  dit = models.merge(models.graphdef(cfg), params)
  ids, sigma = dit_inputs(cfg.vocab_size, seed=11)
  logits, hidden = dit(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32),
                       return_hidden=True)
  with torch.no_grad():
    m = model.double()
    _, ref_hidden = m(torch.from_numpy(ids), torch.from_numpy(sigma), return_hidden=True)
    model.float()
  assert len(hidden) == cfg.n_blocks
  # rel_err: relative to the largest activation (not elementwise), as in the module docstring.
  for h, r in zip(hidden, ref_hidden):
    assert rel_err(h, r.numpy()) <= REL_TOL
  # Soft inputs: one-hot embeddings fed as `embeds` equal the id path.
  emb = jnp.asarray(params["vocab_embed"]["embedding"])[jnp.asarray(ids)]
  chex.assert_trees_all_equal(dit(None, jnp.asarray(sigma, jnp.float32), embeds=emb), logits)


@pytest.mark.slow
def test_full_170m_config_converts_and_runs(tmp_path, save_bare, convert_dit, dit_inputs, rel_err):
  """The released 170M shape: parameter count, conversion round trip, one short forward.
  Slow (~15 s); the suite's conversion parity runs on the tiny DiTs (tests/convert)."""
  cfg = mdlm_small()
  tcfg = dict(cfg.to_dict())
  model = randomize_(DIT(tcfg), seed=0, scale=0.05).eval()
  n_torch = sum(p.numel() for p in model.parameters())
  assert cfg.num_params() == n_torch
  abstract = models.abstract_params(cfg)
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)) == n_torch
  src = save_bare(model, str(tmp_path / "mdlm170m.safetensors"), prefix="backbone.")
  dst = convert_dit(src, tmp_path / "out", "--process", "mdlm", "--config",
                 '{"vocab_size": 50258, "time_conditioning": false}')
  f = checkpoints.load_backbone(dst)
  assert f.config == cfg
  ids, sigma = dit_inputs(cfg.vocab_size, seed=13, length=8, batch=1)
  got = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  with torch.no_grad():
    ref = model(torch.from_numpy(ids), torch.from_numpy(sigma).float()).double().numpy()
  # Both sides float32 here (a float64 copy of 170M weights would double the memory);
  # the 12-block float32 forward agrees to ~1e-6 relative.
  assert rel_err(got, ref) <= REL_TOL
  del model
  os.sync()


def test_scan_layers_is_the_same_function(torch_dits, tmp_path, save_hf_dir, convert_dit,
                                          dit_inputs, rel_err):
  """lax.scan over stacked block params (and remat) == the unrolled PyTorch network."""
  model = torch_dits["duo"]
  dst = convert_dit(save_hf_dir(model, str(tmp_path / "hf"), "duo"), tmp_path / "out")
  cfg, params, _ = checkpoints.load_backbone_params(dst)
  ids, sigma = dit_inputs(cfg.vocab_size, seed=17)
  with torch.no_grad():
    m = model.double()
    ref_logits, ref_hidden = m(torch.from_numpy(ids), torch.from_numpy(sigma), return_hidden=True)
    model.float()
  for remat in (False, True):
    dit = models.merge(models.graphdef(cfg, scan_layers=True, remat=remat), params)
    logits, hidden = dit(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32),
                         return_hidden=2)
    assert rel_err(logits, ref_logits.numpy()) <= REL_TOL
    assert len(hidden) == 2
    for h, r in zip(hidden, ref_hidden[-2:]):
      assert rel_err(h, r.numpy()) <= REL_TOL


def test_attention_auto_and_errors():
  # No GPU here: "auto" is XLA's attention; on a GPU in bf16 it is cuDNN's.
  assert common.resolve_attention_impl("auto", jnp.bfloat16, 64) == "xla"
  assert common.resolve_attention_impl("cudnn", jnp.float32, 64) == "cudnn"
  with pytest.raises(ValueError, match="attention_impl"):
    common.check_attention_impl("flash")
  with pytest.raises(ValueError, match="remat policy"):
    DiT(DiTConfig(vocab_size=8, hidden_size=8, cond_dim=4, n_blocks=2, n_heads=2, length=4),
        remat=True, remat_policy="save_all", rngs=nnx.Rngs(0))
