"""perf/tpu_time: the step time from XLA:TPU's cost model with loop trip counts.

Checked on programs whose answer is known: a scan of k iterations against the same body
unrolled k times (the trip-count combination), a large bf16 matmul against the chip's peak
(the clock), an all-gather of known size (the bytes of the ICI term, and what XLA's own
``optimal_seconds`` makes of it), the parser on hand-written HLO (nested loops, fusion
bodies, replica-group formats), the MFU and chip-hour arithmetic by hand, and a tiny
training step through ``launch/plan_memory.py --time``. Compiled for 4 v5p chips
(``v5p:2x2x1``, one host, the smallest slice the compiler takes); a few seconds each.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tokendrift_jax.perf import targets
from tokendrift_jax.perf import tpu_time

TPU = "tpu:v5p-8"   # 4 v5p chips


@pytest.fixture(scope="module")
def v5p():
  t = targets.parse(TPU)
  mesh = Mesh(np.asarray(t.devices()), ("x",))
  return t, mesh


def _compile(fn, *args, **kw):
  c = jax.jit(fn, **kw).lower(*args).compile()
  cost = c.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return c.as_text(), cost


def _sds(shape, dtype, mesh, spec=P()):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


@pytest.mark.slow   # by default: the parser's nested trip counts and test_targets' TPU step
def test_scan_trip_counts_against_the_unrolled_program(v5p):
  # x -> tanh(x @ w), 4096^2 bf16, as a scan of k steps and unrolled k times (k = 2, 4).
  _, mesh = v5p
  x = _sds((4096, 4096), jnp.bfloat16, mesh)
  est, opt = {}, {}
  for k in (2, 4):
    def scan(a, w, k=k):
      return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w).astype(c.dtype), None), a, None,
                          length=k)[0]

    def unrolled(a, w, k=k):
      for _ in range(k):
        a = jnp.tanh(a @ w).astype(a.dtype)
      return a

    for name, fn in (("scan", scan), ("unrolled", unrolled)):
      text, cost = _compile(fn, x, x)
      est[(name, k)] = tpu_time.estimate(text, "v5p", optimal_seconds=cost["optimal_seconds"])
      opt[(name, k)] = cost["optimal_seconds"]
  s2, s4 = est[("scan", 2)], est[("scan", 4)]
  assert [n for _, n in s2.loops] == [2] and [n for _, n in s4.loops] == [4]
  assert not s2.warnings and not s4.warnings
  # XLA's optimal_seconds counts the loop body once, whatever the trip count ...
  assert opt[("scan", 4)] == pytest.approx(opt[("scan", 2)], rel=1e-6)
  assert s2.compute_once_s == pytest.approx(s4.compute_once_s, rel=1e-6)
  # ... the estimate counts it k times: scan(4) - scan(2) = 2 bodies = 2 (scan(2) - once).
  body = s2.compute_s - s2.compute_once_s
  assert body > 0
  assert s4.compute_s - s2.compute_s == pytest.approx(2 * body, rel=1e-6)
  for k in (2, 4):
    s, u = est[("scan", k)], est[("unrolled", k)]
    # Against the program whose answer is known, the same work unrolled: the scan costs its
    # unrolled twin plus a copy of the carried [4096, 4096] per iteration (XLA's loop
    # carry; 22 % here), and is within 15 % of the unrolled program's own optimal_seconds.
    assert u.compute_s < s.compute_s < 1.35 * u.compute_s, (k, s.compute_s, u.compute_s)
    assert s.compute_s == pytest.approx(opt[("unrolled", k)], rel=0.15)
    # The unrolled program's summed cycles agree with its own optimal_seconds to 25 %.
    assert u.compute_s == pytest.approx(opt[("unrolled", k)], rel=0.25)


def test_matmul_calibrates_the_clock(v5p):
  # 8192^3 bf16 on one chip: the cost model's cycles at the 1.75 GHz clock give ~90 % of
  # v5p's 459 TFLOP/s; optimal_seconds gives 394 TFLOP/s (86 %). Neither exceeds the peak.
  t, mesh = v5p
  n = 8192
  a = _sds((n, n), jnp.bfloat16, mesh)
  text, cost = _compile(lambda p, q: p @ q, a, a)
  est = tpu_time.estimate(text, "v5p")
  peak = t.peak_flops["bfloat16"]
  assert peak == 459e12
  rate = 2 * n ** 3 / est.compute_s
  assert 0.85 * peak < rate < peak, rate / 1e12
  assert 0.8 * peak < 2 * n ** 3 / cost["optimal_seconds"] < peak


def test_all_gather_is_timed_by_ici_not_hbm(v5p):
  # An all-gather of a 64 MiB bf16 array over the 4 chips: every device receives 3/4 of it.
  t, mesh = v5p
  n = 2 ** 25
  x = _sds((n,), jnp.bfloat16, mesh, P("x"))
  text, cost = _compile(lambda a: a * 2, x, out_shardings=NamedSharding(mesh, P()))
  est = tpu_time.estimate(text, "v5p", optimal_seconds=cost["optimal_seconds"])
  received = 2 * n * 3 / 4
  assert est.by_kind["all-gather"][0] == 1
  assert est.comm_bytes == pytest.approx(received)
  assert est.comm_s == pytest.approx(received / 600e9)     # v5p: 4,800 Gbps per chip
  # XLA's optimal_seconds prices the collective as memory traffic: the program's bytes
  # accessed per optimal second are those of the same multiply without a collective
  # (HBM speed, about 2.35 TB/s on v5p), whatever the interconnect. Hence the ICI term.
  ref_text, ref = _compile(lambda a: a * 2, _sds((n,), jnp.bfloat16, mesh))
  assert not tpu_time.estimate(ref_text, "v5p").by_kind
  rate = cost["bytes accessed"] / cost["optimal_seconds"]
  ref_rate = ref["bytes accessed"] / ref["optimal_seconds"]
  assert rate == pytest.approx(ref_rate, rel=0.15), (rate, ref_rate)
  assert ref_rate > 3 * 600e9   # 3.9 times the whole chip's interconnect


_HLO = """HloModule m, num_partitions=8

%fused (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %e = f32[8]{0} exponential(%p), backend_config={"window_config":{"estimated_cycles":"999999"}}
}

%inner_cond (a: (s32[], f32[8])) -> pred[] {
  %a = (s32[], f32[8]{0}) parameter(0)
  %c5 = s32[] constant(5)
  %i = s32[] get-tuple-element(%a), index=0
  ROOT %lt = pred[] compare(%i, %c5), direction=LT
}

%inner_body (b: (s32[], f32[8])) -> (s32[], f32[8]) {
  %b = (s32[], f32[8]{0}) parameter(0)
  %x = f32[8]{0} get-tuple-element(%b), index=1
  %f = f32[8]{0} fusion(%x), kind=kLoop, calls=%fused, backend_config={"window_config":{"estimated_cycles":"1750"}}
  %g = bf16[8,1024]{1,0} all-gather(%f), replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={0}
  %r = f32[1024]{0} all-reduce(%x), replica_groups=[4,2]<=[8], to_apply=%add
  %i = s32[] get-tuple-element(%b), index=0
  ROOT %t = (s32[], f32[8]{0}) tuple(%i, %f)
}

%outer_body (c: (s32[], f32[8])) -> (s32[], f32[8]) {
  %c = (s32[], f32[8]{0}) parameter(0)
  %w = (s32[], f32[8]{0}) while(%c), condition=%inner_cond, body=%inner_body
  %s = f32[64]{0} reduce-scatter(%x), replica_groups={{0,1,2,3,4,5,6,7}}, dimensions={0}
  ROOT %t2 = (s32[], f32[8]{0}) tuple(%w)
}

%outer_cond (d: (s32[], f32[8])) -> pred[] {
  %d = (s32[], f32[8]{0}) parameter(0)
  ROOT %lt2 = pred[] compare(%i, %c), direction=LT
}

ENTRY %main (q: f32[8]) -> f32[8] {
  %q = f32[8]{0} parameter(0)
  %w2 = (s32[], f32[8]{0}) while(%t0), condition=%outer_cond, body=%outer_body, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %k = f32[8]{0} copy(%q), backend_config={"window_config":{"estimated_cycles":"3500"}}
}
"""


def test_parser_multiplies_nested_trip_counts():
  est = tpu_time.estimate(_HLO, "v5p")
  assert sorted(k for _, k in est.loops) == [3, 5]
  # The fusion (1750 cycles) runs 3 x 5 times, the copy once; the fusion body's own cycles
  # are the fusion's, not counted again. At 1.75 GHz: 1 us per 1750 cycles.
  assert est.compute_s == pytest.approx((15 * 1750 + 3500) / 1.75e9)
  assert est.compute_once_s == pytest.approx((1750 + 3500) / 1.75e9)
  # all-gather over 'axis_1' (4 devices): 3/4 of 16 KiB, 15 times; all-reduce in groups
  # of 2: 2 x 1/2 x 4 KiB, 15 times; reduce-scatter over 8: 7/8 of 8 x 256 B, 3 times.
  ag, ar, rs = 0.75 * 2 * 8 * 1024, 2 * 0.5 * 4096, 7 / 8 * 8 * 256
  assert est.by_kind["all-gather"][:2] == pytest.approx((15, 15 * ag))
  assert est.by_kind["all-reduce"][:2] == pytest.approx((15, 15 * ar))
  assert est.by_kind["reduce-scatter"][:2] == pytest.approx((3, 3 * rs))
  assert est.comm_s == pytest.approx((15 * ag + 15 * ar + 3 * rs) / 600e9)


def test_mfu_and_chip_hours_by_hand():
  # 1e15 model FLOPs in 2 s on 8 chips of 459 TFLOP/s: 1e15 / (2 * 8 * 459e12) = 13.6 %;
  # 13k steps of 2 s on 8 chips: 2 * 13000 * 8 / 3600 = 57.8 chip-hours.
  assert tpu_time.mfu(1e15, 2.0, 8, 459e12) == pytest.approx(0.136165, rel=1e-5)
  assert tpu_time.chip_hours(2.0, 8) == pytest.approx(57.7778, rel=1e-5)


@pytest.mark.slow   # the estimate of a compiled step is checked by test_targets' TPU step
def test_plan_memory_time_of_a_tiny_step(tmp_path, capsys):
  # The command-line path: a tiny LLaDA continuation step, 4 micro-steps, on 4 v5p chips.
  import os  # pylint: disable=import-outside-toplevel
  import runpy  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main = runpy.run_path(os.path.join(root, "launch", "plan_memory.py"))["main"]
  config = tmp_path / "tiny_continuation.py"
  config.write_text(
      "from configs import llada_continuation\n"
      "from tests.helpers import tiny_run\n\n\n"
      "def get_config():\n"
      "  c = llada_continuation.get_config()\n"
      "  c.model.update(tiny_run.tiny_llada_config().to_dict())\n"
      "  return c\n")
  out = tmp_path / "rows.jsonl"
  rc = main([f"--config={config}", f"--target={TPU}", "--mesh=1,2,2", "--micro-batch=1",
             "--length=16", "--no-remat", "--global-batch=8", "--time", f"--out={out}"])
  assert rc == 0
  printed = capsys.readouterr().out
  assert "estimated step" in printed and "MFU" in printed
  row = json.loads(out.read_text())
  t = row["time"]
  # The micro-step loop runs 8 / 2 = 4 times; everything counted with its trip count
  # exceeds the same program with each body once.
  assert 4 in [k for _, k in t["loops"]] and not t["warnings"]
  assert t["compute_s"] > t["compute_once_s"] > 0
  assert t["mfu"] == pytest.approx(
      row["model_flops"] / (t["step_s"] * 4 * 459e12), rel=1e-9)
  assert t["chip_hours"] == pytest.approx(t["step_s"] * 13000 * 4 / 3600, rel=1e-9)
  assert "| tiny_continuation |" in tpu_time.markdown([row])
