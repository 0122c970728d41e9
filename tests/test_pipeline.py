"""The whole pipeline: kill -9 in the middle of stages, rerun, same results.json."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import PIPELINE
from conftest import REPO


def _main(workdir):
  return [sys.executable, os.path.join(REPO, "launch", "main.py"), "--workdir", str(workdir),
          *PIPELINE]


def _run_killed_when(workdir, marker, delay_s):
  """Starts the pipeline and SIGKILLs it `delay_s` after `marker` appears."""
  proc = subprocess.Popen(_main(workdir), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(workdir, marker)) and proc.poll() is None:
    assert time.time() < deadline, f"{marker} never appeared"
    time.sleep(0.05)
  time.sleep(delay_s)
  if proc.poll() is None:
    proc.send_signal(signal.SIGKILL)
  proc.wait()
  return proc.returncode


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_sigkill_during_stages_then_rerun_gives_bit_identical_results(tmp_path, smoke_pipeline):
  whole, killed = smoke_pipeline[0], tmp_path / "killed"

  codes = [_run_killed_when(killed, "stages/imp.inputs.json", 1.0),
           _run_killed_when(killed, "stages/analysis.inputs.json", 1.0)]
  assert -signal.SIGKILL in codes  # at least one run really died mid-stage
  assert not os.path.exists(killed / "stages" / "analysis.done.json") or codes[1] == 0
  rerun = subprocess.run(_main(killed), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert _results(killed) == _results(whole)
  assert _results(whole)["barriers"] and _results(whole)["accuracy"]
