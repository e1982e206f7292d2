"""perf/cpu_profile: the thread summary of a traced XLA:CPU step, on hand-made traces."""

import gzip
import json

import pytest

from tokendrift_jax.perf import cpu_profile

HLO = '''
  %ynn_fusion.3 = f32[2,8]{1,0} fusion(%p0, %p1), kind=kCustom, calls=%c3, metadata={op_name="jit(step)/while/body/dot_general" stack_frame_id=1}
  %dot.7 = f32[8,8]{1,0} dot(%a, %b), metadata={op_name="jit(step)/transpose" stack_frame_id=2}
  %multiply_add_fusion.1 = f32[8]{0} fusion(%x), kind=kLoop, calls=%c1, metadata={op_name="jit(step)/add" stack_frame_id=3}
'''


def _events():
  # Thread A: a dot 0-40 us, an update 60-100. Thread B: another dot 20-50 (with a nested
  # event from the runtime, which is not a thunk), a loop 110-130.
  return [cpu_profile.Event("A", 0, 40, "ynn_fusion.3"),
          cpu_profile.Event("A", 60, 100, "multiply_add_fusion.1"),
          cpu_profile.Event("B", 20, 50, "dot.7"),
          cpu_profile.Event("B", 110, 130, "while.2")]


def test_span_busy_histogram_and_solo_times():
  s = cpu_profile.summarize(_events(), cpu_profile.op_names(HLO))
  # By hand, in us: span 0-130; both busy 20-40 (20); one busy 0-20, 40-50, 60-100, 110-130
  # (20 + 10 + 40 + 20 = 90); none 50-60, 100-110 (20).
  assert s["span_ms"] == pytest.approx(0.130)
  assert s["busy_ms"] == pytest.approx({0: 0.020, 1: 0.090, 2: 0.020})
  assert s["thunk_ms"] == pytest.approx(0.130)
  want = {"ynn_fusion:dot_general": [0.040, 0.020], "multiply_add_fusion": [0.040, 0.040],
          "dot:transpose": [0.030, 0.010], "while": [0.020, 0.020]}
  kinds = {r["kind"]: [r["total_ms"], r["solo_ms"]] for r in s["kinds"]}
  assert kinds.keys() == want.keys()
  for k, v in want.items():
    assert kinds[k] == pytest.approx(v), k
  assert [r["kind"] for r in s["kinds"]][-1] == "while"   # sorted by total time
  assert "| ynn_fusion:dot_general | 0.0 | 0.0 |" in cpu_profile.markdown(s)


def test_reads_a_perfetto_trace_without_runtime_events(tmp_path):
  raw = [{"ph": "X", "tid": e.tid, "ts": e.start, "dur": e.end - e.start, "name": e.name}
         for e in _events()]
  raw += [{"ph": "X", "tid": "A", "ts": 0, "dur": 130, "name": "ThunkExecutor::Execute"},
          {"ph": "X", "tid": "P", "ts": 0, "dur": 130, "name": "$api.py:1 block_until_ready"},
          {"ph": "M", "tid": "A", "name": "thread_name", "args": {"name": "XLAEigen"}}]
  path = tmp_path / "t.trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": raw}, f)
  assert sorted(cpu_profile.load_events(str(path))) == sorted(_events())


def test_no_thunk_events_names_the_flag():
  with pytest.raises(ValueError, match="xla_cpu_enable_xprof_traceme"):
    cpu_profile.summarize([])


def test_enable_traceme_keeps_other_flags_once():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  cpu_profile.enable_traceme(env)
  cpu_profile.enable_traceme(env)
  assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=8 "
                              "--xla_cpu_enable_xprof_traceme=true")
