"""Each measure's declared cost (measures.Measure.cost) is what it computes.

A tiny digits pipeline runs the three connectivity measures with every path
kind they have (REPAIR's statistics batches, activation matching, aligned
masks, a rewind point after init). Counters wrapped around the functions they
train and evaluate with record what the run did; the costs counted from the
config alone (measures.planned_costs, what bench/estimate_cost.py prices)
must match: the nets trained, their examples, and the forward examples.
"""
import collections
import dataclasses
import os
import sys

import pytest

import conftest

from lmcjax import interpolate
from lmcjax import pipeline
from lmcjax import runtime
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import measures
from lmcjax.analysis import targets
from lmcjax.connectivity import activation_matching

# The measures the config enables: the copies' paths, and the connectivity measures.
sys.path.insert(0, os.path.join(conftest.REPO, "bench"))
import estimate_cost  # pylint: disable=g-import-not-at-top,wrong-import-position

MEASURED = ("interpolation", "successive_rounds", "cross_seed", "mask_transfer")


def _config():
  c = conftest.digits_config(("train", "imp", "analysis", "report"))
  c.imp.update(sources=("real", "random"), rounds=2, rewind_step=5, retrain_rounds="all")
  a = c.analysis
  a.num_branches, a.num_alphas, a.eval_splits = 2, 3, ("test",)
  a.landscape.kinds, a.hessian.enabled, a.instability.enabled = (), False, False
  a.successive_rounds.update(enabled=True, num_alphas=4)
  a.cross_seed = measures.default_section("cross_seed")
  # The MLP has no norm: the default modes are 'interpolate' and 'repair'.
  a.cross_seed.update(enabled=True, num_inits=3, num_alphas=3, correction_batches=2,
                      correction_batch_size_examples=64)
  a.mask_transfer = measures.default_section("mask_transfer")
  a.mask_transfer.update(enabled=True, num_inits=2, num_alphas=5, sources=("real",),
                         correction_batches=1, correction_batch_size_examples=32)
  return c


class _Counters:
  """What each measure trains and evaluates, counted as it runs: the functions
  that train and evaluate are wrapped, and the registry's measures are
  replaced by ones that say which measure is running."""

  def __init__(self, monkeypatch):
    self.active = None
    self.trained = collections.defaultdict(list)
    self.forward = collections.Counter()
    self._wrap(monkeypatch, runtime, "train_run", self._train_run)
    self._wrap(monkeypatch, interpolate, "evaluate_path", self._evaluate_path)
    self._wrap(monkeypatch, activation_matching, "activation_matching", self._matching)
    self._wrap(monkeypatch, inits_lib.Inits, "accuracy", self._accuracy)
    for name in MEASURED:
      m = measures.get(name)
      hooks = {hook: self._within(name, getattr(m, hook)) for hook in ("run", "run_across")
               if getattr(m, hook) is not None}
      monkeypatch.setitem(measures._REGISTRY, name, dataclasses.replace(m, **hooks))  # pylint: disable=protected-access

  @staticmethod
  def _wrap(monkeypatch, owner, name, counter):
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *args, **kw: counter(original, *args, **kw))

  def _within(self, name, hook):
    def run(*args):
      self.active = name
      try:
        return hook(*args)
      finally:
        self.active = None
    return run

  def _train_run(self, original, s, *args, stage, **kw):
    result = original(s, *args, stage=stage, **kw)
    if self.active:
      self.trained[self.active].append((stage, result.cost["examples_seen"]))
    return result

  def _evaluate_path(self, original, model, a, b, alphas, images, labels, **kw):
    statistics = 0
    if kw.get("bn_mode", "interpolate") != "interpolate":
      statistics = kw["bn_images"].shape[0] * kw["bn_images"].shape[1]
    self.forward[self.active] += len(alphas) * (images.shape[0] + statistics)
    return original(model, a, b, alphas, images, labels, **kw)

  def _matching(self, original, module, structure, a, b, images, **kw):
    self.forward[self.active] += 2 * images.shape[0]
    return original(module, structure, a, b, images, **kw)

  def _accuracy(self, original, inits, variables):
    self.forward[self.active] += inits.s.x_test.shape[0]
    return original(inits, variables)


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
  monkeypatch = pytest.MonkeyPatch()
  counters = _Counters(monkeypatch)
  config = _config()
  wd = str(tmp_path_factory.mktemp("planned_cost"))
  try:
    summary = pipeline.run(config, wd)
  finally:
    monkeypatch.undo()
  s = runtime.setup(config)
  sizes = measures.Sizes({"train": int(s.x_train.shape[0]), "test": int(s.x_test.shape[0]),
                          "distilled": 0}, s.model, 0, 10)
  planned = dict(measures.planned_costs(config, sizes, *targets.planned_counts(config)))
  return counters, planned, summary, wd


def test_the_planned_models_are_the_analysed_ones(counted):
  _, _, summary, _ = counted
  config = _config()
  assert targets.planned_counts(config)[0] == len(summary["analysis"]["models"])
  measured = summary["analysis"]["cross_seed"]["models"]
  assert sorted(m.name for m in inits_lib.planned_models(config, config.analysis.cross_seed)) == (
      sorted(name for name in measured if name != "dense"))


def test_the_nets_trained_are_the_planned_ones_each_counted_once(counted):
  counters, planned, _, _ = counted
  # cross_seed trains every init's dense run first, which saves the rewind
  # point on its way: the prefixes planned_nets counts (an over-estimate) never run.
  nets = planned["cross_seed"].trainings
  prefixes = {key: n for key, n in nets.items() if key[0] == "dense_prefix"}
  assert prefixes, "the config's rewind step should plan prefixes"
  trained = counters.trained["cross_seed"]
  assert len(trained) == len(nets) - len(prefixes)
  assert sum(n for _, n in trained) == sum(nets.values()) - sum(prefixes.values())
  # mask_transfer's ticket and as-is nets are cross_seed's: only the aligned are its own.
  own = planned["mask_transfer"].trainings
  assert own and all(key[0] == "masked" and key[3] for key in own)
  assert sum(n for _, n in counters.trained["mask_transfer"]) == sum(own.values())
  assert len(counters.trained["mask_transfer"]) == len(own)
  assert not counters.trained["successive_rounds"] and not planned["successive_rounds"].trainings


@pytest.mark.parametrize("name", MEASURED)
def test_the_forward_examples_are_the_planned_ones(counted, name):
  counters, planned, _, _ = counted
  assert counters.forward[name] == planned[name].forward_examples > 0


def test_estimate_cost_reads_the_time_of_every_part_it_prices(counted):
  _, planned, _, wd = counted
  seconds = estimate_cost.measured_seconds(wd)
  assert {"analysis", "- copies"} | {f"- {name}" for name in planned} <= set(seconds)
  assert all(seconds[f"- {name}"] > 0 for name in ("copies",) + MEASURED)
