"""Shared test fixtures: tiny configs that exercise the real code paths."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from lmcjax.configs import smoke  # pylint: disable=g-import-not-at-top


@pytest.fixture
def smoke_config():
  """configs/smoke.py: a 32-unit MLP on MNIST-5k for 2 epochs."""
  return smoke.get_config()


def run_main(*args, timeout=300):
  """Runs launch/main.py in a subprocess; returns CompletedProcess."""
  import subprocess  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "main.py"), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO)
