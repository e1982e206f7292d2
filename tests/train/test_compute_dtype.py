"""config.model.dtype: "auto" (the base config's) is float32 on CPU, bfloat16 on GPU/TPU."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from configs import base
from tokendrift_jax.perf import benchmark as bench
from tokendrift_jax.train import builder


@pytest.mark.parametrize("platform, want", [("cpu", jnp.float32), ("gpu", jnp.bfloat16),
                                            ("cuda", jnp.bfloat16), ("tpu", jnp.bfloat16)])
def test_auto_is_float32_on_cpu_only(platform, want):
  c = base.get_config()
  assert c.model.dtype == "auto"
  assert builder.compute_dtype(c, platform) == jnp.dtype(want)


@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_a_named_dtype_holds_on_every_platform(name):
  c = base.get_config()
  c.model.dtype = name
  for platform in ("cpu", "gpu", "tpu"):
    assert builder.compute_dtype(c, platform) == jnp.dtype(name)


def test_unknown_dtype_is_one_line_error():
  c = base.get_config()
  c.model.dtype = "float16"
  with pytest.raises(builder.TrainError, match="config.model.dtype must be one of"):
    builder.compute_dtype(c, "cpu")


def test_the_step_built_on_cpu_computes_in_float32():
  c = bench.case_config(bench.apply_size(base.get_config(), "tiny", 16),
                        objective="continuation", per_device_batch=1)
  parts = builder.build_step(c)
  assert parts.ctx.compute_dtype == jnp.dtype(jnp.float32)
  text = parts.step_fn.lower(*parts.abstract_args()).as_text()
  assert "bf16" not in text
  c.model.dtype = "bfloat16"
  text = builder.build_step(c).step_fn.lower(*parts.abstract_args()).as_text()
  assert "bf16" in text
