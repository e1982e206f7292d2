"""Issue 25, item 4 for the evaluation: every value of configs/eval.py is checked by one table
(``eval_config.EVAL_CONFIG_CHECKS``, the mechanism of tokendrift_jax/config_checks.py) where
the config is read, before the checkpoint, the judge or anything else is loaded; a bad value
is one ``error:`` line naming the field, exit status 2, nothing written."""

from __future__ import annotations

import pytest

from tokendrift_jax import checkpoints
from tokendrift_jax.eval import cli
from tokendrift_jax.eval import eval_config


def _loaded(*args, **kwargs):
  raise AssertionError("the checkpoint was read before the config values were checked")


@pytest.mark.parametrize("field,value,needle", [
    ("nfe", (4, -1), "config.nfe=(4, -1) entry -1 must be >= 1"),
    ("seeds", (0, 0), "config.seeds=(0, 0) has repeated values"),
    ("num_samples", 0, "config.num_samples=0 must be >= 1: the sample set is empty"),
    ("batch", 0, "config.batch=0 must be >= 1"),
    ("judge_batch", -8, "config.judge_batch=-8 must be >= 1"),
    ("judge_buckets", (1, 256), "config.judge_buckets=(1, 256) entry 1 must be >= 2"),
    ("judge_dtype", "float16", "config.judge_dtype='float16' must be one of"),
    ("llada.temperature", float("nan"), "config.llada.temperature=nan must be finite"),
    ("llada.cfg_scale", -1.0, "config.llada.cfg_scale=-1.0 must be >= 0"),
    ("prompt.length", -2, "config.prompt.length=-2 must be >= 0"),
])
def test_bad_eval_config_values_are_one_line_before_anything_loads(
    field, value, needle, tmp_path, capsys, monkeypatch):
  from configs import eval as eval_configs  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(checkpoints, "read_backbone_config", _loaded)
  monkeypatch.setattr(checkpoints, "load_backbone_params", _loaded)
  config = eval_configs.get_config()
  config.checkpoint = str(tmp_path / "ckpt")
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  out = tmp_path / "out"
  rc = cli.run(config, str(out))
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
  assert needle in err, err
  assert not out.exists()


def test_the_table_allows_what_the_sampler_and_judge_take():
  """The table's lists of choices (repeated in eval_config to keep it light) are the code's."""
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax import sharding
  from tokendrift_jax.diffusion import llada_sampling
  from tokendrift_jax.eval import genppl, judges, sampling_eval
  assert eval_config.JUDGE_KINDS == judges.KINDS
  assert set(eval_config.JUDGE_DTYPES) == set(genppl.DTYPES)
  assert set(eval_config.MODEL_DTYPES) == set(sampling_eval.MODEL_DTYPES)
  assert eval_config.SAMPLER_PRECISIONS == sampling_eval.SAMPLER_PRECISIONS
  assert eval_config.SPECIAL_TOKENS == ("",) + judges.SPECIAL_TOKENS
  assert eval_config.REMASKING == llada_sampling.REMASKING
  assert eval_config.PARAM_SHARDINGS == sharding.PARAM_SHARDING_MODES
  # The shipped config passes its own table.
  from configs import eval as eval_configs
  eval_config.check_eval_config(eval_configs.get_config())


@pytest.mark.parametrize("field,value,needle", [
    ("every", 0, "config.sample_eval.every=0 must be >= 1"),
    ("nfe", (4, 0), "config.sample_eval.nfe=(4, 0) entry 0 must be >= 1"),
    ("judge_group_size", 0, "config.sample_eval.judge_group_size=0 must be >= 1"),
])
def test_bad_sample_eval_values_are_refused_before_the_judge_loads(field, value, needle,
                                                                   monkeypatch):
  """The training config's sample_eval section goes through the same table
  (SAMPLE_EVAL_CHECKS) at the top of the hook, before its judge is built."""
  # pylint: disable=import-outside-toplevel
  from configs import base
  from tokendrift_jax.eval import assemble, hook
  monkeypatch.setattr(assemble, "build_evaluator", _loaded)
  config = base.get_config()
  config.sample_eval.enabled = True
  config.sample_eval[field] = value
  with pytest.raises(eval_config.EvalError) as e:
    hook.make_sample_eval_hook(config, "/nonexistent/workdir")
  assert needle in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)
