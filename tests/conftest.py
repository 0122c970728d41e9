"""Shared test fixtures: tiny configs that exercise the real code paths."""
import fcntl
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# The test run is a program like launch/main.py: it applies lmcjax's CPU
# settings before JAX starts (importing lmcjax applies nothing).
from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top
cpu_runtime.configure()
from lmcjax.configs import smoke  # pylint: disable=g-import-not-at-top,wrong-import-position


def digits_config(stages, hidden=(16,)):
  """sklearn digits (1.4k 8x8 images), a small MLP trained 1 epoch, nothing
  logged, the default analysis section: the base of the stage tests' configs."""
  from lmcjax.configs import default  # pylint: disable=g-import-not-at-top
  from lmcjax.configs.parts import analysis as analysis_part  # pylint: disable=g-import-not-at-top
  from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top
  from lmcjax.configs.parts import train as train_part  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.stages = tuple(stages)
  c.data.name = "digits"
  c.model = model_part.get("mlp", hidden=hidden)
  c.train = train_part.train_spec(epochs=1)
  c.log_every_steps = 0
  c.analysis = analysis_part.get_section()
  return c


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
  read it. Under pytest-xdist the workers share it through a file lock (the
  xdist recipe for a once-per-session fixture): it runs once, not per worker."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # this session's folder, common to its workers
  workdir, log = root / "smoke_pipeline", root / "smoke_pipeline.stderr"
  with open(root / "smoke_pipeline.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not log.exists():
      done = run_main("--workdir", str(workdir), *PIPELINE)
      assert done.returncode == 0, done.stderr[-2000:]
      log.write_text(done.stderr)
  return str(workdir), log.read_text()


def run_main(*args, timeout=300, **kwargs):
  """Runs launch/main.py in a subprocess; returns CompletedProcess. kwargs go to
  subprocess.run (e.g. env)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", "main.py"), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


def second_seed(workdir, table, shift):
  """{0: workdir's results.json, 1: a copy as another init seed's job would
  write it}: every record of results[table] passed through shift(row), and
  every seed field set to 1. For the measures' pooling over seeds."""
  import copy  # pylint: disable=import-outside-toplevel
  from lmcjax import logs  # pylint: disable=import-outside-toplevel
  results = logs.read_json(os.path.join(workdir, "results.json"))
  other = copy.deepcopy(results)
  for rows in other.values():
    for row in rows if isinstance(rows, list) else ():
      if isinstance(row, dict) and "seed" in row:
        row["seed"] = 1
  other[table] = [shift(row) for row in other[table]]
  return {0: results, 1: other}


def make_tables():
  """docs/make_tables.py as a module (docs/ is no package)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "make_tables", os.path.join(REPO, "docs", "make_tables.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
