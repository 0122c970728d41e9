"""A finished run, read back: every network, TensorBoard curves and progress lines.

All tests read the one shared smoke pipeline run (conftest.smoke_pipeline).
"""
import glob
import json
import os

import chex
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from lmcjax import interpolate
from lmcjax import masks
from lmcjax import results
from lmcjax import validate

ANALYSED = ("dense", "random_r01", "real_r01")


@pytest.fixture(scope="module")
def run(smoke_pipeline):
  return results.load(smoke_pipeline[0])


def test_every_network_is_listed(run):
  assert run.names("dense") == ["dense"]
  assert run.names("rewind") == ["dense/step_0000005", "imp/rewind"]
  assert run.names("imp") == [f"imp/{s}/round_{k:02d}" for s in ("random", "real") for k in (0, 1)]
  assert run.names("branch") == [f"analysis/{m}/copy_{i:02d}" for m in ANALYSED for i in range(3)]
  assert run.mask("dense") is None and run.mask("analysis/dense/copy_00") is None


def test_each_reloaded_network_reproduces_its_recorded_numbers(run):
  train = run.summary["train"]
  assert run.evaluate("dense") == {"loss": train["test_loss"], "accuracy": train["test_accuracy"]}
  for row in run.imp_rows:
    assert row["retrained"]
    name = f"imp/{row['source']}/round_{row['round']:02d}"
    assert run.evaluate(name)["accuracy"] == row["test_accuracy"], name
    assert masks.sparsity(run.mask(name), run.setup.prunable) == pytest.approx(row["sparsity"])
  for model in ANALYSED:
    recorded = run.summary["analysis"]["models"][model]["branch_test_error"]
    assert [1.0 - run.evaluate(f"analysis/{model}/copy_{i:02d}")["accuracy"]
            for i in range(3)] == recorded, model
  # IMP rewinds to step 5 of the dense run: both saved copies are that state.
  chex.assert_trees_all_equal(run.variables("imp/rewind"), run.variables("dense/step_0000005"))


def test_a_reloaded_branch_pair_reproduces_the_recorded_barrier_exactly(run):
  recorded = run.interpolation("real_r01", "test")["pairs"][0]
  a, b = (run.variables(f"analysis/real_r01/copy_{i:02d}") for i in (recorded["i"], recorded["j"]))
  path = interpolate.evaluate_path(run.model, a, b, recorded["alphas"], run.setup.x_test,
                                   run.setup.y_test, mask=run.mask("analysis/real_r01/copy_00"),
                                   eval_batch_size=run.config.eval_batch_size,
                                   chunk_alphas=run.config.analysis.chunk_alphas)
  assert path["error_barrier"] == recorded["error_barrier"] > 0.0
  assert path["loss"] == recorded["loss"]


def test_unknown_network_is_one_line_naming_the_saved_ones(run):
  with pytest.raises(validate.InputError, match="no saved network 'dense/final'.*imp/rewind"):
    run.variables("dense/final")
  with pytest.raises(validate.InputError, match="not an lmcjax workdir"):
    results.load(os.path.dirname(run.workdir))


def test_training_curves_are_readable_tensorboard_scalars(smoke_pipeline):
  workdir = smoke_pipeline[0]
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  events = event_accumulator.EventAccumulator(workdir)
  events.Reload()
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if r["stage"] == "train" and "loss" in r]
  got = [(e.step, e.value) for e in events.Scalars("train/loss")]
  assert len(got) > 3 and got == [(r["step"], np.float32(r["loss"])) for r in train]
  tags = events.Tags()["scalars"]
  assert ("imp/real/1/retrain/loss" in tags
          and "analysis/dense/test/interpolate/error_barrier_mean" in tags)
  assert "imp/summary/rewind_step" in tags  # a finished stage's numbers


def test_the_pipeline_reports_each_stage_and_loop_progress(smoke_pipeline):
  stderr = smoke_pipeline[1]
  assert "pipeline: stage 3/4 analysis: The analysis stage" in stderr
  assert "pipeline: stage report finished" in stderr
  assert "imp real: 2/2 rounds (100%)" in stderr
  assert "analysis: 1/3 models (33%)" in stderr and "ETA" in stderr
