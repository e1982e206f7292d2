"""The training system: device-count invariance, resume, preemption, multi-host, errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from tests import fixtures_tokenizer
from tests import fixtures_train as ft
from tokendrift_jax import checkpoints
from tokendrift_jax.eval import hook as hook_lib
from tokendrift_jax.eval import report
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import launch
from tokendrift_jax.train import metrics_writer
from tokendrift_jax.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _losses(workdir):
  rows = metrics_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [r["loss"] for r in rows if "loss" in r]


def _exported(workdir):
  return checkpoints.load_backbone_params(os.path.join(workdir, "backbone"))[1]


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tiny"))


# ------------------------------------------------------------------ device invariance


def test_one_device_equals_eight_devices_dp_and_fsdp(tiny_dir, tmp_path):
  """3 TokenDrift steps on 1 device == on 8 devices as (8,1) and (4,2)+FSDP, within 1e-5."""
  runs = {}
  for name, shape, n, rule in [("one", (1, 1), 1, "replicated"),
                               ("dp8", (8, 1), 8, "replicated"),
                               ("fsdp", (4, 2), 8, "fsdp")]:
    cfg = ft.tiny_config(tiny_dir, mesh_shape=shape, num_devices=n, param_sharding=rule)
    trainer.train(cfg, str(tmp_path / name))
    runs[name] = (_losses(str(tmp_path / name)), _exported(str(tmp_path / name)))
  ref_losses, ref_params = runs["one"]
  assert len(ref_losses) == 3
  init = checkpoints.load_backbone_params(os.path.join(tiny_dir, "init"))[1]
  assert _max_diff(ref_params, init) > 1e-4, "parameters must move for the test to mean much"
  for name in ("dp8", "fsdp"):
    losses, params = runs[name]
    # float32 reductions are split differently over devices; 1e-5 is the bound and
    # ~100x the observed differences.
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    assert _max_diff(params, ref_params) <= 1e-5, name


# ------------------------------------------------------------------ resume


def _state_at(workdir, step, like_cfg):
  run = trainer.build(like_cfg, workdir)
  state, _, _ = run.checkpointer.restore(step, checkpointing.abstract_like(run.state))
  run.checkpointer.close()
  return state


def test_resume_is_bitwise_identical(tiny_dir, tmp_path):
  """6 steps == 3 steps, restart, 3 more: losses, params and queues bitwise equal."""
  full, split = str(tmp_path / "full"), str(tmp_path / "split")
  trainer.train(ft.tiny_config(tiny_dir, steps=6), full)
  first = trainer.train(ft.tiny_config(tiny_dir, steps=3), split)
  assert first["step"] == 3
  second = trainer.train(ft.tiny_config(tiny_dir, steps=6), split)
  assert second["start_step"] == 3 and second["step"] == 6
  assert _losses(full) == _losses(split)   # exact float equality, JSON round-trip included
  a = _state_at(full, 6, ft.tiny_config(tiny_dir, steps=6))
  b = _state_at(split, 6, ft.tiny_config(tiny_dir, steps=6))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert int(a.queues["gen"].count) == 24  # 6 steps x 2 micro-steps x 8 > 24: wrapped


def _write_cfg_file(tmp, body):
  path = os.path.join(tmp, "run_config.py")
  with open(path, "w") as f:
    f.write(textwrap.dedent(body))
  return path


def _env(extra_devices=8):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={extra_devices}")
  return env


def test_sigterm_checkpoints_and_resumes(tiny_dir, tmp_path):
  cfg_file = _write_cfg_file(str(tmp_path), f"""
      from tests import fixtures_train
      def get_config():
        return fixtures_train.tiny_config({tiny_dir!r}, steps=100000)
      """)
  workdir = str(tmp_path / "wd")
  cmd = [sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--config={cfg_file}",
         f"--workdir={workdir}"]
  # One device: preemption does not depend on the mesh, and compiles are shorter.
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(1), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and len(metrics_writer.read_jsonl(metrics)) >= 3:
      break
    time.sleep(0.2)
  assert proc.poll() is None, proc.stdout.read()
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == trainer.EXIT_PREEMPTED, out
  assert "preempted at step" in out
  ckpt = checkpointing.Checkpointer(workdir)
  stopped = ckpt.latest_step()
  ckpt.close()
  assert stopped is not None and 3 <= stopped < 100000
  # The same command resumes (here told to stop 2 steps later).
  done = subprocess.run(cmd + [f"--config.train.steps={stopped + 2}"], cwd=ROOT, env=_env(1),
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  steps = [r["step"] for r in metrics_writer.read_jsonl(metrics) if "loss" in r]
  assert steps == list(range(1, stopped + 3)), "resumed run must continue at the next step"


# ------------------------------------------------------------------ multi-host


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tiny_dir, tmp_path):
  """jax.distributed on 127.0.0.1, 2 processes x 2 CPU devices == 1 process x 4 devices.

  The multi-process run stops after 2 steps and a second launch resumes it to 3 (orbax
  restore of the sharded state and of the data iterator on every process). The Fig. 2
  sampling hook runs too (initial checkpoint and last step), so sampling under training is
  checked across processes as well.
  """
  single = str(tmp_path / "single")
  cfg = ft.with_periodic_eval(ft.tiny_config(tiny_dir, mesh_shape=(4, 1), num_devices=4), every=3)
  trainer.train(cfg, single, hooks=[hook_lib.make_sample_eval_hook(cfg)])
  cfg_file = _write_cfg_file(str(tmp_path), f"""
      from tests import fixtures_train
      def get_config():
        return fixtures_train.with_periodic_eval(
            fixtures_train.tiny_config({tiny_dir!r}, mesh_shape=(4, 1)), every=3)
      """)
  multi = str(tmp_path / "multi")
  for steps in (2, 3):
    port = _free_port()
    procs = []
    for pid in range(2):
      cmd = [sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--config={cfg_file}",
             f"--workdir={multi}", f"--config.distributed.coordinator_address=127.0.0.1:{port}",
             "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}",
             f"--config.train.steps={steps}"]
      procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
      assert p.returncode == 0, out
    assert f"done: step {steps}" in outs[0]
  steps_logged = [r["step"] for r in metrics_writer.read_jsonl(os.path.join(multi, "metrics.jsonl"))
                  if "loss" in r]
  assert steps_logged == [1, 2, 3], "the second launch must resume at step 3"
  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5, atol=1e-6)
  assert _max_diff(_exported(multi), _exported(single)) <= 1e-5
  rows = {w: report.read_jsonl(os.path.join(w, hook_lib.EVAL_FILE)) for w in (single, multi)}
  # Validation NLL over the process-sliced validation batches, at the last step.
  val = {w: [r for r in metrics_writer.read_jsonl(os.path.join(w, "metrics.jsonl"))
             if "val/nll" in r] for w in (single, multi)}
  assert [r["step"] for r in val[multi]] == [2, 3] and [r["step"] for r in val[single]] == [3]
  np.testing.assert_allclose(val[multi][-1]["val/nll"], val[single][-1]["val/nll"], rtol=1e-5)
  # The first launch evaluated at its last step (2) as well.
  assert [(r["step"], r["nfe"]) for r in rows[multi]] == [(0, 2), (2, 2), (3, 2)]
  assert [(r["step"], r["nfe"]) for r in rows[single]] == [(0, 2), (3, 2)]
  # Step 0 samples the same initial weights with the same keys: equal. Step 3 samples
  # weights that agree to 1e-5, so its judge value may differ slightly.
  assert rows[multi][0] == rows[single][0]
  np.testing.assert_allclose(rows[multi][2]["gen_ppl"], rows[single][1]["gen_ppl"], rtol=0.05)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both(tiny_dir, tmp_path):
  """Preemption of one host: both processes stop at the same log step, checkpoint, exit 143,
  and a second launch of both resumes (~1 min; run with --runslow)."""
  ft.tiny_config(tiny_dir)  # writes the backbone and data here: the config file must not
  # touch jax before jax.distributed.initialize
  cfg_file = _write_cfg_file(str(tmp_path), f"""
      from tests import fixtures_train
      def get_config():
        c = fixtures_train.tiny_config({tiny_dir!r}, mesh_shape=(4, 1), steps=100000)
        c.train.log_every = 5
        return c
      """)
  workdir = str(tmp_path / "wd")
  metrics = os.path.join(workdir, "metrics.jsonl")

  def launch_both(*extra):
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch", "train.py"), f"--config={cfg_file}",
         f"--workdir={workdir}", f"--config.distributed.coordinator_address=127.0.0.1:{port}",
         "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}",
         "--config.train.progress=False", *extra],
        cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for pid in range(2)]

  procs = launch_both()
  deadline = time.time() + 240
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if os.path.exists(metrics) and len(metrics_writer.read_jsonl(metrics)) >= 2:
      break
    time.sleep(0.2)
  assert all(p.poll() is None for p in procs), [p.stdout.read() for p in procs]
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert [p.returncode for p in procs] == [trainer.EXIT_PREEMPTED] * 2, outs
  ckpt = checkpointing.Checkpointer(workdir)
  stopped = ckpt.latest_step()
  ckpt.close()
  assert stopped is not None and stopped % 5 == 0, "stops at a log step, where flags are agreed"
  procs = launch_both(f"--config.train.steps={stopped + 5}")
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  steps = [r["step"] for r in metrics_writer.read_jsonl(metrics) if "loss" in r]
  assert steps == list(range(5, stopped + 10, 5))


# ------------------------------------------------------------------ the full 170M config


def test_full_170m_drift_config_runs_one_micro_step(tmp_path):
  """configs/mdlm_drift.py as shipped (170M, bf16), short length: builds, shards, steps."""
  from configs import mdlm_drift
  from tokendrift_jax.models.dit import mdlm_small
  cfg170 = mdlm_small()
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda x: np.asarray(x) + 0.02 * rng.standard_normal(np.shape(x)).astype(np.float32),
      checkpoints.init_params(cfg170, 0))
  init = str(tmp_path / "mdlm170m")
  checkpoints.save_backbone(init, cfg170, params, meta={"arch": "mdlm"})
  del params
  ft.make_tokens(str(tmp_path / "train.npy"), 16, 16, 50257, seed=3)
  c = mdlm_drift.get_config()
  c.init_checkpoint = init
  c.model.length = 16
  c.data.kind, c.data.train_tokens = "tokens", str(tmp_path / "train.npy")
  c.batch.global_batch, c.batch.micro_batch = 8, 8
  c.drift.queue_size = 16
  # FSDP over all 8 simulated devices: replicated float32 state (params, Adam moments, EMA,
  # encoder; ~3.4 GB) on 8 CPU "devices" would need 8 copies.
  c.mesh.shape, c.mesh.param_sharding = (1, 8), "fsdp"
  c.train.steps, c.train.log_every, c.train.eval_every = 1, 1, 0
  c.train.export_backbone, c.train.progress = False, False
  out = trainer.train(c, str(tmp_path / "wd"))
  m = out["metrics"]
  assert out["step"] == 1 and np.isfinite(m["loss"]) and m["grad_norm"] > 0
  assert 0 < m["pos_weight_frac/tau=0.02"] < 1 and m["queue_fill_gen"] == 8 / 16


# ------------------------------------------------------------------ clear errors


def _launch_error(cfg, workdir, capsys):
  rc = launch.main(cfg, str(workdir))
  err = capsys.readouterr().err.strip()
  assert rc == 2, err
  assert err.startswith("error: ") and len(err.splitlines()) == 1, err
  assert not os.path.exists(workdir), "nothing may be written on error"
  return err


def test_missing_init_checkpoint(tiny_dir, tmp_path, capsys):
  c = ft.tiny_config(tiny_dir)
  c.init_checkpoint = str(tmp_path / "nope")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "init_checkpoint" in err and "python -m convert" in err


def test_hub_init_checkpoint_name_says_how_to_convert(tiny_dir, tmp_path, capsys):
  from configs import mdlm_drift
  c = mdlm_drift.get_config()
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "kuleshov-group/mdlm-owt" in err and "python -m convert" in err


def test_unreachable_hub_dataset(tiny_dir, tmp_path, capsys):
  c = ft.tiny_config(tiny_dir)
  c.data.kind = "text"
  c.data.source = "Skylion007/openwebtext"
  c.data.cache_dir = str(tmp_path / "cache")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "data.source" in err


def test_empty_dataset(tiny_dir, tmp_path, capsys):
  c = ft.tiny_config(tiny_dir)
  np.save(tmp_path / "empty.npy", np.zeros((0, 16), np.int32))
  c.data.train_tokens = str(tmp_path / "empty.npy")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "empty.npy" in err and "non-empty" in err


def test_token_ids_outside_the_model_are_refused_before_training(tiny_dir, tmp_path, capsys):
  """Whole splits are checked up front, identically on every process (see trainer.make_data)."""
  c = ft.tiny_config(tiny_dir)
  rows = np.load(c.data.train_tokens)
  rows[5, 3] = 32                      # the tiny MDLM's mask id (vocab 33)
  np.save(tmp_path / "masked.npy", rows)
  c.data.train_tokens = str(tmp_path / "masked.npy")
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "masked.npy" in err and "mask id 32" in err
  # Text data tokenized with a tokenizer bigger than the backbone's vocabulary.
  tok = fixtures_tokenizer.build_tiny_tokenizer(tmp_path / "tok", vocab_size=300)
  with open(tmp_path / "corpus.jsonl", "w", encoding="utf-8") as f:
    for i in range(40):
      f.write(json.dumps({"text": f"document {i} says the quick brown fox jumps " * 3}) + "\n")
  c = ft.tiny_config(tiny_dir)
  c.data.kind, c.data.source, c.data.tokenizer = "text", str(tmp_path / "corpus.jsonl"), tok
  c.data.cache_dir, c.data.valid_docs, c.data.progress = str(tmp_path / "cache"), 0, False
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "'train'" in err and "[0, 31]" in err and "data.tokenizer=" in err


def test_repeated_sequence_override_is_refused(tiny_dir, tmp_path, capsys, monkeypatch):
  """ml_collections concatenates repeated tuple overrides; the launchers refuse them."""
  c = ft.tiny_config(tiny_dir)
  c.sample_eval.nfe = (4, 8, 4, 8, 16)   # what --config.sample_eval.nfe=(4,8) ...=(4,8,16) gives
  argv = ["train.py", "--config=x.py", "--config.sample_eval.nfe=(4,8)",
          "--config.sample_eval.nfe=(4,8,16)", "--config.optim.lr=1", "--config.optim.lr=2"]
  monkeypatch.setattr(sys, "argv", argv)
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "--config.sample_eval.nfe is given 2 times" in err and "(4, 8, 4, 8, 16)" in err
  # A repeated scalar keeps the last value (absl), which is fine.
  assert launch.repeated_sequence_overrides(argv[:2] + argv[4:], c) is None


@pytest.mark.parametrize("global_batch,micro_batch,num_devices,needle", [
    (12, 8, 1, "not divisible by config.batch.micro_batch"),
    (16, 4, 8, "micro_batch=4 is not divisible by the 8 devices"),
])
def test_batch_not_divisible(tiny_dir, tmp_path, capsys, global_batch, micro_batch,
                             num_devices, needle):
  c = ft.tiny_config(tiny_dir, global_batch=global_batch, micro_batch=micro_batch,
                     num_devices=num_devices, mesh_shape=(-1, 1))
  assert needle in _launch_error(c, tmp_path / "wd", capsys)


def test_checkpoint_architecture_mismatch(tiny_dir, tmp_path, capsys):
  c = ft.tiny_config(tiny_dir)
  c.model.hidden_size = 48
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "model.hidden_size: checkpoint 32 vs config 48" in err


def test_checkpoint_family_mismatch(tiny_dir, tmp_path, capsys):
  c = ft.tiny_config(tiny_dir)
  c.backbone = "duo"
  err = _launch_error(c, tmp_path / "wd", capsys)
  assert "mdlm backbone" in err


def test_resume_refuses_a_different_run(tiny_dir, tmp_path, capsys):
  wd = str(tmp_path / "wd")
  trainer.train(ft.tiny_config(tiny_dir, objective="continuation", steps=0), wd)
  c = ft.tiny_config(tiny_dir, objective="drift", steps=2)
  rc = launch.main(c, wd)
  err = capsys.readouterr().err
  assert rc == 2 and "different run" in err and "objective" in err
