"""Flax DiT == PyTorch DIT, through every source format of the conversion CLI.

Reference: tests/torch_dit.py (written from the public PyTorch code, SDPA attention),
run in float64 so that the only error left is the Flax float32 forward.
Tolerance: relative max logit error <= 1e-4 (max |diff| / max |ref|), as required; the
float32 forward of a 3-block model with O(1) activations is ~1e-6 off float64.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from convert.__main__ import main as convert_main
from tests import fixtures_dit as fx
from tests.torch_dit import DIT, randomize_
from tokendrift_jax import checkpoints
from tokendrift_jax.models.dit import DiTConfig, mdlm_small

REL_TOL = 1e-4
B, L = 3, 16


def _inputs(vocab, seed=0, length=L, batch=B):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=(batch, length)).astype(np.int64)
  sigma = rng.uniform(0.05, 5.0, size=(batch,))
  return ids, sigma


def _torch_ref(model: DIT, ids, sigma, autocast_bf16=False):
  m = model if autocast_bf16 else model.double()
  with torch.no_grad():
    out = m(torch.from_numpy(ids), torch.from_numpy(sigma).to(
        torch.float32 if autocast_bf16 else torch.float64), autocast_bf16=autocast_bf16)
  if not autocast_bf16:
    model.float()
  return out.double().numpy()


def _rel_err(got, ref):
  return float(np.max(np.abs(np.asarray(got, np.float64) - ref)) / np.max(np.abs(ref)))


def _convert(src, dst, *extra):
  rc = convert_main([str(src), str(dst), *extra])
  assert rc == 0, f"conversion failed with exit code {rc}"
  return dst


@pytest.fixture(scope="module")
def models():
  return {arch: fx.build_torch_dit(fx.tiny_cfg(arch), seed=i + 1)
          for i, arch in enumerate(("mdlm", "duo"))}


def test_parameter_order_matches_torch(models):
  from convert.dit import torch_parameter_names
  m = models["mdlm"]
  cfg = DiTConfig.from_dict(m.cfg)
  assert torch_parameter_names(cfg) == [n for n, _ in m.named_parameters()]
  assert cfg.num_params() == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
@pytest.mark.parametrize("fmt", ["hf_safetensors", "hf_bin", "bare_safetensors", "bare_bin",
                                 "lightning"])
def test_parity_every_source_format(models, tmp_path, arch, fmt):
  model = models[arch]
  extra = []
  if fmt.startswith("hf_"):
    src = fx.save_hf_dir(model, str(tmp_path / "hf"), arch, fmt=fmt[3:])
  elif fmt.startswith("bare_"):
    ext = ".safetensors" if fmt.endswith("safetensors") else ".bin"
    # One bare file keeps the 'backbone.' prefix, the other does not: both are accepted.
    src = fx.save_bare(model, str(tmp_path / f"sd{ext}"), prefix="" if ext == ".bin" else
                       "backbone.")
    extra = ["--arch", arch, "--config",
             '{"vocab_size": %d, "hidden_size": %d, "cond_dim": %d, "n_blocks": %d, '
             '"n_heads": %d, "length": %d, "time_conditioning": %s}' % (
                 model.cfg["vocab_size"], model.cfg["hidden_size"], model.cfg["cond_dim"],
                 model.cfg["n_blocks"], model.cfg["n_heads"], model.cfg["length"],
                 "true" if arch == "duo" else "false")]
  else:
    src = fx.save_lightning(model, str(tmp_path / "last.ckpt"), arch)
  dst = _convert(src, tmp_path / "out", *extra)

  f = checkpoints.load_backbone(dst)
  assert f.meta["arch"] == arch
  assert f.config.time_conditioning == (arch == "duo")
  ids, sigma = _inputs(model.cfg["vocab_size"], seed=3)
  got = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  ref = _torch_ref(model, ids, sigma)
  assert got.dtype == np.float32 and got.shape == (B, L, model.cfg["vocab_size"])
  err = _rel_err(got, ref)
  assert err <= REL_TOL, f"{arch}/{fmt}: relative max logit error {err:.2e}"
  if arch == "mdlm":
    # Not time-conditioned: sigma is ignored (the release feeds zeros).
    other = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma * 0 + 3.0, jnp.float32)))
    np.testing.assert_array_equal(got, other)
  else:
    other = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma * 0 + 3.0, jnp.float32)))
    assert np.max(np.abs(other - got)) > 1e-3, "DUO logits must depend on sigma"


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
def test_ema_extraction_from_lightning(models, tmp_path, arch):
  model = models[arch]
  ema = fx.build_torch_dit(model.cfg, seed=99)   # different weights than the raw model
  src = fx.save_lightning(model, str(tmp_path / "last.ckpt"), arch, ema_model=ema)
  ids, sigma = _inputs(model.cfg["vocab_size"], seed=5)
  f_ema = checkpoints.load_backbone(_convert(src, tmp_path / "ema", "--ema"))
  f_raw = checkpoints.load_backbone(_convert(src, tmp_path / "raw"))
  got_ema = np.asarray(f_ema(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  got_raw = np.asarray(f_raw(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  assert _rel_err(got_ema, _torch_ref(ema, ids, sigma)) <= REL_TOL
  assert _rel_err(got_raw, _torch_ref(model, ids, sigma)) <= REL_TOL
  assert f_ema.meta["ema"] is True and f_raw.meta["ema"] is False


# Measured on this CPU (see docs/MODEL.md): Flax bfloat16 vs float64 reference 7e-3..9e-3
# relative max error, and vs PyTorch CPU autocast(bfloat16) of the same weights 7e-3..9e-3.
# bfloat16 has an 8-bit mantissa (relative rounding 2^-9 ~ 2e-3 per op); the bound 3e-2
# leaves room for accumulation over 3 blocks without hiding a real bug (a wrong term
# gives O(1) errors).
BF16_BOUND = 3e-2


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
def test_bfloat16_compute_bound(models, tmp_path, arch):
  model = models[arch]
  dst = _convert(fx.save_hf_dir(model, str(tmp_path / "hf"), arch), tmp_path / "out")
  f16 = checkpoints.load_backbone(dst, dtype=jnp.bfloat16)
  ids, sigma = _inputs(model.cfg["vocab_size"], seed=7)
  got = np.asarray(f16(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  assert got.dtype == np.float32
  err64 = _rel_err(got, _torch_ref(model, ids, sigma))
  err_autocast = _rel_err(got, _torch_ref(model, ids, sigma, autocast_bf16=True))
  print(f"{arch}: bf16 vs float64 {err64:.2e}; vs torch autocast bf16 {err_autocast:.2e}")
  assert err64 <= BF16_BOUND
  assert err_autocast <= BF16_BOUND


def test_hidden_states_match_blocks(models, tmp_path):
  """return_hidden gives each block's output (the drift features use the last two)."""
  model = models["duo"]
  dst = _convert(fx.save_hf_dir(model, str(tmp_path / "hf"), "duo"), tmp_path / "out")
  cfg, params, _ = checkpoints.load_backbone_params(dst)
  dit = checkpoints.merge(checkpoints.graphdef(cfg), params)
  ids, sigma = _inputs(cfg.vocab_size, seed=11)
  logits, hidden = dit(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32),
                       return_hidden=True)
  with torch.no_grad():
    m = model.double()
    _, ref_hidden = m(torch.from_numpy(ids), torch.from_numpy(sigma), return_hidden=True)
    model.float()
  assert len(hidden) == cfg.n_blocks
  for h, r in zip(hidden, ref_hidden):
    assert _rel_err(h, r.numpy()) <= REL_TOL
  # Soft inputs: one-hot embeddings fed as `embeds` equal the id path.
  emb = jnp.asarray(params["vocab_embed"]["embedding"])[jnp.asarray(ids)]
  np.testing.assert_allclose(np.asarray(dit(None, jnp.asarray(sigma, jnp.float32),
                                            embeds=emb)), np.asarray(logits), rtol=0, atol=0)


def test_full_170m_config_converts_and_runs(tmp_path):
  """The released 170M shape: parameter count, conversion round trip, one short forward."""
  cfg = mdlm_small()
  tcfg = dict(cfg.to_dict())
  model = randomize_(DIT(tcfg), seed=0, scale=0.05).eval()
  n_torch = sum(p.numel() for p in model.parameters())
  assert cfg.num_params() == n_torch
  abstract = checkpoints.abstract_params(cfg)
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)) == n_torch
  src = fx.save_bare(model, str(tmp_path / "mdlm170m.safetensors"), prefix="backbone.")
  dst = _convert(src, tmp_path / "out", "--arch", "mdlm", "--config",
                 '{"vocab_size": 50258, "time_conditioning": false}')
  f = checkpoints.load_backbone(dst)
  assert f.config == cfg
  ids, sigma = _inputs(cfg.vocab_size, seed=13, length=8, batch=1)
  got = np.asarray(f(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32)))
  with torch.no_grad():
    ref = model(torch.from_numpy(ids), torch.from_numpy(sigma).float()).double().numpy()
  # Both sides float32 here (a float64 copy of 170M weights would double the memory);
  # the 12-block float32 forward agrees to ~1e-6 relative.
  assert _rel_err(got, ref) <= REL_TOL
  del model
  os.sync()


def test_scan_layers_is_the_same_function(models, tmp_path):
  """lax.scan over stacked block params (and remat) == the unrolled PyTorch network."""
  model = models["duo"]
  dst = _convert(fx.save_hf_dir(model, str(tmp_path / "hf"), "duo"), tmp_path / "out")
  cfg, params, _ = checkpoints.load_backbone_params(dst)
  ids, sigma = _inputs(cfg.vocab_size, seed=17)
  with torch.no_grad():
    m = model.double()
    ref_logits, ref_hidden = m(torch.from_numpy(ids), torch.from_numpy(sigma), return_hidden=True)
    model.float()
  for remat in (False, True):
    dit = checkpoints.merge(checkpoints.graphdef(cfg, scan_layers=True, remat=remat), params)
    logits, hidden = dit(jnp.asarray(ids, jnp.int32), jnp.asarray(sigma, jnp.float32),
                         return_hidden=2)
    assert _rel_err(logits, ref_logits.numpy()) <= REL_TOL
    assert len(hidden) == 2
    for h, r in zip(hidden, ref_hidden[-2:]):
      assert _rel_err(h, r.numpy()) <= REL_TOL
