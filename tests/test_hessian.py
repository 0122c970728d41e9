"""HVPs, the Hutchinson diagonal against the exact one, summaries, bad input.

The GGN diagonal, the residual and Lanczos are in test_curvature.py."""
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import curvature
from lmcjax.curvature import LossProblem
from lmcjax import masks
from lmcjax import models
from lmcjax import train
from lmcjax import validate

SHAPE = (3, 3, 1)


@pytest.fixture(scope="module")
def tiny():
  """A 9-4-3 MLP (55 params) at a random point, and its data."""
  model = models.MLP(3, (4,))
  params, _ = train.init_variables(model, jax.random.PRNGKey(0), SHAPE)
  x = jax.random.normal(jax.random.PRNGKey(1), (40,) + SHAPE)
  y = jnp.arange(40, dtype=jnp.int32) % 3
  return model, params, x, y


def _problem(tiny, **kwargs):
  """The tiny MLP's loss problem, 16 examples per chunk."""
  model, params, x, y = tiny
  return LossProblem(model, params, {}, x, y, batch_size_examples=16, **kwargs)


def _full_hessian(model, params, x, y):
  flat, unravel = ravel_pytree(params)
  loss = curvature.make_loss(LossProblem(model, params, {}, x, y, 16))
  return np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat), np.float64)


@pytest.mark.parametrize("hidden", [(), (4,)])
def test_hvp_matches_finite_differences(tiny, hidden):
  # Central differences of the gradient in float64, with a step small enough
  # that no ReLU pre-activation crosses its kink (the Hessian jumps there).
  _, _, x, y = tiny
  model = models.MLP(3, hidden)
  with jax.enable_x64(True):
    params, _ = train.init_variables(model, jax.random.PRNGKey(0), SHAPE)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    x = x.astype(jnp.float64)
    loss = curvature.make_loss(LossProblem(model, params, {}, x, y, 16))
    v = curvature.rademacher(jax.random.PRNGKey(2), params)
    got = ravel_pytree(curvature.hvp(loss, params, v))[0]
    eps = 1e-6
    shifted = lambda s: ravel_pytree(jax.grad(loss)(
        jax.tree.map(lambda p, d: p + s * eps * d, params, v)))[0]
    want = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_exact_diagonal_is_the_hessian_diagonal(tiny):
  model, params, x, y = tiny
  exact = curvature.exact_diagonal(_problem(tiny), chunk_coordinates=8)
  want = np.diag(_full_hessian(model, params, x, y))
  np.testing.assert_allclose(ravel_pytree(exact)[0], want, rtol=1e-4, atol=1e-6)


def test_hutchinson_converges_to_the_exact_diagonal(tiny):
  exact = ravel_pytree(curvature.exact_diagonal(_problem(tiny)))[0]
  est = curvature.hutchinson(_problem(tiny), jax.random.PRNGKey(3), max_probes=4096,
                             chunk_probes=512)
  got = ravel_pytree(est.diagonal)[0]
  relative = np.linalg.norm(got - exact) / np.linalg.norm(exact)
  assert relative <= 0.05, relative
  np.testing.assert_allclose(est.trace, exact.sum(), rtol=0.05)
  # The reported standard error is honest: the error is within a few SEs.
  assert np.linalg.norm(got - exact) <= 4 * np.linalg.norm(ravel_pytree(est.stderr)[0])


def test_hutchinson_stops_at_the_tolerance_and_ignores_the_chunk_size(tiny):
  key, problem = jax.random.PRNGKey(4), _problem(tiny)
  early = curvature.hutchinson(problem, key, max_probes=4096, chunk_probes=512, tol=0.3)
  assert early.converged and early.num_probes < 4096 and early.relative_stderr <= 0.3
  a = curvature.hutchinson(problem, key, max_probes=10, chunk_probes=4)
  b = curvature.hutchinson(problem, key, max_probes=10, chunk_probes=512)
  assert a.num_probes == b.num_probes == 10
  np.testing.assert_allclose(ravel_pytree(a.diagonal)[0], ravel_pytree(b.diagonal)[0],
                             rtol=1e-5, atol=1e-7)


def test_pruned_entries_are_excluded(tiny):
  params = tiny[1]
  prunable = masks.prunable_tree(params)
  mask = jax.tree.map(lambda p, keep: (jnp.arange(p.size).reshape(p.shape) % 2).astype(p.dtype)
                      if keep else jnp.ones_like(p), params, prunable)
  est = curvature.hutchinson(_problem(tiny, mask=mask), jax.random.PRNGKey(5), max_probes=16,
                             chunk_probes=8)
  for d, m in zip(jax.tree.leaves(est.diagonal), jax.tree.leaves(mask)):
    assert np.all(d[np.asarray(m) == 0] == 0.0)
  rows = curvature.layer_summaries(est.diagonal, mask, bins=5)
  kernel = rows["Dense_0/kernel"]
  assert kernel["excluded"] == 18 and kernel["kept"] == 18
  assert sum(kernel["histogram"]["counts"]) == 18
  np.testing.assert_allclose(kernel["trace"], est.diagonal["Dense_0"]["kernel"].sum(), rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_probes=0), "max_probes must be > 0"),
    (dict(chunk_probes=0), "chunk_probes must be > 0"),
    (dict(empty=True), "empty split"),
    (dict(unlabelled=True), "40 images but 39 labels"),
    (dict(batch_size_examples=0), "batch_size_examples must be > 0"),
])
def test_bad_input_is_a_clear_error(tiny, kwargs, match):
  model, params, x, y = tiny
  if kwargs.pop("empty", False):
    x, y = x[:0], y[:0]
  if kwargs.pop("unlabelled", False):
    y = y[1:]
  batch = kwargs.pop("batch_size_examples", 16)
  with pytest.raises(validate.InputError, match=match):
    curvature.hutchinson(LossProblem(model, params, {}, x, y, batch), jax.random.PRNGKey(0),
                         **kwargs)


@pytest.fixture(scope="module")
def tiny_conv():
  """An instance-norm ConvNet (75 params), where XLA:CPU's execution matters, and its data."""
  model = models.ConvNet(3, depth=1, width=3, norm="instance")
  params, _ = train.init_variables(model, jax.random.PRNGKey(0), (4, 4, 1))
  x = jax.random.normal(jax.random.PRNGKey(1), (10, 4, 4, 1))
  return model, params, x, jnp.arange(10, dtype=jnp.int32) % 3


def test_chunked_loss_and_its_hvp_agree_across_executions(tiny_conv):
  # 10 examples in chunks of 4 (the last one padded): lax.map over the chunks
  # and the Python loop over them are the same sum, value and curvature.
  model, params, x, y = tiny_conv
  v = curvature.rademacher(jax.random.PRNGKey(2), params)
  problem = LossProblem(model, params, {}, x, y, 4)
  out = {}
  for execution in ("vmapped", "sequential"):
    loss = lambda p, e=execution: curvature.make_loss(problem, e)(p)
    out[execution] = jax.jit(lambda p, w, f=loss: (f(p), curvature.hvp(f, p, w)))(params, v)
  # One chunk: no loop at all.
  whole = curvature.make_loss(LossProblem(model, params, {}, x, y, 10))(params)
  np.testing.assert_allclose(float(out["sequential"][0]), float(whole), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(out["vmapped"]), jax.tree.leaves(out["sequential"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_hutchinson_is_the_same_estimate_sequential_or_vmapped(tiny_conv):
  # 10 probes in chunks of 4: the last chunk holds 2 probes, not 4 padded.
  model, params, x, y = tiny_conv
  key = jax.random.PRNGKey(3)
  problem = LossProblem(model, params, {}, x, y, 4)
  runs = {e: curvature.hutchinson(problem, key, max_probes=10, chunk_probes=4, execution=e)
          for e in ("vmapped", "sequential")}
  a, b = runs["vmapped"], runs["sequential"]
  assert a.num_probes == b.num_probes == 10
  np.testing.assert_allclose(ravel_pytree(a.diagonal)[0], ravel_pytree(b.diagonal)[0],
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(ravel_pytree(a.stderr)[0], ravel_pytree(b.stderr)[0],
                             rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(a.trace, b.trace, rtol=1e-4)


def test_exact_diagonal_of_a_convnet_skips_pruned_entries(tiny_conv):
  # 'auto' is one coordinate per call here on CPU; the MLP test above covers
  # the vmapped chunks.
  model, params, x, y = tiny_conv
  flat, unravel = ravel_pytree(params)
  loss = curvature.make_loss(LossProblem(model, params, {}, x, y, 4))
  want = np.diag(np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat)))
  keep = np.arange(flat.size) % 3 != 0
  mask = unravel(jnp.asarray(keep, flat.dtype))
  problem = LossProblem(model, params, {}, x, y, 4, mask=mask)
  got = np.asarray(ravel_pytree(curvature.exact_diagonal(problem))[0])
  assert np.all(got[~keep] == 0.0)
  np.testing.assert_allclose(got[keep], want[keep], rtol=1e-4, atol=1e-6)


def test_exact_diagonal_refuses_above_max_params_before_compute(tiny):
  with pytest.raises(validate.InputError, match="55 here, above max_params=54"):
    curvature.exact_diagonal(_problem(tiny), max_params=54)
