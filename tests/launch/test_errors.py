"""The launch scripts' configuration errors and --help, as a user meets them (issue 15, 8).

Before: a misspelled ``--config.optim.lrr=1`` or a missing config file ended in a 35-53 line
traceback with the useful "Did you mean" on its last line, and ``--help`` exited 1 without a
word about the config. Now each error is one ``error: ...`` line (the suggestion first) and
exit status 2, and ``--help`` exits 0 and lists the config's fields with their defaults.

One subprocess runs every case: it imports what the scripts share once, then forks a child
per command line that runs the script as ``__main__`` (as ``python launch/X.py ARGS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_DRIVER = r"""
import json, os, runpy, sys, traceback
import absl.app, ml_collections.config_flags
from configs import base  # what the training configs import, loaded once for every case
cases, folder = json.loads(sys.argv[1]), sys.argv[2]
codes = []
for i, argv in enumerate(cases):
  pid = os.fork()
  if pid == 0:
    for fd, name in ((1, "out"), (2, "err")):
      os.dup2(os.open(os.path.join(folder, f"{i}.{name}"), os.O_WRONLY | os.O_CREAT), fd)
    sys.argv = argv
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
    code = 0
    try:
      runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
      traceback.print_exc()
      code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
"""


def _run_all(cases, folder):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(cases), str(folder)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  codes = json.loads(done.stdout.strip().splitlines()[-1])
  return [(code, (folder / f"{i}.out").read_text(), (folder / f"{i}.err").read_text())
          for i, code in enumerate(codes)]


def test_config_errors_are_one_line_and_help_exits_0(tmp_path):
  work = tmp_path / "run"
  cases = {
      # the misspelled key of the issue: the suggestion now comes first
      "typo": (["launch/train.py", "--config=configs/mdlm_drift.py", "--config.optim.lrr=1",
                f"--workdir={work}"], "error: did you mean --config.optim.lr? "),
      # a missing config file (read lazily by ml_collections: failed at first use before)
      "no_file": (["launch/train.py", "--config=configs/nope.py", f"--workdir={work}"],
                  "error: no config file configs/nope.py "),
      # a missing file with an override (failed inside flag parsing before)
      "no_file_override": (["launch/eval.py", "--config=configs/nope.py", "--config.label=x",
                            f"--workdir={work}"], "error: no config file configs/nope.py "),
      # benchmark.py loads its default config when the flag is defined
      "bench_typo": (["launch/benchmark.py", "--config.model.n_blokcs=1", f"--out={work}"],
                     "error: did you mean --config.model.n_blocks? "),
      "no_config": (["launch/eval.py", f"--workdir={work}"],
                    "error: pass --config=FILE, e.g. --config=configs/eval.py "),
      "help_train": (["launch/train.py", "--help"], None),
      "help_eval": (["launch/eval.py", "--config=configs/eval.py", "--help"], None),
  }
  results = dict(zip(cases, _run_all([argv for argv, _ in cases.values()], tmp_path)))
  for name, (argv, first) in cases.items():
    code, out, err = results[name]
    if first is None:
      continue
    lines = err.strip().splitlines()
    assert code == 2, (name, code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith(first), (name, err[-2000:])
    assert out == "", (name, out)
  assert "configs/mdlm_drift.py has no field optim.lrr" in results["typo"][2]
  assert "configs/mdlm_drift.py has no field model.n_blokcs" in results["bench_typo"][2]
  assert not work.exists()

  code, out, err = results["help_train"]
  assert code == 0 and err == "", err
  assert "--workdir: run directory" in out and "--config: training config file" in out
  assert ("To list a config's fields and their defaults: python launch/train.py "
          "--config=FILE --help, e.g. --config=configs/mdlm_drift.py") in out
  code, out, err = results["help_eval"]
  assert code == 0 and err == "", err
  assert "Fields of --config=configs/eval.py with their defaults" in out
  fields = [ln.strip() for ln in out.splitlines() if ln.startswith("  --config.")]
  # every field with its default, written as it is passed on a shell command line
  for field in ("--config.nfe='(4, 8, 16)'", "--config.seeds='(0, 1, 2)'",
                "--config.num_samples=800", "--config.label=''", "--config.judge=gpt2-large",
                "--config.distributed.initialize=auto", "--config.mesh.shape='(-1, 1)'"):
    assert field in fields, (field, fields)
