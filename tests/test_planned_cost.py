"""Each measure's declared cost (measures.Measure.cost) is what it computes.

A tiny digits pipeline (an MLP with 2 hidden layers, so REPAIR corrects 2)
runs the interpolation measure and the three connectivity measures with
every path kind they have: REPAIR, activation matching, aligned masks, a
rewind point after init, and with cross_seed's dense nets or without them
(then its masked nets train the dense runs' prefixes, and mask_transfer the
whole dense runs). Counters wrapped around the functions that train and
evaluate record what each measure did; the costs counted from the config
alone (measures.planned_costs, what bench/estimate_cost.py prices) must
match: the nets trained, their examples, and the forward examples.
"""
import collections
import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import conftest

from lmcjax import branches
from lmcjax import interpolate
from lmcjax import landscape
from lmcjax import pipeline
from lmcjax import runtime
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import measures
from lmcjax.analysis import targets
from lmcjax.connectivity import activation_matching
from lmcjax.connectivity import repair

# The measures the config enables with a declared cost (all but the Hessian).
sys.path.insert(0, os.path.join(conftest.REPO, "bench"))
import estimate_cost  # pylint: disable=g-import-not-at-top,wrong-import-position

MEASURED = ("interpolation", "landscape", "instability", "successive_rounds", "cross_seed",
            "mask_transfer")


def _config(cross_seed_dense: bool = True):
  c = conftest.digits_config(("train", "imp", "analysis", "report"), hidden=(16, 12))
  c.imp.update(sources=("real", "random"), rounds=2, rewind_step=5, retrain_rounds="all")
  a = c.analysis
  a.num_branches, a.num_alphas, a.eval_splits = 2, 3, ("test",)
  a.landscape.update(kinds=("random_1d",), resolution=3)
  a.hessian.enabled = False  # its cost is not checked here (Hessian-vector products)
  a.instability.update(enabled=True, rewind_epochs=(0.5,), num_copies=2, num_alphas=3)
  a.successive_rounds.update(enabled=True, num_alphas=4)
  a.cross_seed = measures.default_section("cross_seed")
  # The MLP has no norm: the default modes are 'interpolate' and 'repair'.
  a.cross_seed.update(enabled=True, num_inits=3, num_alphas=3, correction_batches=2,
                      correction_batch_size_examples=64, include_dense=cross_seed_dense)
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
    self._wrap(monkeypatch, repair, "repair_path", self._repair_path)
    self._wrap(monkeypatch, activation_matching, "activation_matching", self._matching)
    self._wrap(monkeypatch, inits_lib.Inits, "accuracy", self._accuracy)
    self._wrap(monkeypatch, branches, "trained_copies", self._trained_copies)
    self._wrap(monkeypatch, branches, "copy_test_errors", self._copy_test_errors)
    self._wrap(monkeypatch, landscape, "evaluate_grid", self._evaluate_grid)
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
    self.forward[self.active] += len(alphas) * images.shape[0]
    if kw.get("bn_mode") == "reset" and jax.tree.leaves(a["batch_stats"]):
      self.forward[self.active] += len(alphas) * kw["bn_images"].shape[0] * kw["bn_images"].shape[1]
    return original(model, a, b, alphas, images, labels, **kw)

  def _repair_path(self, original, module, a, b, alphas, images, **kw):
    # Both endpoints' statistics, then each repaired layer's at every alpha.
    layers = repair.repaired_layers(module, a, images.shape[1:])
    self.forward[self.active] += (2 + len(alphas) * len(layers)) * images.shape[0]
    return original(module, a, b, alphas, images, **kw)

  def _trained_copies(self, original, s, *args, num_copies, **kw):
    copies = original(s, *args, num_copies=num_copies, **kw)
    self.trained[self.active].append(("copies", num_copies * copies.cost["examples_seen"]))
    return copies

  def _copy_test_errors(self, original, s, stacked, num_copies):
    self.forward[self.active] += num_copies * s.x_test.shape[0]
    return original(s, stacked, num_copies)

  def _evaluate_grid(self, original, model, plane, axes, stats, images, labels, **kw):
    self.forward[self.active] += int(np.prod([len(axis) for axis in axes])) * images.shape[0]
    return original(model, plane, axes, stats, images, labels, **kw)

  def _matching(self, original, module, structure, a, b, images, **kw):
    self.forward[self.active] += 2 * images.shape[0]
    return original(module, structure, a, b, images, **kw)

  def _accuracy(self, original, inits, variables):
    self.forward[self.active] += inits.s.x_test.shape[0]
    return original(inits, variables)


@pytest.fixture(scope="module", params=[True, False], ids=["cross_seed_dense", "masks_only"])
def counted(request, tmp_path_factory):
  monkeypatch = pytest.MonkeyPatch()
  counters = _Counters(monkeypatch)
  config = _config(cross_seed_dense=request.param)
  wd = str(tmp_path_factory.mktemp("planned_cost"))
  try:
    summary = pipeline.run(config, wd)
  finally:
    monkeypatch.undo()
  s = runtime.setup(config)
  variables = {"params": s.init_params, "batch_stats": s.init_batch_stats}
  sizes = measures.Sizes({"train": int(s.x_train.shape[0]), "test": int(s.x_test.shape[0]),
                          "distilled": 0}, s.model, variables, s.dataset.image_shape, 10)
  planned = dict(measures.planned_costs(config, sizes, *targets.planned_counts(config)))
  return counters, planned, summary, wd, config


def test_the_planned_models_are_the_analysed_ones(counted):
  _, _, summary, _, config = counted
  assert targets.planned_counts(config)[0] == len(summary["analysis"]["models"])
  measured = summary["analysis"]["cross_seed"]["models"]
  assert sorted(m.name for m in inits_lib.planned_models(config, config.analysis.cross_seed)) == (
      sorted(name for name in measured if name != "dense"))


def _total(jobs):
  return sum(jobs.values())


def test_the_nets_trained_are_the_planned_ones_each_counted_once(counted):
  counters, planned, _, _, config = counted
  nets = planned["cross_seed"].train_examples
  prefixes = {key: n for key, n in nets.items() if key[1] == "dense_prefix"}
  assert prefixes, "the config's rewind step should plan prefixes"
  trained = counters.trained["cross_seed"]
  if config.analysis.cross_seed.include_dense:
    # Its dense runs come first and save the rewind point on their way: the
    # prefixes planned_nets counts (an over-estimate) never run.
    assert len(trained) == len(nets) - len(prefixes)
    assert sum(n for _, n in trained) == _total(nets) - _total(prefixes)
  else:
    assert len(trained) == len(nets) and sum(n for _, n in trained) == _total(nets)
  # The ticket and as-is nets are cross_seed's: mask_transfer trains the
  # aligned ones, and the dense runs where cross_seed trained none.
  own = planned["mask_transfer"].train_examples
  assert own and {key[1] for key in own} == (
      {"masked"} if config.analysis.cross_seed.include_dense else {"masked", "dense"})
  assert all(key[4] for key in own if key[1] == "masked")
  assert sum(n for _, n in counters.trained["mask_transfer"]) == _total(own)
  assert len(counters.trained["mask_transfer"]) == len(own)
  assert not counters.trained["successive_rounds"]
  assert not planned["successive_rounds"].train_examples


@pytest.mark.parametrize("name", MEASURED)
def test_the_forward_examples_are_the_planned_ones(counted, name):
  counters, planned, _, _, config = counted
  assert counters.forward[name] == _total(planned[name].forward_examples) > 0


def test_estimate_cost_reads_the_time_of_every_part_it_prices(counted):
  _, planned, _, wd, _ = counted
  seconds = estimate_cost.measured_seconds(wd)
  assert {"analysis", "- copies"} | {f"- {name}" for name in planned} <= set(seconds)
  assert all(seconds[f"- {name}"] > 0 for name in ("copies",) + MEASURED)


@pytest.mark.parametrize("args, match", [
    (["--config.data.name=cifar11"], "data.name"),
    (["--config.data.name=npz", "--config.data.npz_path=/nonexistent.npz"], "nonexistent.npz"),
    (["--measured=/nonexistent_run"], "not the workdir of a finished run"),
])
def test_estimate_cost_refuses_bad_input_in_one_line(args, match):
  script = os.path.join(conftest.REPO, "bench", "estimate_cost.py")
  done = subprocess.run([sys.executable, script, "--config",
                         os.path.join(conftest.REPO, "configs", "imp_smoke.py")] + args,
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("lmcjax: error:") and match in last, done.stderr[-2000:]


def test_the_copies_row_is_what_the_stage_trains_and_evaluates(counted):
  counters, _, _, _, config = counted
  s = runtime.setup(config)
  (part, trained, forward), *_ = estimate_cost.analysis_counts(
      config, int(s.x_train.shape[0]), int(s.x_test.shape[0]), 10, s.dataset.image_shape)
  assert part == "copies"
  assert sum(n for _, n in counters.trained[None]) == trained > 0
  assert counters.forward[None] == forward > 0


def test_instability_trains_its_copies_as_planned(counted):
  counters, planned, _, _, _ = counted
  assert sum(n for _, n in counters.trained["instability"]) == _total(
      planned["instability"].train_examples) > 0
