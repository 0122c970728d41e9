"""bench/estimate_cost.py counts what the stages really train (on a tiny run)."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import REPO
from lmcjax.configs import imp_smoke
from lmcjax.configs.parts import model as model_part
from lmcjax import data as data_lib
from lmcjax import pipeline

sys.path.insert(0, os.path.join(REPO, "bench"))
import estimate_cost  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_dataset_table_matches_the_bundled_data(name):
  ds = {"digits": data_lib.load_digits, "mnist5k": data_lib.load_mnist5k}[name]()
  n_train, n_test, shape, classes = estimate_cost.DATASETS[name]
  assert (len(ds.y_train), len(ds.y_test), tuple(ds.image_shape), ds.num_classes) == (
      n_train, n_test, shape, classes)


def test_counts_match_the_examples_a_run_records(tmp_path):
  config = imp_smoke.get_config()
  config.stages = ("distill", "train", "imp")
  config.imp.sources = ("real", "random", "distilled")
  d = config.distill
  d.method, d.ipc, d.dm.iterations = "dm", 2, 2
  d.model = model_part.get("mlp", hidden=(16,))
  d.eval.num_seeds, d.eval.spec.epochs, d.eval.initial = 2, 3, True
  summary = pipeline.run(config, str(tmp_path))
  n_train, _, _, classes = estimate_cost.DATASETS["digits"]

  assert estimate_cost.run_examples(config.train, n_train) == summary["train"]["examples_seen"]

  cost = summary["imp"]["data_cost"]
  # Round 0 of every source is the train stage's dense run, counted there.
  round0 = summary["train"]["examples_seen"]
  recorded = (sum(c["retrain_examples_seen"] for c in cost.values() if isinstance(c, dict)
                  and "retrain_examples_seen" in c) - 3 * round0
              + cost["distilled"]["mask_examples_seen"])
  assert sum(estimate_cost.imp_counts(config, n_train, classes)) == recorded

  counted = estimate_cost.distill_counts(config, n_train, classes)[1]
  assert counted == _recorded_eval_examples(str(tmp_path), d.eval.spec)
  assert np.isfinite(estimate_cost.estimate(config)[0][0][2])


def _recorded_eval_examples(workdir, spec):
  with open(os.path.join(workdir, "distill", "eval.json")) as f:
    evals = json.load(f)
  return sum(len(v["accuracies"]) * v["steps"] * min(spec.batch_size, v["num_images"])
             for v in evals.values())


def test_distill_eval_counts_with_multiformation(tmp_path):
  config = imp_smoke.get_config()
  config.stages = ("distill",)
  d = config.distill
  d.method, d.ipc = "idc", 2  # factor 2: 8 decoded images per class, baseline 2 per class
  d.idc.update(dict(iterations=1, inner_steps=1, batch_real=8, batch_inner=8))
  d.model = model_part.get("mlp", hidden=(16,))
  d.eval.num_seeds, d.eval.spec.epochs, d.eval.initial = 2, 3, True
  pipeline.run(config, str(tmp_path))
  n_train, _, _, classes = estimate_cost.DATASETS["digits"]
  counted = estimate_cost.distill_counts(config, n_train, classes)[1]
  assert counted == _recorded_eval_examples(str(tmp_path), d.eval.spec)
