"""Flax DiT == PyTorch DIT, through every source format of the conversion CLI.

Reference: tests/references/torch_dit.py (written from the public PyTorch code, SDPA
attention), run in float64 so that the only error left is the Flax float32 forward.
Tolerance: relative max logit error <= 1e-4 (max |diff| / max |ref|), as required; the
float32 forward of a 3-block model with O(1) activations is ~1e-6 off float64.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from tests.references.torch_dit import reference_logits
from tokendrift_jax import checkpoints
from tokendrift_jax.models.dit import DiTConfig

REL_TOL = 1e-4
B, L = 3, 16


def test_parameter_order_matches_torch(torch_dits):
  from convert.dit import torch_parameter_names
  m = torch_dits["mdlm"]
  cfg = DiTConfig.from_dict(m.cfg)
  assert torch_parameter_names(cfg) == [n for n, _ in m.named_parameters()]
  assert cfg.num_params() == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
@pytest.mark.parametrize("fmt", ["hf_safetensors", "hf_bin", "bare_safetensors", "bare_bin",
                                 "lightning"])
def test_parity_every_source_format(torch_dits, tmp_path, arch, fmt, save_hf_dir, save_bare,
                                    save_lightning, convert_dit, dit_inputs, rel_err):
  model = torch_dits[arch]
  extra = []
  if fmt.startswith("hf_"):
    src = save_hf_dir(model, str(tmp_path / "hf"), arch, fmt=fmt[3:])
  elif fmt.startswith("bare_"):
    ext = ".safetensors" if fmt.endswith("safetensors") else ".bin"
    # One bare file keeps the 'backbone.' prefix, the other does not: both are accepted.
    src = save_bare(model, str(tmp_path / f"sd{ext}"), prefix="" if ext == ".bin" else
                    "backbone.")
    extra = ["--process", arch, "--config",
             '{"vocab_size": %d, "hidden_size": %d, "cond_dim": %d, "n_blocks": %d, '
             '"n_heads": %d, "length": %d, "time_conditioning": %s}' % (
                 model.cfg["vocab_size"], model.cfg["hidden_size"], model.cfg["cond_dim"],
                 model.cfg["n_blocks"], model.cfg["n_heads"], model.cfg["length"],
                 "true" if arch == "duo" else "false")]
  else:
    src = save_lightning(model, str(tmp_path / "last.ckpt"), arch)
  dst = convert_dit(src, tmp_path / "out", *extra)

  f = checkpoints.load_backbone(dst)
  assert f.meta["process"] == arch
  assert f.config.time_conditioning == (arch == "duo")
  ids, sigma = dit_inputs(model.cfg["vocab_size"], seed=3)
  got = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  ref = reference_logits(model, ids, sigma)
  chex.assert_type(got, np.float32)
  chex.assert_shape(got, (B, L, model.cfg["vocab_size"]))
  # rel_err: max |diff| relative to the largest logit (not elementwise; module docstring).
  err = rel_err(got, ref)
  assert err <= REL_TOL, f"{arch}/{fmt}: relative max logit error {err:.2e}"
  if arch == "mdlm":
    # Not time-conditioned: sigma is ignored (the release feeds zeros).
    other = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma * 0 + 3.0, jnp.float32)))
    chex.assert_trees_all_equal(got, other)
  else:
    other = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma * 0 + 3.0, jnp.float32)))
    # A lower bound (the logits must change): chex has no "arrays differ" assert.
    assert np.max(np.abs(other - got)) > 1e-3, "DUO logits must depend on sigma"


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
def test_ema_extraction_from_lightning(torch_dits, tmp_path, arch, build_torch_dit, save_lightning,
                                       convert_dit, dit_inputs, rel_err):
  model = torch_dits[arch]
  ema = build_torch_dit(model.cfg, seed=99)   # different weights than the raw model
  src = save_lightning(model, str(tmp_path / "last.ckpt"), arch, ema_model=ema)
  ids, sigma = dit_inputs(model.cfg["vocab_size"], seed=5)
  f_ema = checkpoints.load_backbone(convert_dit(src, tmp_path / "ema", "--ema"))
  f_raw = checkpoints.load_backbone(convert_dit(src, tmp_path / "raw"))
  got_ema = np.asarray(f_ema(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  got_raw = np.asarray(f_raw(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  assert rel_err(got_ema, reference_logits(ema, ids, sigma)) <= REL_TOL
  assert rel_err(got_raw, reference_logits(model, ids, sigma)) <= REL_TOL
  assert f_ema.meta["ema"] is True and f_raw.meta["ema"] is False


