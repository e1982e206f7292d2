"""tokendrift_jax/malloc.py: when a launch script re-executes under glibc's allocator tunables."""

import os
import subprocess
import sys

import pytest

from tokendrift_jax import malloc

GLIBC = (2, 36)


REUSE = ("glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.arena_max=1:"
         "glibc.malloc.trim_threshold=1099511627776")


def test_adds_the_tunables_and_keeps_the_users():
  assert malloc.allocator_env({}, GLIBC)["GLIBC_TUNABLES"] == REUSE
  assert malloc.allocator_env({"TOKENDRIFT_MALLOC": "reuse"}, GLIBC)["GLIBC_TUNABLES"] == REUSE
  env = malloc.allocator_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "A": "b"},
                             GLIBC)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:" + REUSE
  assert env["A"] == "b"
  env = malloc.allocator_env({"TOKENDRIFT_MALLOC": "hugetlb"}, GLIBC)
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ, glibc", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC),   # the user's choice, kept
    ({"GLIBC_TUNABLES": "x=1:glibc.malloc.hugetlb=2"}, GLIBC),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}, GLIBC),  # any of the four: kept as is
    ({"TOKENDRIFT_MALLOC": "system"}, GLIBC),
    ({}, (2, 34)),   # no such tunable before glibc 2.35
    ({}, None),      # not glibc (macOS, musl)
])
def test_runs_as_it_is(environ, glibc):
  assert malloc.allocator_env(environ, glibc) is None


def test_rejects_an_unknown_choice():
  with pytest.raises(ValueError, match="TOKENDRIFT_MALLOC='tcmalloc'"):
    malloc.allocator_env({"TOKENDRIFT_MALLOC": "tcmalloc"}, GLIBC)


@pytest.mark.skipif(malloc._glibc_version() is None  # pylint: disable=protected-access
                    or malloc._glibc_version() < (2, 35),  # pylint: disable=protected-access
                    reason="needs Linux with glibc >= 2.35")
@pytest.mark.parametrize("choice, expected", [("", REUSE), ("hugetlb", "glibc.malloc.hugetlb=1"),
                                              ("system", "None")])
def test_reexecutes_the_same_command(tmp_path, choice, expected):
  script = tmp_path / "script.py"
  script.write_text("import os, sys\n"
                    "from tokendrift_jax import malloc\n"
                    "print('started', flush=True)\n"
                    "malloc.use_allocator_tunables()\n"
                    "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES",
                                                           "TOKENDRIFT_MALLOC")}
  if choice:
    env["TOKENDRIFT_MALLOC"] = choice
  out = subprocess.run([sys.executable, "-X", "utf8", str(script), "--flag=1", "b c"],
                       env=env, capture_output=True, text=True, check=True).stdout
  starts = 1 if choice == "system" else 2   # a re-executed process prints 'started' again
  assert out.splitlines() == ["started"] * starts + [f"{expected} ['--flag=1', 'b c']"]
