"""A model and a distillation method registered inside this file run through
the pipeline like the built-in ones, and a registration lacking a property is
refused with one line: extending lmcjax is one module plus one registration."""
import dataclasses
import os

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import conftest

from lmcjax import checkpoints
from lmcjax import models
from lmcjax import pipeline
from lmcjax import synthetic
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.configs.parts import distill as distill_part
from lmcjax.configs.parts import model as model_part
from lmcjax.distill import core
from lmcjax.distill import methods
from lmcjax.distill import registry as distill_registry


class TanhNet(nn.Module):
  """Not piecewise linear, and its classifier head is named, not Dense_N."""
  num_classes: int
  width: int = 16

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.tanh(nn.Dense(self.width, name="hidden")(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes, name="head")(x)


TOY_MODEL = models.Registration(
    name="toy_tanh", build=TanhNet, defaults=dict(width=16), norm="none",
    piecewise_linear=False, classifier="head", permutation="sequential")


@pytest.fixture
def toy_model():
  models.register(TanhNet, TOY_MODEL)
  yield
  models.unregister("toy_tanh")


def test_a_registered_model_runs_through_pruning_barriers_and_curvature(toy_model, tmp_path):
  c = conftest.digits_config(("train", "imp", "analysis", "report"))
  c.model = model_part.get("toy_tanh", width=12)
  c.train.epochs = 2
  c.prune.scope = "hidden_kernels"  # keeps the head dense: found by its declared name
  c.imp.sources, c.imp.rounds = ("real",), 1
  a = c.analysis
  a.num_branches, a.num_alphas, a.eval_splits = 2, 5, ("test",)
  a.landscape.kinds, a.landscape.resolution = ("random_1d",), 5
  a.hessian.update(batch_size_examples=100, num_batches=1, max_probes=8, chunk_probes=4,
                   lanczos_iters=5, density_steps=5)
  a.instability.enabled = False
  summary = pipeline.run(c, str(tmp_path))
  mask = checkpoints.load_tree(layout.mask(str(tmp_path), "real", 1),
                               like={"hidden": {"kernel": np.zeros((64, 12), np.float32),
                                                "bias": np.zeros(12, np.float32)},
                                     "head": {"kernel": np.zeros((12, 10), np.float32),
                                              "bias": np.zeros(10, np.float32)}})
  assert np.all(np.asarray(mask["head"]["kernel"]) == 1)
  assert 0.15 < 1 - np.mean(mask["hidden"]["kernel"]) < 0.25
  analysed = summary["analysis"]["models"]
  assert set(analysed) == {"dense", "real_r01"}
  for model in analysed.values():
    assert np.isfinite(model["barriers"]["test/interpolate"]["error_barrier_mean"])
    # Not piecewise linear: 'auto' adds the residual's estimate to the GGN.
    assert model["hessian"]["method"] == "ggn+residual"
  assert os.path.exists(tmp_path / "report.md")


@pytest.mark.parametrize("missing", ["norm", "classifier", "permutation", "build"])
def test_a_model_registered_without_a_property_is_refused(missing):
  with pytest.raises(validate.InputError, match=f"without its '{missing}' property"):
    models.register(TanhNet, dataclasses.replace(TOY_MODEL, **{missing: None}))
  assert "toy_tanh" not in models.names()


def test_a_model_name_registered_twice_is_refused(toy_model):
  with pytest.raises(validate.InputError, match="registered twice"):
    models.register(TanhNet, TOY_MODEL)


def test_an_unregistered_module_is_one_line():
  with pytest.raises(validate.InputError, match="TanhNet is not a registered lmcjax model"):
    models.info(TanhNet(10))


# ---------------------------------------------------------------- a toy method


def _pixel_mean_matching(problem, m, key_fn, files_dir, log):
  """Matches each class's mean synthetic image to the mean of a real batch."""
  del key_fn, files_dir, log
  tx = core.make_outer_optimizer(m.optimizer, m.lr_images, m.momentum)

  def loss(learn, key, ctx):
    del ctx
    syn = problem.per_class(learn)

    def one_class(c, k):
      real, synthetic_images = problem.siamese_pair(k, c, syn, m.batch_real)
      return jnp.sum((jnp.mean(real, 0) - jnp.mean(synthetic_images, 0)) ** 2)

    return problem.over_classes(one_class, key)

  method = methods.Method(loss, methods.make_step(loss, tx), lambda it, ctx, key: {})
  return method, tx, {}


TOY_METHOD = distill_registry.DistillMethod(
    name="pixel_mean",
    section=lambda: ml_collections.ConfigDict(dict(iterations=3, optimizer="sgd", lr_images=0.5,
                                                   momentum=0.0, batch_real=16)),
    check=lambda m, name: validate.positive(f"{name}.batch_real", m.batch_real),
    build=_pixel_mean_matching, factor=lambda m: 1,
    train_examples=lambda m, classes, per_class, n: m.iterations * classes * per_class)


@pytest.fixture
def toy_method():
  distill_registry.register(TOY_METHOD)
  yield
  distill_registry.unregister("pixel_mean")


def test_a_registered_method_runs_through_the_distill_stage(toy_method, tmp_path):
  c = conftest.digits_config(("distill",))
  c.distill = distill_part.get_section()  # holds the new method's section
  d = c.distill
  d.method, d.ipc = "pixel_mean", 2
  d.model = model_part.get("mlp", hidden=(16,))
  d.augment.kind = "none"
  d.eval.num_seeds, d.eval.spec.epochs = 1, 2
  summary = pipeline.run(c, str(tmp_path))["distill"]
  images, labels, meta = synthetic.load(layout.distilled_set(str(tmp_path)))
  assert meta["method"] == "pixel_mean" and images.shape[0] == 20
  assert summary["last_loss"] < summary["first_loss"]
  with pytest.raises(validate.InputError, match="distill.pixel_mean.batch_real must be > 0"):
    d.pixel_mean.batch_real = 0
    pipeline.check_config(c)


@pytest.mark.parametrize("missing", ["section", "check", "build", "factor", "train_examples"])
def test_a_method_registered_without_a_property_is_refused(missing):
  with pytest.raises(validate.InputError, match=f"without its '{missing}' property"):
    distill_registry.register(dataclasses.replace(TOY_METHOD, **{missing: None}))
  assert "pixel_mean" not in distill_registry.names()
