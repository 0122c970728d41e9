"""The 'subset' mask source: IMP on the real images the distilled set started from."""
import os

import jax
import numpy as np
import pytest

from conftest import digits_config
from lmcjax import imp
from lmcjax import logs
from lmcjax import pipeline
from lmcjax import rng
from lmcjax import runtime
from lmcjax import synthetic
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import targets
from lmcjax.configs.parts import model as model_part
from lmcjax.distill import core


def tiny_config(stages=("distill", "train", "imp", "report"),
                sources=("real", "distilled", "subset")):
  """Digits, DM for 3 iterations at 2 images per class, one IMP round."""
  c = digits_config(stages)
  d = c.distill
  d.method, d.ipc, d.dm.iterations = "dm", 2, 3
  d.model = model_part.get("mlp", hidden=(16,))
  d.eval.num_seeds, d.eval.spec.epochs, d.eval.baseline = 1, 2, False
  c.imp.sources, c.imp.rounds = sources, 1
  c.imp.distilled_train.epochs = 20
  return c


def _mask(s, workdir, source):
  return jax.tree.leaves(imp.load_mask(s, workdir, source, 1))


def _same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One pipeline run; records the data and spec of every IMP training run."""
  workdir = str(tmp_path_factory.mktemp("subset"))
  config = tiny_config()
  calls = {}
  real_train_run = runtime.train_run

  def recording(s, spec, *args, stage="", images=None, labels=None, **kwargs):
    calls[stage] = {"spec": spec.to_dict(), "images": None if images is None else
                    np.asarray(images), "labels": None if labels is None else np.asarray(labels),
                    "seed_path": kwargs.get("seed_path")}
    return real_train_run(s, spec, *args, stage=stage, images=images, labels=labels, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(runtime, "train_run", recording)
    summary = pipeline.run(config, workdir)
  return config, workdir, summary, calls, runtime.setup(config)


def test_the_distill_stage_saves_the_real_images_it_started_from(run):
  config, workdir, _, _, s = run
  images, labels, meta = synthetic.load(layout.distilled_set(workdir))
  start_images, start_labels, start_meta = synthetic.load(synthetic.starting_path(
      layout.distilled_set(workdir)))
  assert meta["starting"] == synthetic.STARTING_FILE and start_meta["iterations"] == 0
  d = config.distill
  # The same seed path as the distillation's own initialisation.
  want = core.init_images(rng.named_key(d.seed, "distill", "init"), s.x_train, s.y_train,
                          s.dataset.num_classes, d.ipc, "real")
  np.testing.assert_array_equal(start_images, np.asarray(want))
  np.testing.assert_array_equal(start_labels, labels)
  real = np.asarray(s.x_train).reshape(len(s.x_train), -1)
  for image in start_images.reshape(len(start_images), -1):
    assert np.any(np.all(real == image, axis=1)), "a starting image is not a real image"
  assert not np.allclose(images, start_images), "DM did not move the images"


def test_subset_trains_on_the_starting_images_with_the_distilled_recipe(run):
  config, workdir, summary, calls, s = run
  subset, distilled = calls["imp/subset/0/distilled"], calls["imp/distilled/0/distilled"]
  start_images, start_labels, _ = synthetic.load(synthetic.starting_path(
      layout.distilled_set(workdir)))
  images, _, _ = synthetic.load(layout.distilled_set(workdir))
  np.testing.assert_array_equal(subset["images"], start_images)
  np.testing.assert_array_equal(subset["labels"], start_labels)
  np.testing.assert_array_equal(distilled["images"], images)
  assert subset["spec"] == distilled["spec"] == config.imp.distilled_train.to_dict()
  assert subset["seed_path"] == distilled["seed_path"]
  assert not _same(_mask(s, workdir, "subset"), _mask(s, workdir, "distilled"))
  cost = summary["imp"]["data_cost"]
  assert cost["subset"]["mask_distinct_examples"] == len(start_images)
  assert cost["real_over_subset"]["distinct_examples"] == len(s.x_train) / len(start_images)
  assert summary["imp"]["small_sets"]["starting"].endswith(synthetic.STARTING_FILE)
  md = open(os.path.join(workdir, "report.md")).read()
  assert "subset: real images the distilled set started from" in md
  assert "Real IMP over subset IMP" in md


def test_same_images_give_the_same_mask(run, tmp_path):
  """The recipe is the distilled source's: handed its own starting images as the
  distilled set, 'distilled' finds exactly the subset mask."""
  config, workdir, _, _, s = run
  start_images, labels, meta = synthetic.load(synthetic.starting_path(
      layout.distilled_set(workdir)))
  path = str(tmp_path / "set" / "synthetic.npz")
  synthetic.save_distilled(path, start_images, labels, meta, start_images)
  c = tiny_config(stages=("train", "imp"), sources=("distilled", "subset"))
  c.imp.distilled_path = path
  pipeline.check_config(c)
  imp.run_stage(runtime.Setup(**{**s.__dict__, "config": c}), str(tmp_path),
                logs.MetricsLog(str(tmp_path)))
  assert _same(_mask(s, str(tmp_path), "subset"), _mask(s, str(tmp_path), "distilled"))
  assert _same(_mask(s, str(tmp_path), "subset"), _mask(s, workdir, "subset"))


def _one_line(config, match):
  with pytest.raises(validate.InputError, match=match) as e:
    pipeline.check_config(config)
  assert "\n" not in str(e.value)


def test_subset_without_the_distill_stage_is_one_line():
  _one_line(tiny_config(stages=("train", "imp")), "list 'distill' in config.stages")


def test_subset_from_noise_is_one_line():
  c = tiny_config()
  c.distill.init = "noise"
  _one_line(c, "starts the set from noise")


@pytest.mark.parametrize("option", ["distill.load_path", "imp.distilled_path"])
def test_a_set_without_starting_images_is_one_line(run, tmp_path, option):
  _, workdir, _, _, _ = run
  images, labels, meta = synthetic.load(layout.distilled_set(workdir))
  path = str(tmp_path / "external.npz")
  synthetic.save(path, images, labels, {k: v for k, v in meta.items() if k != "starting"})
  c = tiny_config()
  section, field = option.split(".")
  c[section][field] = path
  _one_line(c, "carries no starting images")


def test_an_old_distilled_set_fails_in_one_line_before_any_imp_file(run, tmp_path):
  """A workdir whose distill stage ran before starting images were saved."""
  _, workdir, _, _, s = run
  images, labels, meta = synthetic.load(layout.distilled_set(workdir))
  synthetic.save(layout.distilled_set(str(tmp_path)), images, labels,
                 {k: v for k, v in meta.items() if k != "starting"})
  c = tiny_config(sources=("subset",))
  with pytest.raises(validate.InputError, match="carries no starting images") as e:
    imp.run_stage(runtime.Setup(**{**s.__dict__, "config": c}), str(tmp_path),
                  logs.MetricsLog(str(tmp_path)))
  assert "\n" not in str(e.value)
  assert not os.path.exists(layout.imp_dir(str(tmp_path)))


def test_subset_is_an_analysis_target():
  c = tiny_config()
  c.analysis.targets = ("subset:1", "distilled:1")
  targets.check(c)
  c.analysis.targets = ("subsets:1",)
  with pytest.raises(validate.InputError, match="source='subsets' is not one of"):
    targets.check(c)


@pytest.mark.parametrize("source, retrained", [
    ("real", (1, 2, 3)), ("distilled", ()), ("subset", ()), ("random", ()),
    # combined prunes its real-data run from round 2 (combined_distilled_rounds=2),
    # so that run exists whatever retrain_rounds says; its last round has no mask to find.
    ("combined", (2,)),
])
def test_real_data_runs_follow_the_declarations(source, retrained):
  c = tiny_config(sources=(source,))
  c.imp.update(rounds=3, retrain_rounds="none", combined_distilled_rounds=2)
  assert tuple(k for k in range(1, 4) if imp.retrains(c, source, k)) == retrained
  assert imp.retrains(c, source, 0)  # round 0 is the dense run
