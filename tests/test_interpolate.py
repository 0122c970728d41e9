"""Interpolation paths, barriers, masks along the path, BN reset, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import execution as execution_lib
from lmcjax import interpolate
from lmcjax import masks
from lmcjax import models
from lmcjax import train
from lmcjax import validate

SHAPE = (4, 4, 1)


def _data(n=48, classes=3, seed=0):
  x = jax.random.normal(jax.random.PRNGKey(seed), (n,) + SHAPE)
  return x, jnp.arange(n, dtype=jnp.int32) % classes


def _ends(model, seeds=(0, 1)):
  out = []
  for s in seeds:
    params, stats = train.init_variables(model, jax.random.PRNGKey(s), SHAPE)
    out.append({"params": params, "batch_stats": stats})
  return out


def _half_mask(params, seed=0):
  prunable = masks.prunable_tree(params)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  out = [(jax.random.uniform(k, leaf.shape) < 0.5).astype(leaf.dtype) if p
         else jnp.ones_like(leaf)
         for k, leaf, p in zip(keys, leaves, jax.tree.leaves(prunable))]
  return jax.tree.unflatten(tree, out)


def test_alpha_zero_and_one_return_the_endpoints_exactly():
  a, b = _ends(models.MLP(3, (8,)))
  for alpha, want in ((0.0, a), (1.0, b)):
    got = interpolate.interpolate(a["params"], b["params"], jnp.float32(alpha))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want["params"])):
      np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_path_endpoints_evaluate_like_the_endpoints():
  model = models.MLP(3, (8,))
  a, b = _ends(model)
  x, y = _data()
  path = interpolate.evaluate_path(model, a, b, interpolate.default_alphas(5), x, y,
                                   chunk_alphas=2, eval_batch_size=16)
  evaluate = train.make_eval_fn(model, 16)
  for index, end in ((0, a), (-1, b)):
    want = evaluate(end["params"], end["batch_stats"], x, y)
    np.testing.assert_allclose(path["loss"][index], float(want["loss"]), rtol=1e-6)
    np.testing.assert_allclose(path["accuracy"][index], float(want["accuracy"]))
  assert len(path["loss"]) == 5


def test_identical_models_have_zero_barriers():
  model = models.MLP(3, (8,))
  a, _ = _ends(model)
  x, y = _data()
  path = interpolate.evaluate_path(model, a, a, interpolate.default_alphas(31), x, y)
  for name in interpolate.BARRIERS:
    assert abs(path[name]) < 1e-6, (name, path[name])


def test_barriers_of_a_hand_computed_curve():
  # Extrapolated alphas at both ends (so the endpoints are found by value, not
  # position) hold the largest values, which the maxima must skip.
  alphas = [-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
  loss = [9.0, 1.0, 2.625, 2.5, 3.375, 3.0, 9.0]
  error = [0.9, 0.25, 0.5, 0.625, 0.375, 0.125, 1.0]
  got = interpolate.barriers(np.float32(alphas), loss, error)
  # error: max over [0, 1] is 0.625 (alpha 0.5); endpoint mean (0.25 + 0.125) / 2
  # = 0.1875; barrier 0.4375.
  # loss: max over [0, 1] is 3.375 (alpha 0.75); endpoint mean (1 + 3) / 2 = 2;
  # barrier 1.375.
  # chord 1 + 2 alpha = 1, 1.5, 2, 2.5, 3 at alpha 0 .. 1; loss minus chord
  # = 0, 1.125, 0.5, 0.875, 0: the largest gap (alpha 0.25) is not at the
  # largest loss (alpha 0.75, gap 0.875).
  # error chord 0.25 - 0.125 alpha; error minus chord = 0, 0.28125, 0.4375,
  # 0.21875, 0: at alpha 0.5 the chord is the endpoints' mean.
  want = {"error_barrier": 0.4375, "loss_barrier": 1.375, "loss_barrier_chord": 1.125,
          "error_barrier_chord": 0.4375}
  assert got == pytest.approx(want, abs=1e-12)  # and no key more or less


def test_logistic_regression_loss_lies_below_the_chord():
  # hidden=() is multinomial logistic regression: the loss is convex in params.
  model = models.MLP(3, ())
  a, b = _ends(model, seeds=(3, 4))
  b["params"] = jax.tree.map(lambda p: 5.0 * p, b["params"])  # far apart: a curved path
  x, y = _data()
  path = interpolate.evaluate_path(model, a, b, interpolate.default_alphas(31), x, y)
  assert path["loss_barrier_chord"] <= 1e-6
  alphas, loss = np.asarray(path["alphas"]), np.asarray(path["loss"])
  chord = (1 - alphas) * loss[0] + alphas * loss[-1]
  assert np.all(loss <= chord + 1e-5)
  assert np.any(loss < chord - 1e-3)  # strictly convex somewhere: the test can fail


def test_masks_hold_along_the_path_including_extrapolation():
  model = models.MLP(3, (8,))
  a, b = _ends(model)
  mask = _half_mask(a["params"])
  for alpha in (-0.5, 0.0, 0.3, 1.0, 1.7):
    theta = interpolate.interpolate(a["params"], b["params"], jnp.float32(alpha), mask)
    for p, m in zip(jax.tree.leaves(theta), jax.tree.leaves(mask)):
      assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0.0)
  # The evaluated path uses the masked weights: at alpha 0 it equals the
  # masked endpoint, not the unmasked one.
  x, y = _data()
  path = interpolate.evaluate_path(model, a, b, np.array([-0.5, 0.0, 1.0, 1.5]), x, y,
                                   mask=mask)
  masked = train.make_eval_fn(model)(masks.apply(a["params"], mask), {}, x, y)
  np.testing.assert_allclose(path["loss"][1], float(masked["loss"]), rtol=1e-6)
  assert len(path["loss"]) == 4


def test_batch_statistics_are_a_fixed_point_of_the_train_mode_update():
  model = models.ConvNet(3, depth=1, width=4, norm="batch")
  (a,) = _ends(model, seeds=(0,))
  x, _ = _data(32)
  batches = x.reshape((1, 32) + SHAPE)
  stats = interpolate.batch_statistics(model, a["params"], a["batch_stats"], batches)
  _, updated = train.forward(model, a["params"], stats, x, train=True)
  for s, u in zip(jax.tree.leaves(stats), jax.tree.leaves(updated)):
    np.testing.assert_allclose(np.asarray(s), np.asarray(u), rtol=1e-4, atol=1e-6)
  # Two copies of the batch give the same statistics as one.
  twice = interpolate.batch_statistics(model, a["params"], a["batch_stats"],
                                       jnp.concatenate([batches, batches]))
  for s, t in zip(jax.tree.leaves(stats), jax.tree.leaves(twice)):
    np.testing.assert_allclose(np.asarray(s), np.asarray(t), rtol=1e-5, atol=1e-7)


def test_bn_reset_and_interpolated_statistics_are_both_reported():
  model = models.ConvNet(3, depth=1, width=4, norm="batch")
  a, b = _ends(model)
  x, y = _data()
  bn = interpolate.bn_batches(x, 16, 2, jax.random.PRNGKey(0))
  alphas = interpolate.default_alphas(5)
  lerp = interpolate.evaluate_path(model, a, b, alphas, x, y, bn_mode="interpolate")
  reset = interpolate.evaluate_path(model, a, b, alphas, x, y, bn_mode="reset", bn_images=bn)
  assert (lerp["bn_mode"], reset["bn_mode"]) == ("interpolate", "reset")
  # Fresh init statistics (0, 1) are far from the recomputed ones.
  assert not np.allclose(lerp["loss"], reset["loss"])


def test_pairwise_covers_every_pair():
  model = models.MLP(3, (8,))
  ends = _ends(model, seeds=(0, 1, 2))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *ends)
  x, y = _data()
  out = interpolate.pairwise(model, stacked, interpolate.default_alphas(3), x, y)
  assert [(p["i"], p["j"]) for p in out["pairs"]] == [(0, 1), (0, 2), (1, 2)]
  assert out["summary"]["error_barrier_max"] == max(p["error_barrier"] for p in out["pairs"])


def test_chunked_vmap_matches_a_loop_for_any_chunk():
  xs = jnp.arange(7.0)
  for chunk in (1, 3, 7, 10):
    got = jax.jit(lambda v, c=chunk: execution_lib.chunked_vmap(lambda t: t * t, v, c))(xs)
    # Exact in any program: one multiply of small integers rounds nothing.
    np.testing.assert_array_equal(np.asarray(got), np.asarray(xs * xs))


@pytest.mark.parametrize("case", ["tree", "chunk", "empty", "no_endpoint", "bn_images"])
def test_bad_input_is_a_clear_error(case):
  model = models.MLP(3, (8,))
  a, b = _ends(model)
  x, y = _data()
  kwargs = dict(alphas=interpolate.default_alphas(5), images=x, labels=y)
  if case == "tree":
    (other,) = _ends(models.MLP(3, (6,)), seeds=(1,))
    b, match = other, "does not match|has shape"
  elif case == "chunk":
    kwargs["chunk_alphas"], match = 0, "chunk_alphas must be > 0"
  elif case == "empty":
    kwargs.update(images=x[:0], labels=y[:0])
    match = "empty split"
  elif case == "no_endpoint":
    kwargs["alphas"], match = np.array([0.0, 0.5]), "alpha 1.0"
  else:
    model = models.ConvNet(3, depth=1, width=4, norm="batch")
    a, b = _ends(model)
    kwargs["bn_mode"], match = "reset", "training batches"
  with pytest.raises(validate.InputError, match=match):
    interpolate.evaluate_path(model, a, b, **kwargs)


def test_sequential_and_vmapped_alphas_give_the_same_path():
  # A BatchNorm ConvNet with a mask, BN reset, and 3 chunks of test examples:
  # one jitted call per alpha (CPU) and the vmapped chunks of alphas
  # (accelerators) evaluate the same models.
  model = models.ConvNet(3, depth=1, width=4, norm="batch")
  a, b = _ends(model)
  x, y = _data()
  bn = interpolate.bn_batches(x, 16, 2, jax.random.PRNGKey(0))
  kwargs = dict(mask=_half_mask(a["params"]), bn_mode="reset", bn_images=bn,
                eval_batch_size=16, chunk_alphas=2)
  alphas = np.array([0.0, 0.4, 1.0, 1.3], np.float32)
  paths = {e: interpolate.evaluate_path(model, a, b, alphas, x, y, execution=e, **kwargs)
           for e in ("vmapped", "sequential")}
  np.testing.assert_allclose(paths["sequential"]["loss"], paths["vmapped"]["loss"], rtol=1e-5)
  np.testing.assert_allclose(paths["sequential"]["error"], paths["vmapped"]["error"], atol=1e-7)
  assert execution_lib.resolve("auto", a["params"]) == (
      "sequential" if jax.default_backend() == "cpu" else "vmapped")
