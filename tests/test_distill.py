"""Tests of lmcjax.distill on tiny data: real code paths, seconds each."""
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lmcjax.configs import default  # pylint: disable=g-import-not-at-top
from lmcjax.configs.parts import distill as distill_part
from lmcjax.configs.parts import model as model_part
from lmcjax import data as data_lib
from lmcjax.distill import core
from lmcjax.distill import experts
from lmcjax.distill import methods
from lmcjax.distill import trajectory_matching
from lmcjax.distill import stage
from lmcjax import models
from lmcjax import pipeline
from lmcjax import synthetic
from lmcjax import train
from lmcjax import validate

C, PER_CLASS, HW = 3, 12, 8


def tiny_data(seed=0):
  """3 classes of 8x8 images, each class a noisy copy of its own template."""
  rs = np.random.RandomState(seed)
  templates = rs.randn(C, HW, HW, 1).astype(np.float32)
  y = np.repeat(np.arange(C), PER_CLASS).astype(np.int32)
  x = templates[y] + 0.5 * rs.randn(len(y), HW, HW, 1).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def tiny_config(method, **method_overrides):
  c = default.get_config()
  c.distill = distill_part.get_section()
  c.stages = ("distill",)
  d = c.distill
  d.method, d.ipc = method, 2
  d.model = model_part.get("mlp", hidden=(16,))
  # MTT's finite-difference test wants a smooth loss.
  d.augment.kind = "none" if method == "mtt" else "dsa"
  d.dc.update(dict(batch_real=8, inner_steps=2, batch_inner=6, net_reset_every=100, lr_images=0.05))
  d.idc.update(dict(batch_real=8, inner_steps=2, batch_inner=8, net_reset_every=100))
  d.dm.update(dict(batch_real=8, lr_images=0.5))
  d.mtt.update(dict(syn_steps=3, expert_epochs=1, max_start_epoch=1, num_experts=2,
                    batch_teacher=12, lr_teacher=0.05, lr_images=50.0, lr_init=0.05))
  d[method].update(method_overrides)
  return c


def tiny_model():
  return models.MLP(C, (16,))


@pytest.mark.parametrize("method", ["dc", "idc", "dm", "mtt"])
def test_matching_loss_decreases_without_retracing(method):
  chex.clear_trace_counter()  # every parametrisation builds its own step
  c = tiny_config(method)
  x, y = tiny_data()
  m, tx, learn, _ = stage.build(c.distill, tiny_model(), x, y, C)
  # Averaged over fixed draws of network/expert segment, real batch and DSA,
  # so the comparison measures the synthetic set, not the draw.
  keys = jax.random.split(jax.random.PRNGKey(7), 6)
  ctxs = [m.next_context(0, None, k) for k in keys]
  loss = jax.jit(m.loss)
  mean_loss = lambda learn: np.mean([float(loss(learn, k, ctx)) for k, ctx in zip(keys, ctxs)])
  before = mean_loss(learn)
  counted = jax.jit(chex.assert_max_traces(m.step, n=1))
  learn, stats = stage.run_outer(m, tx, learn, 10, jax.random.PRNGKey(1), step=counted)
  after = mean_loss(learn)
  assert np.isfinite(stats["last_loss"])
  assert after < before, (method, before, after)


def test_mtt_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    c = tiny_config("mtt")
    x, y = tiny_data()
    m, _, learn, _ = stage.build(c.distill, tiny_model(), x, y, C)
    ctx = m.next_context(0, None, jax.random.PRNGKey(3))
    as64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
    learn, ctx = as64(learn), as64(ctx)
    key = jax.random.PRNGKey(5)
    loss = lambda images: m.loss({**learn, "images": images}, key, ctx)
    grad = jax.grad(loss)(learn["images"])
    assert grad.dtype == jnp.float64 and bool(jnp.all(jnp.isfinite(grad)))
    direction = jax.random.normal(jax.random.PRNGKey(9), grad.shape, jnp.float64)
    eps = 1e-5
    fd = (loss(learn["images"] + eps * direction)
          - loss(learn["images"] - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(grad, direction)), float(fd), rtol=1e-5)


def test_mtt_remat_gives_the_same_gradient():
  c = tiny_config("mtt")
  x, y = tiny_data()
  grads = []
  for remat in (False, True):
    c.distill.mtt.remat = remat
    m, _, learn, _ = stage.build(c.distill, tiny_model(), x, y, C)
    ctx = m.next_context(0, None, jax.random.PRNGKey(3))
    grads.append(jax.grad(m.loss)(learn, jax.random.PRNGKey(5), ctx))
  chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_multiformation_decode_shapes_and_init():
  x, y = tiny_data()
  images = core.init_images(jax.random.PRNGKey(0), x, y, C, ipc=2, init="real", factor=2)
  assert images.shape == (C * 2, HW, HW, 1)
  decoded, labels = core.training_images(images, core.synthetic_labels(C, 2), 2)
  assert decoded.shape == (C * 2 * 4, HW, HW, 1)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(C), 8))
  p = methods.Problem(tiny_model(), C, (HW, HW, 1), x, y, *core.class_table(y, C), ipc=2, factor=2)
  assert p.per_class({"images": images}).shape == (C, 8, HW, HW, 1)


def test_real_init_takes_distinct_examples_of_each_class():
  x, y = tiny_data()
  images = np.asarray(core.init_images(jax.random.PRNGKey(0), x, y, C, ipc=3))
  xs = np.asarray(x)
  for k, img in enumerate(images):
    match = np.flatnonzero(np.all(xs == img, axis=(1, 2, 3)))
    assert match.size == 1 and int(y[match[0]]) == k // 3
  assert len({im.tobytes() for im in images}) == len(images)


def tiny_dataset():
  x, y = tiny_data()
  return data_lib.Dataset("tiny", np.zeros((len(y), HW, HW, 1), np.uint8), np.asarray(y),
                          np.zeros((3, HW, HW, 1), np.uint8), np.arange(3, dtype=np.int32),
                          C, (0.5,), (0.25,))


def test_save_load_round_trips_exactly(tmp_path):
  images = np.random.RandomState(0).randn(C * 2, HW, HW, 1).astype(np.float32)
  labels = np.asarray(core.synthetic_labels(C, 2))
  meta = {"method": "dm", "ipc": 2, "dataset": "tiny", "mean": [0.5], "std": [0.25], "factor": 1,
          "model": "mlp", "iterations": 3}
  path = str(tmp_path / "synthetic.npz")
  synthetic.save(path, images, labels, meta)
  got_images, got_labels, got_meta = synthetic.load_checked(path, tiny_dataset())
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)
  assert got_meta == meta


@pytest.mark.parametrize("change, message", [
    (lambda im, lb, mt: (im[:, :4], lb, mt), "image shape"),
    (lambda im, lb, mt: (im, lb % 2, mt), "classes"),
    (lambda im, lb, mt: (im, lb, {**mt, "std": [0.3081]}), "normalisation"),
])
def test_bad_distilled_file_is_rejected(tmp_path, change, message):
  images = np.zeros((C * 2, HW, HW, 1), np.float32)
  labels = np.asarray(core.synthetic_labels(C, 2))
  meta = {"method": "dm", "ipc": 2, "dataset": "tiny", "mean": [0.5], "std": [0.25], "factor": 1}
  path = str(tmp_path / "bad.npz")
  synthetic.save(path, *change(images, labels, meta))
  with pytest.raises(validate.InputError, match=message):
    synthetic.load_checked(path, tiny_dataset())


def test_truncated_distilled_set_is_one_line(tmp_path):
  path = str(tmp_path / "synthetic.npz")
  synthetic.save(path, np.zeros((C, HW, HW, 1), np.float32), np.arange(C),
                 {"method": "dm", "ipc": 1, "dataset": "tiny", "mean": [0.5], "std": [0.25],
                  "factor": 1})
  raw = open(path, "rb").read()
  open(path, "wb").write(raw[:len(raw) // 2])  # a copy cut short
  with pytest.raises(validate.InputError, match="distilled set is truncated or corrupt") as e:
    synthetic.load_checked(path, tiny_dataset())
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("field, value, message", [
    ("ipc", 0, "distill.ipc"),
    ("method", "kip", "distill.method"),
])
def test_bad_config_is_rejected(field, value, message):
  c = tiny_config("dm")
  c.distill[field] = value
  with pytest.raises(validate.InputError, match=message):
    stage.check_config(c)


def test_ipc_larger_than_a_class_is_rejected_before_compute():
  c = tiny_config("dm")
  c.distill.ipc = PER_CLASS + 1
  x, y = tiny_data()
  with pytest.raises(validate.InputError, match="real examples per class"):
    stage.build(c.distill, tiny_model(), x, y, C)


def test_expert_checkpoints_of_another_model_are_rejected(tmp_path):
  c = tiny_config("mtt")
  x, y = tiny_data()
  directory = str(tmp_path / "experts")
  c.distill.mtt.expert_dir = directory
  stage.build(c.distill, tiny_model(), x, y, C)
  assert experts.saved_epochs(directory) == 3  # epochs 0..max_start + expert_epochs
  wider = models.MLP(C, (32,))
  with pytest.raises(validate.InputError, match="expert checkpoint"):
    experts.check_experts(directory, trajectory_matching.expert_template(c.distill.mtt, wider,
                                                                           (HW, HW, 1)))


def test_stage_end_to_end_on_digits(tmp_path):
  c = tiny_config("dm", iterations=3)
  c.data.name = "digits"
  c.distill.ipc = 2
  c.distill.model = model_part.get("mlp", hidden=(16,))
  c.distill.eval.num_seeds, c.distill.eval.spec.epochs = 2, 3
  c.distill.eval.initial = True
  summary = pipeline.run(c, str(tmp_path))
  out = summary["distill"]
  assert set(out) >= {"distilled", "random_subset", "initial"}
  images, labels, meta = synthetic.load(os.path.join(str(tmp_path), "distill", "synthetic.npz"))
  assert images.shape == (20, 8, 8, 1) and meta["method"] == "dm" and meta["iterations"] == 3
  assert os.path.isfile(os.path.join(str(tmp_path), "distill", "grid.png"))


def _eval(sets, execution):
  x, y = tiny_data()
  spec = tiny_config("dm").distill.eval.spec
  spec.epochs, spec.augment.kind = 4, "none"
  return stage.evaluate.train_and_test_sets(tiny_model(), spec, sets, x, y, C,
                                            jax.random.PRNGKey(0), execution=execution)


def test_per_seed_sets_train_each_net_on_its_own_set():
  x, y = tiny_data()
  first, second = (x[::6], y[::6]), (x[1::6], y[1::6])
  own = _eval([first, second], execution="sequential")["accuracies"]
  assert own[0] == _eval([first, first], execution="sequential")["accuracies"][0]
  assert own[1] == _eval([second, second], execution="sequential")["accuracies"][1]
  np.testing.assert_allclose(_eval([first, second], execution="vmapped")["accuracies"], own,
                             atol=1e-6)
  with pytest.raises(validate.InputError, match="must hold 6 images"):
    _eval([first, (x[:5], y[:5])], execution="sequential")


def test_a_diverging_vmapped_evaluation_raises_naming_the_net():
  x, y = tiny_data()
  spec = tiny_config("dm").distill.eval.spec
  spec.epochs, spec.augment.kind, spec.lr = 4, "none", 1e8
  with pytest.raises(train.NonFiniteLossError, match=r"in stage 'distill eval net \d' at step"):
    stage.evaluate.train_and_test(tiny_model(), spec, x[::6], y[::6], x, y, C, 2,
                                  jax.random.PRNGKey(0), execution="vmapped")


@pytest.mark.parametrize("learned_lr, meta, expected", [
    (True, {"lr": 0.037}, 0.037),  # MTT's protocol: its learned inner lr
    (False, {"lr": 0.037}, 0.01),
    (True, {}, 0.01),  # DC/DM/IDC sets have no lr
])
def test_eval_spec_uses_the_learned_lr_only_when_asked(learned_lr, meta, expected):
  d = tiny_config("mtt").distill
  d.eval.learned_lr = learned_lr
  assert stage.eval_spec_for(d, meta).lr == pytest.approx(expected)
  assert d.eval.spec.lr == 0.01  # the config itself is untouched
