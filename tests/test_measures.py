"""Analysis measures: a new one is one module and one registration line.

The toy measure below (the weight distance between two copies) is registered
here, in the test, and runs through the analysis stage of a tiny pipeline.
"""
import dataclasses
import os
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest

import conftest

from conftest import REPO
from lmcjax import analysis
from lmcjax import execution as execution_lib
from lmcjax import logs
from lmcjax import modelid
from lmcjax import pipeline
from lmcjax import results
from lmcjax import runtime
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import measures


# ---------------------------------------------------------------- the toy measure


def _check(config) -> None:
  c = config.analysis.weight_distance
  for i in c.copies:
    validate.require(0 <= i < config.analysis.num_branches,
                     f"analysis.weight_distance.copies entry {i} is not a copy")


def _run(ctx, c) -> float:
  a, b = (execution_lib.take(ctx.stacked["params"], i) for i in c.copies)
  return float(np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))))


def _across(ctx, c) -> dict:
  del c
  return {"max": max(m.summary["weight_distance"] for m in ctx.analysed)}


TOY = measures.Measure(
    name="weight_distance", section="weight_distance", check=_check,
    records=("weight_distance",), run=_run,
    record=lambda ctx, c, out: {"weight_distance": out}, run_across=_across,
    scalars=lambda ctx, rec: dict(rec),
    defaults=ml_collections.ConfigDict(dict(copies=(0, 1))))


@pytest.fixture
def toy():
  measures.register(TOY)
  yield TOY
  measures.unregister(TOY.name)


def _config(with_toy: bool = True):
  """The dense net of sklearn digits' 16-unit MLP from init, 2 copies of 1 epoch, only paths."""
  c = conftest.digits_config(("analysis",))
  a = c.analysis
  a.start, a.num_branches, a.num_alphas, a.eval_splits = "init", 2, 3, ("test",)
  a.landscape.kinds, a.hessian.enabled = (), False
  if with_toy:
    a.weight_distance = measures.default_section(TOY.name)
  return c


# ---------------------------------------------------------------- through the stage


def test_a_registered_measure_runs_in_the_stage_and_its_record_is_saved(toy, tmp_path):
  wd = str(tmp_path)
  summary = pipeline.run(_config(), wd)["analysis"]
  model = summary["models"]["dense"]
  saved = logs.read_json(os.path.join(layout.analysis_model_dir(wd, "dense"), "summary.json"))
  assert saved["weight_distance"] == model["weight_distance"] > 0.0  # SGD noise moves copies apart
  assert "weight_distance_s" in model["timings"] and "barriers" in model  # built-ins still run
  assert summary["weight_distance"] == {"max": model["weight_distance"]}
  # The number is the distance between the saved copies, reloaded.
  run = results.load(wd)
  a, b = (run.params(f"analysis/dense/copy_{i:02d}") for i in (0, 1))
  want = np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))
  assert model["weight_distance"] == pytest.approx(float(want), rel=1e-6)


def test_a_registered_measure_without_its_section_does_not_run(toy, tmp_path):
  s = runtime.setup(_config(with_toy=False))
  summary = analysis.run_stage(s, str(tmp_path), logs.MetricsLog(str(tmp_path)))
  assert "weight_distance" not in summary and "weight_distance" not in summary["models"]["dense"]


@pytest.mark.parametrize("edit,match", [
    (lambda a: a.weight_distance.update(copies=(0, 5)), "copies entry 5 is not a copy"),
    (lambda a: setattr(a.weight_distance, "copys", (0, 1)), "weight_distance.copys is not a field"),
    (lambda a: a.weight_distance.__delattr__("copies"), "weight_distance lacks copies"),
])
def test_a_bad_measure_section_is_one_line_before_compute(toy, edit, match):
  config = _config()
  edit(config.analysis)
  with pytest.raises(validate.InputError, match=match) as err:
    pipeline.check_config(config)
  assert "\n" not in str(err.value)


def test_a_section_of_no_registered_measure_is_refused():
  config = _config(with_toy=False)
  config.analysis.weight_distance = ml_collections.ConfigDict(dict(copies=(0, 1)))
  with pytest.raises(validate.InputError, match="analysis.weight_distance is the section of no "
                     "registered measure"):
    pipeline.check_config(config)


# ---------------------------------------------------------------- the registry


@pytest.mark.parametrize("change,match", [
    (dict(check=None), "registered without its 'check'"),
    (dict(run=None, run_across=None), "without 'run' or 'run_across'"),
    (dict(record=None), "declares no 'record' and 'records'"),
    (dict(records=()), "declares no 'record' and 'records'"),
    (dict(pool=lambda root, per_seed: None), "declares no 'report' that writes them"),
    (dict(name="instability"), "measure 'instability' is registered twice"),
    (dict(section="hessian"), "section 'hessian' is taken by measure 'hessian'"),
    (dict(records=("barriers",)), "records 'barriers', which measure 'interpolation' records"),
    (dict(records=("timings",)), "records 'timings', which the stage writes itself"),
    (dict(name="figures"), "summary.json\\['figures'\\] is the stage's own"),
])
def test_an_incomplete_or_clashing_measure_is_refused_with_one_line(change, match):
  before = measures.names()
  with pytest.raises(validate.InputError, match=match) as err:
    measures.register(dataclasses.replace(TOY, **change))
  assert "\n" not in str(err.value)
  assert measures.names() == before


def test_a_duplicate_name_is_refused(toy):
  with pytest.raises(validate.InputError, match="'weight_distance' is registered twice"):
    measures.register(dataclasses.replace(TOY, section="other"))


def test_a_record_other_than_the_declared_one_is_refused():
  sloppy = dataclasses.replace(TOY, record=lambda ctx, c, out: {"distance": out})
  ctx = types.SimpleNamespace(model=modelid.ModelId("real", 3))
  with pytest.raises(validate.InputError, match="recorded \\['distance'\\] for real_r03, but "
                     "declares \\['weight_distance'\\]"):
    measures.record_of(sloppy, ctx, None, 1.0)


def test_default_section_is_a_fresh_copy(toy):
  section = measures.default_section(TOY.name)
  section.copies = (1, 2)
  assert measures.default_section(TOY.name).copies == (0, 1)
  with pytest.raises(validate.InputError, match="declares no defaults"):
    measures.default_section("hessian")


# ---------------------------------------------------------------- model ids


@pytest.mark.parametrize("model,name", [
    (modelid.DENSE, "dense"), (modelid.ModelId("real", 1), "real_r01"),
    (modelid.ModelId("random", 12), "random_r12"),
    (modelid.ModelId("my_source", 100), "my_source_r100"),
])
def test_a_model_id_round_trips_through_its_name(model, name):
  assert model.name == name
  assert modelid.ModelId.parse(name) == model


def test_report_and_results_read_model_ids_without_importing_the_stage():
  code = ("import sys; from lmcjax import report, results; "
          "print(sorted(m for m in sys.modules if m.startswith('lmcjax.analysis')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "[]"
