"""Planes through solutions, filter-normalised directions, grid evaluation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import landscape
from lmcjax import masks
from lmcjax import models
from lmcjax import train
from lmcjax import validate

SHAPE = (4, 4, 1)


def _params(model, seeds):
  return [train.init_variables(model, jax.random.PRNGKey(s), SHAPE)[0] for s in seeds]


def _assert_trees_close(a, b, atol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


def test_three_point_plane_contains_the_three_points():
  thetas = _params(models.MLP(3, (8,)), (0, 1, 2))
  plane = landscape.three_point_plane(*thetas)
  for i, theta in enumerate(thetas):
    _assert_trees_close(landscape.point_params(plane, plane.points[f"theta{i}"]), theta)
  # The basis is orthonormal.
  flat = [jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(d)])
          for d in plane.directions]
  np.testing.assert_allclose(float(flat[0] @ flat[0]), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(flat[1] @ flat[1]), 1.0, rtol=1e-5)
  assert abs(float(flat[0] @ flat[1])) < 1e-5


def test_four_seed_plane_puts_theta0_and_theta1_at_plus_minus_one():
  thetas = _params(models.MLP(3, (8,)), (0, 1, 2, 3))
  plane = landscape.four_seed_plane(*thetas)
  np.testing.assert_allclose(plane.points["theta0"], (1.0, 0.0), atol=1e-5)
  np.testing.assert_allclose(plane.points["theta1"], (-1.0, 0.0), atol=1e-5)
  _assert_trees_close(landscape.point_params(plane, (1.0, 0.0)), thetas[0])
  _assert_trees_close(landscape.point_params(plane, (-1.0, 0.0)), thetas[1])


@pytest.mark.parametrize("name", ["mlp", "convnet"])
@pytest.mark.parametrize("skip", [True, False])
def test_filter_normalisation_gives_each_filter_its_weight_norm(name, skip):
  model = (models.MLP(3, (8,)) if name == "mlp"
           else models.ConvNet(3, depth=1, width=4, norm="instance"))
  (params,) = _params(model, (0,))
  d = landscape.filter_normalized_direction(jax.random.PRNGKey(5), params,
                                            skip_bias_and_norm=skip)
  for (path, w), v in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(d)):
    w, v = np.asarray(w), np.asarray(v)
    if w.ndim <= 1:  # biases and norm parameters
      np.testing.assert_array_equal(v, np.zeros_like(w) if skip else w)
      continue
    axes = tuple(range(w.ndim - 1))
    np.testing.assert_allclose(np.sqrt((v * v).sum(axis=axes)),
                               np.sqrt((w * w).sum(axis=axes)), rtol=1e-5,
                               err_msg=masks.path_name(path))
    assert not np.allclose(v, w)  # a random direction, not the weights


def test_masked_direction_stays_in_the_sparse_subspace():
  (params,) = _params(models.MLP(3, (8,)), (0,))
  mask = jax.tree.map(lambda p: (jnp.arange(p.size).reshape(p.shape) % 3 > 0).astype(p.dtype),
                      params)
  params = masks.apply(params, mask)
  plane = landscape.random_plane(jax.random.PRNGKey(1), params, 2, mask)
  theta = landscape.point_params(plane, (0.7, -1.3), mask)
  for p, m in zip(jax.tree.leaves(theta), jax.tree.leaves(mask)):
    assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0.0)


def test_grid_evaluates_the_solution_at_its_coordinates():
  model = models.MLP(3, (8,))
  thetas = _params(model, (0, 1, 2))
  x = jax.random.normal(jax.random.PRNGKey(9), (40,) + SHAPE)
  y = jnp.arange(40, dtype=jnp.int32) % 3
  evaluate = train.make_eval_fn(model, 16)
  plane = landscape.random_plane(jax.random.PRNGKey(0), thetas[0], 2)
  axes = (np.linspace(-1, 1, 5, dtype=np.float32), np.linspace(-1, 1, 3, dtype=np.float32))
  grid = landscape.evaluate_grid(model, plane, axes, {}, x, y, chunk=4, eval_batch_size=16)
  assert grid["loss"].shape == (3, 5)
  np.testing.assert_allclose(grid["loss"][1, 2], float(evaluate(thetas[0], {}, x, y)["loss"]),
                             rtol=1e-5)
  far = evaluate(landscape.point_params(plane, (1.0, -1.0)), {}, x, y)
  np.testing.assert_allclose(grid["loss"][0, 4], float(far["loss"]), rtol=1e-5)
  line = landscape.random_plane(jax.random.PRNGKey(0), thetas[0], 1)
  grid1 = landscape.evaluate_grid(model, line, landscape.grid_axes(line, 7), {}, x, y)
  assert grid1["loss"].shape == (7,)


def test_bad_input_is_a_clear_error():
  model = models.MLP(3, (8,))
  a, b = _params(model, (0, 1))
  with pytest.raises(validate.InputError, match="collinear"):
    landscape.three_point_plane(a, b, jax.tree.map(lambda p, q: 2 * q - p, a, b))
  (other,) = _params(models.MLP(3, (6,)), (2,))
  with pytest.raises(validate.InputError, match="solution 2"):
    landscape.three_point_plane(a, b, other)
  plane = landscape.random_plane(jax.random.PRNGKey(0), a, 1)
  x = jnp.zeros((4,) + SHAPE)
  y = jnp.zeros((4,), jnp.int32)
  with pytest.raises(validate.InputError, match="chunk must be > 0"):
    landscape.evaluate_grid(model, plane, (np.zeros(3),), {}, x, y, chunk=0)
  with pytest.raises(validate.InputError, match="empty split"):
    landscape.evaluate_grid(model, plane, (np.zeros(3),), {}, x[:0], y[:0])


def test_sequential_and_vmapped_grid_points_agree():
  model = models.ConvNet(3, depth=1, width=3, norm="instance")
  (params,) = _params(model, (0,))
  x = jax.random.normal(jax.random.PRNGKey(9), (40,) + SHAPE)
  y = jnp.arange(40, dtype=jnp.int32) % 3
  plane = landscape.random_plane(jax.random.PRNGKey(0), params, 2)
  axes = (np.linspace(-1, 1, 3, dtype=np.float32), np.linspace(-1, 1, 2, dtype=np.float32))
  grids = {e: landscape.evaluate_grid(model, plane, axes, {}, x, y, chunk=4, eval_batch_size=16,
                                      execution=e) for e in ("vmapped", "sequential")}
  np.testing.assert_allclose(grids["sequential"]["loss"], grids["vmapped"]["loss"], rtol=1e-5)
  np.testing.assert_allclose(grids["sequential"]["error"], grids["vmapped"]["error"], atol=1e-7)
