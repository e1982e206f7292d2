"""launch/device_check.sh: parses, and names the wheels it installs."""

from __future__ import annotations

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_device_check_script_parses_and_names_the_wheels():
  path = os.path.join(ROOT, "launch", "device_check.sh")
  assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
  text = open(path).read()
  for wheel in ("grain==0.2.18", "array_record==0.8.6", "portpicker==1.6.0",
                "ml_collections==1.1.0"):
    assert text.count(wheel) >= 2, wheel  # in the header and in --fetch-wheels
