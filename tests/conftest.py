"""Test-session setup: 8 simulated CPU devices, deterministic float32 matmuls."""

import os

# Must be set before jax is imported anywhere: every test sees 8 CPU devices and
# single-device tests build their mesh from jax.devices()[:1].
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402

# float32 matmuls at full precision so parity tolerances mean what they say.
jax.config.update("jax_default_matmul_precision", "highest")

import tempfile  # noqa: E402

# Identical programs compiled by several tests (or test subprocesses, which inherit the
# variable) are compiled once per session.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               tempfile.mkdtemp(prefix="tokendrift_jax_xla_cache_"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pytest  # noqa: E402


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", default=False,
                   help="also run tests marked slow (longer multi-process checks)")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: longer checks, skipped unless --runslow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="slow: run with --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)
