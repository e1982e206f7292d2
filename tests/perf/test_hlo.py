"""HLO reading: dot inventory, loops with dots, StableHLO operand types."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tokendrift_jax.perf import hlo


def test_dot_inventory_counts_batched_and_plain_products(compiled_text):
  """2 · MACs of each dot, from the optimised HLO (operand shapes resolved by name)."""
  def f(x, w, q, k):
    h = jnp.tanh(x @ w)                                # [32, 48] x [48, 40]
    s = jnp.einsum("bqd,bkd->bqk", q, k)               # batch 3, [20, 16] x [16, 24]
    return jnp.sum(h) + jnp.sum(s)

  args = (jnp.ones((32, 48)), jnp.ones((48, 40)), jnp.ones((3, 20, 16)), jnp.ones((3, 24, 16)))
  dots = hlo.dot_inventory(compiled_text(f, *args))
  want = sorted([2 * 32 * 40 * 48, 2 * 3 * 20 * 24 * 16])
  assert sorted(d.flops for d in dots) == want


def test_loops_with_dots_are_detected(compiled_text):
  ws = jnp.ones((4, 16, 16))

  def scanned(x):
    return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]

  def rng_only(key):  # threefry rounds compile to a loop without dots
    return jax.random.uniform(key, (64,))

  found = hlo.dot_loops(compiled_text(scanned, jnp.ones((8, 16))))
  assert len(found) == 1 and found[0].trip_count == 4 and found[0].has_dot
  assert hlo.dot_loops(compiled_text(rng_only, jax.random.key(0))) == []


def test_stablehlo_dots_report_operand_types():
  def f(a, b):
    return jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                   preferred_element_type=jnp.float32)

  text = jax.jit(f).lower(jnp.ones((4, 8)), jnp.ones((8, 2))).as_text()
  (d,) = hlo.stablehlo_dots(text)
  assert d.dtypes == "bf16 x bf16 -> f32" and d.lhs[0] == (4, 8) and d.out[0] == (4, 2)
