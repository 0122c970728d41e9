"""launch/main.py end to end, config overrides and one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from conftest import run_main


def test_smoke_run_writes_metrics_and_summary(tmp_path):
  result = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path),
                    "--config.train.epochs=1")
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.load(open(os.path.join(tmp_path, "summary.json")))
  assert summary["train"]["test_accuracy"] > 0.5
  assert summary["train"]["examples_seen"] == summary["train"]["steps"] * 64
  rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert rows and all({"stage", "step"} <= set(r) for r in rows)
  assert any("examples_per_s" in r for r in rows)
  # The override reached the run: one epoch of 4000 examples at batch 64.
  assert summary["train"]["steps"] == 63


@pytest.mark.parametrize("override,match", [
    ("--config.trian.epochs=3", 'Did you mean "train"'),
    ("--config.train.epochs=abc", "epochs=abc"),
    ("--config.train.lr=0", "train.lr must be > 0, got 0"),
    ("--config.train.batch_size=0", "train.batch_size must be > 0, got 0"),
    ("--config.train.epochs=-2", "train.epochs must be > 0, got -2"),
    ("--config.model.name=transformer", "model.name='transformer' is not one of"),
    ("--config.data.name=imagenet", "data.name='imagenet' is not one of"),
])
def test_bad_config_is_one_line_before_compute(tmp_path, override, match):
  result = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path), override,
                    timeout=120)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("lmcjax: error:") and match in last, result.stderr[-1500:]
  assert "Traceback" not in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


def test_missing_config_file(tmp_path):
  result = run_main("--config", "configs/nope.py", "--workdir", str(tmp_path), timeout=60)
  assert result.returncode != 0 and "configs/nope.py" in result.stderr.strip().splitlines()[-1]


def test_unwritable_workdir_fails_before_compute(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  result = run_main("--config", "configs/smoke.py", "--workdir", str(blocker / "run"), timeout=60)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0 and last.startswith("lmcjax: error: cannot write workdir"), last


# The child sets its own file-size limit, then runs launch/main.py: a
# preexec_fn would fork this multithreaded (JAX) process, which can deadlock.
LIMITED_MAIN = ("import resource, runpy, sys; "
                "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000)); "
                "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_full_disk_mid_run_is_one_line_and_leaves_no_torn_file(tmp_path):
  """A file-size limit in the child plays the full disk: the dense run's
  checkpoint (> 50 kB) cannot be written, after the small files were."""
  result = subprocess.run(
      [sys.executable, "-c", LIMITED_MAIN, os.path.join(REPO, "launch", "main.py"), "--config",
       "configs/smoke.py", "--workdir", str(tmp_path), "--config.train.epochs=1"],
      capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0, result.stderr[-1500:]
  assert last.startswith("lmcjax: error: cannot write") and "File too large" in last, last
  assert last.endswith("results written so far are complete, the rest is not")
  written = [os.path.join(root, f) for root, _, files in os.walk(tmp_path) for f in files]
  assert not [f for f in written if ".tmp" in f or ".saving" in f]
  for f in written:
    if f.endswith(".json"):
      json.load(open(f))  # complete, or not there at all
  assert not [d for d, _, _ in os.walk(tmp_path) if d.endswith(os.sep + "final")]


def test_truncated_npz_dataset_is_one_line_before_compute(tmp_path):
  path = tmp_path / "data.npz"
  path.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # a zip header, then nothing
  result = run_main("--config", "configs/smoke.py", "--workdir", str(tmp_path / "run"),
                    "--config.data.name=npz", f"--config.data.npz_path={path}", timeout=120)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-1500:]
  assert last == (f"lmcjax: error: {path}: npz file is truncated or corrupt (BadZipFile: File is "
                  "not a zip file); copy or write it again"), last


def test_rerun_skips_finished_stage_and_config_change_reruns(tmp_path):
  args = ("--config", "configs/smoke.py", "--workdir", str(tmp_path), "--config.train.epochs=1")
  assert run_main(*args).returncode == 0
  first = json.load(open(tmp_path / "stages" / "train.inputs.json"))
  assert first["train"]["epochs"] == 1  # the record names the fields, readable on disk
  again = run_main(*args)
  assert "finished earlier with the same inputs; skipped" in again.stderr
  changed = run_main(*args[:-1], "--config.train.lr=0.02", "--config.train.epochs=1")
  assert "skipped" not in changed.stderr
  assert json.load(open(tmp_path / "stages" / "train.inputs.json"))["train"]["lr"] == 0.02


def test_distill_eval_settings_do_not_invalidate_later_stages():
  from lmcjax.configs import default  # pylint: disable=g-import-not-at-top
  from lmcjax import pipeline  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  before = {s: pipeline.stage_inputs(config, s) for s in ("distill", "imp", "analysis")}
  config.distill.eval.initial = not config.distill.eval.initial  # changes the report only
  assert pipeline.stage_inputs(config, "distill") != before["distill"]
  assert pipeline.stage_inputs(config, "imp") == before["imp"]
  assert pipeline.stage_inputs(config, "analysis") == before["analysis"]
  config.distill.dm.iterations += 1  # changes the distilled set itself
  assert pipeline.stage_inputs(config, "imp") != before["imp"]
