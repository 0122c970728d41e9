"""Sweep expansion, per-job configs, and aggregating real job workdirs."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from lmcjax import aggregate
from lmcjax.configs.parts import sweep as sweep_config
from lmcjax import logs
from lmcjax import sweep
from lmcjax import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _with_axes(config, *axes):
  config.sweep = sweep_config.get_section()
  config.sweep.axes = axes
  return config


@pytest.fixture
def grid_config(smoke_config):
  """3 init seeds x 2 architectures: 6 jobs."""
  return _with_axes(smoke_config, ("seeds.init", (0, 1, 2)), ("model.hidden", ((16,), (8, 8))))


def test_expansion_is_the_product_in_axis_order(grid_config):
  jobs = sweep.expand(grid_config)
  assert [j.index for j in jobs] == list(range(6))
  # The last axis varies fastest.
  assert [(j.overrides["seeds.init"], j.overrides["model.hidden"]) for j in jobs] == [
      (0, (16,)), (0, (8, 8)), (1, (16,)), (1, (8, 8)), (2, (16,)), (2, (8, 8))]
  assert jobs[3].name == "job003_seeds.init=1_model.hidden=8+8"
  assert len({j.name for j in jobs}) == 6
  assert sweep.expand(grid_config) == jobs  # deterministic


def test_no_axes_is_one_job_with_no_overrides(smoke_config):
  jobs = sweep.expand(_with_axes(smoke_config))
  assert [(j.index, j.name, j.overrides) for j in jobs] == [(0, "job000", {})]


def test_config_for_job_applies_its_overrides_to_a_copy(grid_config):
  job_config, name = sweep.config_for_job(grid_config, 3)
  assert name == "job003_seeds.init=1_model.hidden=8+8"
  assert job_config.seeds.init == 1 and tuple(job_config.model.hidden) == (8, 8)
  assert job_config.train.to_dict() == grid_config.train.to_dict()
  assert grid_config.seeds.init == 0 and tuple(grid_config.model.hidden) == (32,)


@pytest.mark.parametrize("index", [-1, 6, 100])
def test_job_index_out_of_range(grid_config, index):
  with pytest.raises(validate.InputError, match=rf"job index {index} is out of range: the sweep "
                     r"has 6 jobs \(0\.\.5\)"):
    sweep.config_for_job(grid_config, index)


@pytest.mark.parametrize("axes, message", [
    ((("seeds.nope", (1, 2)),), "no config field 'seeds.nope'"),
    ((("seeds.init", ()),), "needs a non-empty tuple"),
    ((("seeds.init", (0,)), ("seeds.init", (1,))), "lists 'seeds.init' twice"),
])
def test_bad_axes_fail_before_any_job(smoke_config, axes, message):
  with pytest.raises(validate.InputError, match=message):
    sweep.expand(_with_axes(smoke_config, *axes))


def test_wrong_value_type_names_path_and_value(smoke_config):
  config = _with_axes(smoke_config, ("seeds.init", ("zero",)))
  with pytest.raises(validate.InputError, match="'zero' for 'seeds.init'"):
    sweep.config_for_job(config, 0)


def test_launch_lists_jobs(tmp_path):
  config_file = tmp_path / "sweep_cfg.py"
  config_file.write_text(
      "from lmcjax.configs import smoke\nfrom lmcjax.configs.parts import sweep\n"
      "def get_config():\n  c = smoke.get_config()\n  c.sweep = sweep.get_section()\n"
      "  c.sweep.axes = (('seeds.init', (0, 1)), ('train.lr', (0.1, 0.2, 0.3)))\n  return c\n")
  out = subprocess.run([sys.executable, os.path.join(REPO, "launch", "sweep.py"), "--config",
                        str(config_file), "--workdir", str(tmp_path / "root"), "--list"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert lines[-1] == "6 jobs"
  assert lines[4] == "4\tjob004_seeds.init=1_train.lr=0.2"


def test_aggregate_real_jobs_with_unfinished_and_missing(smoke_config, tmp_path):
  """Four jobs: two run for real, one killed after it started, one never started."""
  smoke_config.train.epochs = 1
  config = _with_axes(smoke_config, ("seeds.init", (0, 1)), ("seeds.data_order", (0, 1)))
  root = str(tmp_path)
  summaries = [sweep.run_job(config, root, i) for i in (0, 1)]
  killed_config, killed = sweep.config_for_job(config, 2)
  os.makedirs(os.path.join(root, killed))
  with open(os.path.join(root, killed, "config.json"), "w") as f:  # what a run writes first
    f.write(killed_config.to_json_best_effort())

  records = aggregate.aggregate(root)
  assert [r["status"] for r in records] == ["done", "done", "unfinished", "missing"]
  assert ([(r["seeds.init"], r["seeds.data_order"]) for r in records]
          == [(0, 0), (0, 1), (1, 0), (1, 1)])
  for record, summary in zip(records, summaries):
    assert record["summary.train.test_accuracy"] == summary["train"]["test_accuracy"]
  # Each job ran its own config: job 1 used data order 1.
  assert logs.read_json(
      os.path.join(root, records[1]["job"], "config.json"))["seeds"]["data_order"] == 1
  assert records[0]["summary.train.train_loss"] != records[1]["summary.train.train_loss"]

  with open(os.path.join(root, "aggregate.json")) as f:
    table = pd.json_normalize(json.load(f))
  assert list(table["status"]) == ["done", "done", "unfinished", "missing"]
  assert table["summary.train.test_accuracy"].notna().sum() == 2
  with open(os.path.join(root, "aggregate.md")) as f:
    md = f.read()
  assert "4 jobs: 2 done, 1 unfinished, 1 missing" in md
  assert f"| {records[3]['job']} | missing |" in md
  # Seeds are averaged: data_order is a seed axis too, so one row over both done jobs.
  assert "(n=2)" in md.split("Mean ± std over seeds")[1]
