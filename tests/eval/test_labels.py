"""Evaluation rows are labelled by the run, compare refuses two rows with one label, a
training directory passed as the checkpoint names WORKDIR/backbone, results files are
readable by others (issue 15, 6 and the smaller items).

Before: launch/eval.py labelled a row with the checkpoint directory's name, and every
training run exports ``WORKDIR/backbone``, so the README's workflow gave compare.py the
rows ``mdlm``, ``backbone``, ``backbone``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from tokendrift_jax.eval import cli
from tokendrift_jax.eval import files
from tokendrift_jax.eval import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _compare_module():
  sys.path.insert(0, os.path.join(ROOT, "launch"))
  try:
    import compare  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  return compare


def _training_workdir(path, marker="config.json", backbone_to=None):
  """A directory laid out like a training run's (config.json or checkpoints/, backbone/)."""
  os.makedirs(path)
  if marker == "config.json":
    (path / "config.json").write_text("{}\n")
  else:
    os.makedirs(path / marker)
  if backbone_to is not None:
    os.symlink(backbone_to, path / "backbone")
  return path


def _results_dir(path, label, ppl=(30.0, 20.0)):
  """RUN_DIR/results.json of a two-NFE, one-seed evaluation (what launch/eval.py writes)."""
  rows = [dict(nfe=n, seed=0, gen_ppl=p, entropy=5.0, num_samples=8) for n, p in
          zip((2, 4), ppl)]
  os.makedirs(path)
  files.write_json(str(path / "results.json"), report.results_payload(
      rows, label=label, checkpoint=f"/runs/{label}/backbone", process="mdlm", family="dit",
      meta={}, judge={"kind": "gpt2", "name": "gpt2-large"}, sampling={"nfe": [2, 4]},
      config={}))
  return str(path)


def test_run_label_is_the_run(tmp_path):
  drift = _training_workdir(tmp_path / "runs" / "mdlm_drift")
  os.makedirs(drift / "backbone")
  cont = _training_workdir(tmp_path / "runs" / "mdlm_cont", marker="checkpoints")
  os.makedirs(cont / "backbone")
  loose = tmp_path / "exports" / "backbone"       # not inside a training directory
  os.makedirs(loose)
  assert cli.run_label("", str(drift / "backbone")) == "mdlm_drift"
  assert cli.run_label("", str(cont / "backbone") + "/") == "mdlm_cont"
  assert cli.run_label("", str(tmp_path / "ckpt" / "mdlm")) == "mdlm"
  assert cli.run_label("", str(loose)) == "backbone"
  assert cli.run_label("TokenDrift", str(drift / "backbone")) == "TokenDrift"


def test_readme_workflow_gives_distinct_rows(eval_assets, eval_config, tmp_path, capsys):
  """The README's commands: a training run's export evaluated without --config.label is
  labelled by the run; compared with a release and another run's export, the rows are the
  runs, not `backbone` twice."""
  drift = _training_workdir(tmp_path / "runs" / "mdlm_drift", backbone_to=eval_assets["ckpt2"])
  config = eval_config(eval_assets, checkpoint=str(drift / "backbone"), nfe=(2,), seeds=(0,),
                       write_samples=False)
  evaluated = tmp_path / "eval" / "mdlm_drift"
  assert cli.evaluate_checkpoint(config, str(evaluated))["label"] == "mdlm_drift"
  assert "# Sample evaluation: mdlm_drift" in (evaluated / "results.md").read_text()
  # The other two rows of the workflow (their labels by the same rule, numbers made up).
  cont = _training_workdir(tmp_path / "runs" / "mdlm_cont", marker="checkpoints",
                           backbone_to=eval_assets["ckpt"])
  rows = [_results_dir(tmp_path / "eval" / name, cli.run_label("", ckpt)) for name, ckpt in
          (("released", eval_assets["ckpt"]), ("mdlm_cont", str(cont / "backbone")))]
  assert _compare_module().main([*rows, str(evaluated), "--out", str(tmp_path / "t1")]) == 0
  table = json.loads((tmp_path / "t1" / "compare.json").read_text())
  assert [r["label"] for r in table["runs"]] == ["mdlm_released", "mdlm_cont", "mdlm_drift"]
  capsys.readouterr()


@pytest.mark.parametrize("given", [False, True])
def test_compare_refuses_two_rows_with_one_label(tmp_path, capsys, given):
  """Results labelled as before (both `backbone`), or --labels with a repeat: one line
  naming both run directories and how to label them apart; nothing written."""
  a = _results_dir(tmp_path / "eval" / "cont", "backbone")
  b = _results_dir(tmp_path / "eval" / "drift", "backbone", ppl=(25.0, 15.0))
  extra = ["--labels", "A", "A"] if given else []
  out = tmp_path / "table"
  assert _compare_module().main([a, b, "--out", str(out), *extra]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  fix = ("give --labels distinct names" if given else
         "label the rows apart with --labels L1 L2 ... (one per RUN_DIR), or evaluate with "
         "--config.label=NAME")
  assert err.startswith(f"error: {fix}: "), err
  assert f"{a} and {b} are both labelled {'A' if given else 'backbone'!r}" in err, err
  assert not out.exists()


def test_training_workdir_as_checkpoint_names_its_backbone(tmp_path, capsys):
  from configs import eval as eval_configs  # pylint: disable=import-outside-toplevel
  workdir = _training_workdir(tmp_path / "runs" / "mdlm_drift", marker="checkpoints")
  config = eval_configs.get_config()
  config.checkpoint = str(workdir)
  out = tmp_path / "out"
  assert cli.run(config, str(out)) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith(f"error: did you mean --config.checkpoint={workdir}/backbone? "), err
  assert "python -m convert" not in err and "none there yet" in err
  assert not out.exists()


def test_results_files_get_the_umask_mode(tmp_path):
  """mkstemp's 0600 made results.json unreadable to others; now 0666 less the umask."""
  old = os.umask(0o022)
  try:
    for write, name, content in ((files.write_json, "r.json", {"a": 1}),
                                 (files.write_text, "r.md", "x\n"),
                                 (files.write_jsonl, "s.jsonl", [{"a": 1}])):
      write(str(tmp_path / name), content)
      assert os.stat(tmp_path / name).st_mode & 0o777 == 0o644, name
    os.umask(0o077)
    files.write_json(str(tmp_path / "private.json"), {})
    assert os.stat(tmp_path / "private.json").st_mode & 0o777 == 0o600
  finally:
    os.umask(old)
