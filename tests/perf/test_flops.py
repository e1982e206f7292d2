"""Analytic FLOP count vs XLA: per-pass formulas, remat recompute, the drift term, step
bookkeeping.

The analytic count (tokendrift_jax/perf/flops.py) is checked against XLA's own program: the
FLOPs of every dot instruction of the optimised HLO (exact: both count 2 · MACs). No timing
is asserted.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokendrift_jax.drift import objective as obj
from tokendrift_jax.drift import queue as qlib
from tokendrift_jax.models import dit as dit_lib
from tokendrift_jax.drift.objective import DriftConfig
from tokendrift_jax.models.dit import DiT, DiTConfig
from tokendrift_jax.objectives import tokendrift
from tokendrift_jax.objectives.continuation import Continuation
from tokendrift_jax.objectives.tokendrift import TokenDrift
from tokendrift_jax.perf import benchmark as bench
from tokendrift_jax.perf import flops
from tokendrift_jax.perf import hlo


def _tiny_dit(policy: str | None):
  cfg = DiTConfig(vocab_size=96, hidden_size=64, cond_dim=16, n_blocks=2, n_heads=2,
                  length=16, dropout=0.0)
  model = nnx.eval_shape(lambda: DiT(cfg, remat=policy is not None,
                                     remat_policy=policy or "", rngs=nnx.Rngs(0)))
  return cfg, nnx.split(model, nnx.Param)[0]


def _passes_program(gdef):
  """Generator fwd+bwd (weight grads) and encoder fwd+bwd-to-inputs, in one program."""
  def program(p_gen, p_enc, ids, embeds, key):
    def gen_loss(p):
      logits = nnx.merge(gdef, p)(ids, None, dropout_rng=key)
      return jnp.sum(logits * logits)

    # Built outside the grad trace, as the frozen encoder of the drift step is.
    encoder = nnx.merge(gdef, jax.lax.stop_gradient(p_enc))

    def enc_out(e):
      hidden = encoder(None, None, embeds=e, return_hidden=2)[1]
      return jnp.sum(hidden[0] * hidden[1])

    return jax.grad(gen_loss)(p_gen), jax.grad(enc_out)(embeds)
  return program


def _pass_flops(cfg, b: int, policy: str | None) -> int:
  L, f, fm = cfg.length, dit_lib.FREQ_EMBED_DIM, dit_lib.DiTFlops(cfg)
  gen = fm.forward(L, output_layer=True)
  enc = fm.forward(L, output_layer=False)
  linear = cfg.n_blocks * L * fm.block_linear_per_token()
  attn = cfg.n_blocks * L * fm.attention_per_token(L)
  total = b * (gen + (2 * gen - 2 * f * cfg.cond_dim) + enc + linear + 2 * attn)
  if policy is not None:
    total += b * (fm.recompute(L, policy, weight_grads=True)
                  + fm.recompute(L, policy, weight_grads=False))
  return total


def test_pass_formulas_match_hlo_and_full_remat_keeps_values():
  """Per-pass counts (+ recompute) == the program's dot FLOPs; remat changes no value.

  The "dots_with_no_batch_dims_saveable" recompute formula was checked the same way
  (docs/PERFORMANCE.md); it is left out here to keep the suite's compile time down.
  """
  b = 3
  runs = {}
  for policy in (None, "nothing_saveable"):
    cfg, gdef = _tiny_dit(policy)
    p_gen = jax.tree.map(jnp.asarray, bench.random_params(cfg, 0))
    p_enc = jax.tree.map(jnp.asarray, bench.random_params(cfg, 5))
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, cfg.length)), jnp.int32)
    embeds = jnp.asarray(rng.standard_normal((b, cfg.length, cfg.hidden_size)), jnp.float32)
    args = (p_gen, p_enc, ids, embeds, jax.random.key(1))
    compiled = jax.jit(_passes_program(gdef)).lower(*args).compile()
    assert hlo.dot_flops(compiled.as_text()) == _pass_flops(cfg, b, policy), policy
    runs[policy] = compiled(*args)
  # The same operations are recomputed; only XLA's fusion of them may differ (float32
  # reassociation, ~1e-7 relative), so 1e-5 is loose for equal functions and tight for any
  # real change of the function.
  chex.assert_trees_all_close(runs["nothing_saveable"], runs[None], rtol=1e-5, atol=1e-6)


def test_drift_term_matches_hlo(compiled_text):
  """4·N·m·(N+Q)·(1+T): the distance cross terms and weighted sums of both sets."""
  n, m, q = 4, 8, 16
  config = obj.DriftConfig(queue_size=q)
  rng = np.random.default_rng(0)
  unit = lambda s: jnp.asarray(rng.standard_normal(s) / np.sqrt(s[-1]), jnp.float32)

  def drift(h, u, buf_r, buf_g):
    full = lambda b: qlib.FeatureQueue(b, jnp.zeros((), jnp.int32), jnp.full((), q, jnp.int32))
    return obj.drift_from_features(h, u, full(buf_r), full(buf_g), config)[0]

  text = compiled_text(drift, unit((n, m)), unit((n, m)), unit((q, m)), unit((q, m)))
  assert hlo.dot_flops(text) == tokendrift.drift_per_microstep(n, m, q, len(config.temperatures))


def test_step_flops_bookkeeping():
  cfg = DiTConfig(vocab_size=100, hidden_size=32, cond_dim=8, n_blocks=3, n_heads=4,
                  length=16)
  drift = TokenDrift(config=DriftConfig(queue_size=8), feature_dim=cfg.feature_dim)
  one = flops.step_flops(cfg, objective=drift, length=16, micro_batch=2, n_micro=1)
  three = flops.step_flops(cfg, objective=drift, length=16, micro_batch=2, n_micro=3)
  assert three.model == 3 * one.model and three.tokens == 3 * 2 * 16
  assert one.terms["drift"] == tokendrift.drift_per_microstep(2, cfg.feature_dim, 8, 3)
  cont = flops.step_flops(cfg, objective=Continuation(), length=16, micro_batch=2)
  assert set(cont.terms) == {"generator_fwd", "generator_bwd"}
  assert cont.recompute == 0 and cont.hardware == cont.model
  # 2 · (parameters in matmuls) per token + attention: the usual transformer estimate.
  d, r = cfg.hidden_size, cfg.mlp_ratio
  assert dit_lib.DiTFlops(cfg).block_linear_per_token() == 2 * (4 + 2 * r) * d * d
  with pytest.raises(ValueError, match="remat policy"):
    flops.step_flops(cfg, objective=Continuation(), length=16, micro_batch=2,
                     remat_policy="bogus")
