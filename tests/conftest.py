"""Shared test fixtures: tiny configs that exercise the real code paths."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from configs import smoke  # pylint: disable=g-import-not-at-top


@pytest.fixture
def smoke_config():
  """configs/smoke.py: a 32-unit MLP on MNIST-5k for 2 epochs."""
  return smoke.get_config()


# A whole pipeline on sklearn digits with an IMP round, a rewind point at step
# 5 and every analysis, small. Logged every 10 steps for the training curves.
PIPELINE = ("--config", "configs/imp_smoke.py",
            "--config.stages=('train','imp','analysis','report')",
            "--config.imp.rounds=1", "--config.imp.rewind_step=5", "--config.log_every_steps=10",
            "--config.analysis.landscape.resolution=5", "--config.analysis.hessian.max_probes=8")


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory):
  """(workdir, stderr) of one finished PIPELINE run, shared by the tests that only
  read it. Mark them @pytest.mark.xdist_group("smoke_pipeline") so that
  `-n 2` (pytest.ini: --dist loadgroup) runs them on one worker and it runs once."""
  workdir = tmp_path_factory.mktemp("smoke_pipeline")
  done = run_main("--workdir", str(workdir), *PIPELINE)
  assert done.returncode == 0, done.stderr[-2000:]
  return str(workdir), done.stderr


def run_main(*args, timeout=300, **kwargs):
  """Runs launch/main.py in a subprocess; returns CompletedProcess. kwargs go to
  subprocess.run (e.g. preexec_fn)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "main.py"), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)
