"""eval/sampling_eval: samples follow the documented keys on any device count."""

from __future__ import annotations

import chex
import jax
import numpy as np

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.diffusion import make_process
from tokendrift_jax.diffusion import sampling as sampling_lib
from tokendrift_jax.eval import files
from tokendrift_jax.eval import report

LENGTH = 16           # backbone length = sample length (eval_assets)


def test_samples_follow_documented_keys_on_any_device_count(eval_assets, eval_cli_run):
  """Batch b of seed s at NFE n = sampler(fold_in(fold_in(PRNGKey(s), n), b)), on 1 device."""
  out, _ = eval_cli_run
  samples = files.read_jsonl(str(out / "samples.jsonl"))
  cfg, params, _ = checkpoints.load_backbone_params(eval_assets["ckpt"])
  gdef = models.graphdef(cfg)
  sampler = sampling_lib.make_sampler(
      make_process("mdlm", cfg.vocab_size), lambda p, x, s: models.merge(gdef, p)(x, s),
      batch=8, length=LENGTH)
  for nfe, seed in ((2, 1), (4, 0)):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), nfe), 0)
    tokens = np.asarray(sampler(params, key, nfe).tokens)
    want = [s["token_ids"] for s in samples if (s["nfe"], s["seed"]) == (nfe, seed)]
    chex.assert_trees_all_equal(tokens, np.asarray(want))
