"""launch/train.py as users run it: preemption (SIGTERM) and resume, multi-host
jax.distributed runs on 127.0.0.1.

The run config files written here import tests/helpers/tiny_run.py in the child processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import chex
import numpy as np
import pytest

from tokendrift_jax.eval import files
from tokendrift_jax.eval import hook as hook_lib
from tokendrift_jax.eval import report
from tokendrift_jax.train import checkpointing
from tokendrift_jax.train import metrics_writer
from tokendrift_jax.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write_cfg_file(tmp, body):
  path = os.path.join(tmp, "run_config.py")
  with open(path, "w") as f:
    f.write(textwrap.dedent(body))
  return path


def _env(extra_devices=8):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={extra_devices} "
                 + os.environ.get("TOKENDRIFT_TEST_XLA_FLAGS", ""))
  return env


@pytest.mark.slow
def test_sigterm_checkpoints_and_resumes(tiny_dir, tmp_path):
  """launch/train.py in a subprocess: SIGTERM checkpoints and exits 143, the same command
  resumes at the next step. Slow (~25 s); the suite keeps the in-process SIGTERM save and
  the Ctrl-C checkpoint at the step boundary (tests/train/test_faults.py)."""
  cfg_file = _write_cfg_file(str(tmp_path), f"""
      from tests.helpers import tiny_run
      def get_config():
        return tiny_run.tiny_config({tiny_dir!r}, steps=100000)
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


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_process_run(tiny_dir, tmp_path, tiny_run_config, with_periodic_eval, read_losses,
                     exported_params, launches, periodic_eval=True, single_devices=4):
  """jax.distributed on 127.0.0.1, 2 processes x 2 CPU devices == 1 process x 4 devices
  (or x 1 device: ``single_devices=1``, the one-device program that
  tests/train/test_trainer.py and tests/train/test_faults.py compile too).

  The multi-process run is one launch per entry of ``launches`` (the step it stops at);
  with (2, 3) a second launch resumes it to 3 (orbax restore of the sharded state and of
  the data iterator on every process). The Fig. 2 sampling hook runs too (initial
  checkpoint and every launch's last step), so sampling under training is checked across
  processes as well.
  """
  single = str(tmp_path / "single")
  cfg = tiny_run_config(tiny_dir, mesh_shape=(single_devices, 1), num_devices=single_devices)
  if periodic_eval:
    cfg = with_periodic_eval(cfg, every=3)
  trainer.train(cfg, single,
                hooks=[hook_lib.make_sample_eval_hook(cfg, single)] if periodic_eval else [])
  wrap = "tiny_run.with_periodic_eval" if periodic_eval else ""
  cfg_file = _write_cfg_file(str(tmp_path), f"""
      from tests.helpers import tiny_run
      def get_config():
        c = tiny_run.tiny_config({tiny_dir!r}, mesh_shape=(4, 1))
        return {wrap + "(c, every=3)" if periodic_eval else "c"}
      """)
  multi = str(tmp_path / "multi")
  for steps in launches:
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
  chex.assert_trees_all_close(read_losses(multi), read_losses(single), rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(exported_params(multi), exported_params(single), rtol=0, atol=1e-5)
  if not periodic_eval:
    return
  rows = {w: files.read_jsonl(os.path.join(w, hook_lib.EVAL_FILE)) for w in (single, multi)}
  # Validation NLL over the process-sliced validation batches, at every launch's last step.
  val = {w: [r for r in metrics_writer.read_jsonl(os.path.join(w, "metrics.jsonl"))
             if "val/nll" in r] for w in (single, multi)}
  assert [r["step"] for r in val[multi]] == list(launches)
  assert [r["step"] for r in val[single]] == [3]
  chex.assert_trees_all_close(val[multi][-1]["val/nll"], val[single][-1]["val/nll"], rtol=1e-5,
                              atol=0)
  assert [(r["step"], r["nfe"]) for r in rows[multi]] == [(0, 2)] + [(s, 2) for s in launches]
  assert [(r["step"], r["nfe"]) for r in rows[single]] == [(0, 2), (3, 2)]
  # Step 0 samples the same initial weights with the same keys: equal. Step 3 samples
  # weights that agree to 1e-5, so its judge value may differ slightly.
  assert rows[multi][0] == rows[single][0]
  chex.assert_trees_all_close(rows[multi][-1]["gen_ppl"], rows[single][1]["gen_ppl"],
                              rtol=0.05, atol=0)


def test_two_processes_equal_one_process(tiny_dir, tmp_path, tiny_run_config, with_periodic_eval,
                                         read_losses, exported_params):
  """One two-process launch of 3 steps on (4, 1) == the run on one device: losses and
  exported weights within 1e-5 (as every mesh against one device). The slow variant below
  compares with one process of 4 devices and adds the resume across processes and the
  sampling hook and validation under training (multi-host sampling itself is in the suite
  through tests/launch/test_eval.py's two-process evaluation)."""
  _two_process_run(tiny_dir, tmp_path, tiny_run_config, with_periodic_eval, read_losses,
                   exported_params, launches=(3,), periodic_eval=False, single_devices=1)


@pytest.mark.slow
def test_two_processes_resume_equal_one_process(tiny_dir, tmp_path, tiny_run_config,
                                                with_periodic_eval, read_losses,
                                                exported_params):
  """The same run with the Fig. 2 sampling hook and validation, stopped at step 2 and
  resumed to 3 by a second two-process launch."""
  _two_process_run(tiny_dir, tmp_path, tiny_run_config, with_periodic_eval, read_losses,
                   exported_params, launches=(2, 3))


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both(tiny_dir, tmp_path, tiny_run_config):
  """Preemption of one host: both processes stop at the same log step, checkpoint, exit 143,
  and a second launch of both resumes (~1 min; run with --runslow)."""
  tiny_run_config(tiny_dir)  # writes the backbone and data here: the config file must not
  # touch jax before jax.distributed.initialize
  cfg_file = _write_cfg_file(str(tmp_path), f"""
      from tests.helpers import tiny_run
      def get_config():
        c = tiny_run.tiny_config({tiny_dir!r}, mesh_shape=(4, 1), steps=100000)
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
