"""The exact GGN diagonal, where it is the Hessian diagonal, Lanczos and SLQ."""
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

# Tiny members of each model family; True where the GGN diagonal should be
# the Hessian diagonal (piecewise linear in each weight, eval-mode BN included).
FAMILIES = {
    "mlp": (models.MLP(3, (5,)), (3, 3, 1), True),
    "convnet_none_avg": (models.ConvNet(3, 2, 3, "none", "avg"), (4, 4, 1), True),
    "convnet_none_max": (models.ConvNet(3, 2, 3, "none", "max"), (4, 4, 1), True),
    "convnet_batch": (models.ConvNet(3, 1, 3, "batch", "avg"), (4, 4, 1), True),
    "resnet_batch": (models.ResNet(3, (2,), (1,), "batch"), (4, 4, 1), True),
    "vgg_batch": (models.VGG(3, (3, "M", 3, "M")), (4, 4, 1), True),
    "convnet_instance": (models.ConvNet(3, 1, 3, "instance", "avg"), (4, 4, 1), False),
    "convnet_layer": (models.ConvNet(3, 1, 3, "layer", "avg"), (4, 4, 1), False),
}


def _problem(name, n=6, dtype=jnp.float64, batch=4, **kwargs):
  """The loss problem of a tiny family member on n examples, in dtype, `batch`
  examples per chunk.

  BatchNorm statistics are perturbed away from (0, 1) so eval mode is a real
  affine map.
  """
  model, shape, _ = FAMILIES[name]
  params, stats = train.init_variables(model, jax.random.PRNGKey(0), shape)
  cast = lambda t, k: jax.tree.map(
      lambda p: (p + 0.3 * jax.random.normal(jax.random.PRNGKey(k), p.shape)).astype(dtype), t)
  stats = jax.tree.map(jnp.abs, cast(stats, 1))
  x = jax.random.normal(jax.random.PRNGKey(2), (n,) + shape, dtype)
  y = jnp.arange(n, dtype=jnp.int32) % 3
  return LossProblem(model, cast(params, 3), stats, x, y, batch, **kwargs)


def _dense_ggn(problem):
  """J^T H_out J / N built densely from the full Jacobian of the logits, (P, P).

  The labels do not enter: the GGN of softmax cross-entropy does not depend on them.
  """
  flat, unravel = ravel_pytree(problem.params)
  logits = lambda f: train.forward(problem.model, unravel(f), problem.batch_stats,
                                   problem.images, train=False)[0]
  jac = jax.jacrev(logits)(flat)  # (N, C, P)
  p = jax.nn.softmax(logits(flat))
  h_out = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p)
  return np.asarray(jnp.einsum("ncp,ncd,ndq->pq", jac, h_out, jac) / problem.num_examples,
                    np.float64)


def _dense_hessian(make, problem):
  """The full (P, P) Hessian of the operator make(problem) in float64."""
  flat, unravel = ravel_pytree(problem.params)
  loss = make(problem)
  return np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat), np.float64)


def _full(problem):
  return _dense_hessian(curvature.make_loss, problem)


@pytest.mark.parametrize("name", ["mlp", "convnet_none_avg", "convnet_instance"])
def test_ggn_diagonal_is_the_diagonal_of_the_dense_ggn(name):
  with jax.enable_x64(True):
    problem = _problem(name)
    ggn = _dense_ggn(problem)
    got = ravel_pytree(curvature.ggn_diagonal(problem, chunk_examples=4))[0]
  np.testing.assert_allclose(got, np.diag(ggn), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_residual_diagonal_vanishes_exactly_where_ggn_is_declared_exact(name):
  # H = GGN + residual as matrices; the residual's diagonal is zero (to
  # rounding) for the families declared piecewise linear in each weight,
  # and clearly not for instance/layer norm.
  with jax.enable_x64(True):
    problem = _problem(name)
    full, ggn = _full(problem), _dense_ggn(problem)
    residual = _dense_hessian(curvature.make_residual_loss, problem)
  np.testing.assert_allclose(full, ggn + residual, atol=1e-10 * np.abs(full).max())
  scale = np.abs(np.diag(full)).max()
  vanishes = np.abs(np.diag(residual)).max() <= 1e-10 * scale
  declared, reason = curvature.ggn_is_hessian_diagonal(problem.model)
  assert vanishes == declared == FAMILIES[name][2], reason
  if not declared:  # the off-diagonal residual is what makes these nets nonlinear
    assert np.abs(np.diag(residual)).max() > 1e-3 * scale


def test_ggn_diagonal_is_the_hessian_diagonal_of_a_relu_mlp():
  with jax.enable_x64(True):
    problem = _problem("mlp", n=20)
    full = _full(problem)
    got = curvature.hessian_diagonal(problem, jax.random.PRNGKey(0), method="ggn",
                                     chunk_examples=6)
  assert got.exact and got.method == "ggn" and "exact Hessian diagonal" in got.label
  np.testing.assert_allclose(ravel_pytree(got.values)[0], np.diag(full), rtol=1e-5, atol=1e-12)


def test_residual_estimate_closes_most_of_the_instance_norm_gap():
  problem = _problem("convnet_instance", n=8, dtype=jnp.float32, batch=8)
  want = ravel_pytree(curvature.exact_diagonal(problem))[0]
  ggn = ravel_pytree(curvature.ggn_diagonal(problem))[0]
  key = jax.random.PRNGKey(1)
  both = curvature.hessian_diagonal(problem, key, method="auto", max_probes=512,
                                    chunk_probes=128)
  plain = curvature.hessian_diagonal(problem, key, method="hutchinson", max_probes=512,
                                     chunk_probes=128)
  assert both.method == "ggn+residual" and not both.exact
  error = lambda d: np.linalg.norm(ravel_pytree(d.values)[0] - want)
  gap = np.linalg.norm(ggn - want)
  assert gap > 0.05 * np.linalg.norm(want)  # the GGN alone is not the Hessian here
  assert error(both) < 0.5 * gap
  # The residual has less off-diagonal mass than H: smaller error, smaller SE.
  assert error(both) < error(plain) and both.relative_stderr < plain.relative_stderr
  np.testing.assert_allclose(ravel_pytree(both.ggn)[0], ggn, rtol=1e-6)


def test_masked_entries_are_exactly_zero_and_excluded():
  problem = _problem("mlp", dtype=jnp.float32)
  mask = jax.tree.map(lambda p: (jax.random.uniform(jax.random.PRNGKey(4), p.shape) < 0.5)
                      .astype(p.dtype), problem.params)
  diag = curvature.ggn_diagonal(problem.with_mask(mask), chunk_examples=4)
  dense = curvature.ggn_diagonal(problem, chunk_examples=4)
  for d, full, m in zip(*(jax.tree.leaves(t) for t in (diag, dense, mask))):
    keep = np.asarray(m) != 0
    assert np.all(d[~keep] == 0.0)
    np.testing.assert_allclose(d[keep], full[keep], rtol=1e-6)
  rows = curvature.layer_summaries(diag, mask)
  kernel = np.asarray(mask["Dense_0"]["kernel"])
  assert rows["Dense_0/kernel"]["excluded"] == int((kernel == 0).sum())
  assert rows["Dense_0/kernel"]["min"] > 0  # no excluded zero among the kept entries


def test_lanczos_top3_match_eigvalsh_and_respect_a_mask():
  with jax.enable_x64(True):
    problem = _problem("mlp", n=20, batch=8)
    full = _full(problem)
    got = curvature.lanczos(problem, jax.random.PRNGKey(5), k=3, max_iters=60, tol=1e-6)
    mask = jax.tree.map(lambda p: (jax.random.uniform(jax.random.PRNGKey(6), p.shape) < 0.6)
                        .astype(p.dtype), problem.params)
    masked = curvature.lanczos(problem.with_mask(mask), jax.random.PRNGKey(5), k=3,
                               max_iters=60, tol=1e-6)
    keep = np.asarray(ravel_pytree(mask)[0]) != 0
  np.testing.assert_allclose(got.eigenvalues, np.linalg.eigvalsh(full)[::-1][:3], rtol=1e-4)
  assert got.converged and np.all(got.residuals <= 1e-6 * np.abs(got.eigenvalues))
  sub = np.linalg.eigvalsh(full[np.ix_(keep, keep)])[::-1][:3]
  np.testing.assert_allclose(masked.eigenvalues, sub, rtol=1e-4)


def _softmax_regression(unit_inputs=1):
  """130 parameters (64 inputs x 2 classes + 2 biases) at zero weights, 50 examples a chunk.

  The inputs have zero mean and second moments exactly diag(1, 0.95, ...,
  0.95), with `unit_inputs` ones; with the bias input 1, H = diag(1, ...,
  0.95, ..., 1) (x) H_out and H_out = diag(p) - p p^T at p = (1/2, 1/2) has
  eigenvalues 1/2 and 0. So the spectrum is 0.5 (unit_inputs + 1 times),
  0.475 and 0: a 0.95 gap that stalls power iteration, and a Krylov space
  from one vector that is invariant after 3 steps, holding one 0.5.
  """
  n, d = 100, 64
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(n, d + 1)))[0]
  basis = basis - basis.mean(0)  # zero mean, then re-orthonormalise
  basis = np.linalg.qr(basis)[0][:, :d]
  scales = np.sqrt(np.r_[np.ones(unit_inputs), np.full(d - unit_inputs, 0.95)] * n)
  x = jnp.asarray((basis * scales).reshape(n, 8, 8, 1), jnp.float32)
  model = models.MLP(2, ())
  params = jax.tree.map(jnp.zeros_like, train.init_variables(model, jax.random.PRNGKey(0),
                                                             (8, 8, 1))[0])
  return LossProblem(model, params, {}, x, jnp.arange(n, dtype=jnp.int32) % 2, 50)


def _dense_eigenvalues(problem):
  """All eigenvalues of the problem's Hessian, descending, from jax.hessian."""
  flat, unravel = ravel_pytree(problem.params)
  loss = curvature.make_loss(problem)
  return np.linalg.eigvalsh(np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat)))[::-1]


def test_lanczos_finds_0p5_on_the_softmax_regression_power_iteration_misses():
  problem = _softmax_regression()
  assert ravel_pytree(problem.params)[0].size == 130
  exact = _dense_eigenvalues(problem)
  np.testing.assert_allclose(exact[0], 0.5, rtol=1e-5)
  got = curvature.lanczos(problem, jax.random.PRNGKey(7), k=1, max_iters=130, tol=1e-4)
  assert got.converged and got.residuals[0] <= 1e-4 * 0.5
  np.testing.assert_allclose(got.eigenvalues[0], 0.5, rtol=1e-4)
  assert got.iterations <= 3  # k = 1 never restarts: one copy of the top value is enough
  early = curvature.lanczos(problem, jax.random.PRNGKey(7), k=1, max_iters=2, tol=1e-6)
  assert not early.converged  # judged by the residual, not by a stalled estimate


@pytest.mark.parametrize("unit_inputs,want", [(1, (0.5, 0.5, 0.475)), (2, (0.5, 0.5, 0.5))])
def test_lanczos_finds_repeated_top_eigenvalues_from_every_key(unit_inputs, want):
  # One Krylov block holds one copy of each eigenvalue; without a restart at
  # the invariant space, k = 3 returned 0.5, 0.475, 0 (or 0.475 twice).
  problem = _softmax_regression(unit_inputs)
  exact = _dense_eigenvalues(problem)
  np.testing.assert_allclose(exact[:3], want, rtol=1e-5)
  for seed in range(10):
    got = curvature.lanczos(problem, jax.random.PRNGKey(seed), k=3, max_iters=130, tol=1e-3)
    np.testing.assert_allclose(got.eigenvalues, exact[:3], rtol=1e-4, err_msg=f"key {seed}")
    assert got.converged and np.all(got.residuals <= 1e-3 * np.abs(got.eigenvalues)), seed
    assert got.num_hvps == got.iterations + 3


def test_slq_density_integrates_to_one_and_its_mean_is_trace_over_n():
  problem = _problem("mlp", n=20, dtype=jnp.float32, batch=8)
  exact = ravel_pytree(curvature.exact_diagonal(problem))[0]
  out = curvature.spectral_density(problem, jax.random.PRNGKey(8), num_probes=40, steps=12)
  grid, density = out["grid"], out["density"]
  assert np.all(density >= 0)
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-3)
  np.testing.assert_allclose(np.trapezoid(grid * density, grid), out["mean"],
                             atol=1e-3 * np.abs(grid).max())
  assert out["dimension"] == exact.size
  assert abs(out["mean"] - exact.sum() / exact.size) <= 4 * out["mean_stderr"]


def test_layer_top_eigenvalues_are_those_of_the_diagonal_blocks():
  with jax.enable_x64(True):
    problem = _problem("mlp", n=20, batch=8)
    full = _full(problem)
    got = curvature.layer_top_eigenvalues(problem, jax.random.PRNGKey(9), max_iters=60,
                                          tol=1e-8)
  assert set(got) == {"Dense_0/kernel", "Dense_1/kernel"}
  params = problem.params
  sizes = [np.size(p) for p in jax.tree.leaves(params)]
  offsets = np.cumsum([0] + sizes)
  names = [masks.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for i, name in enumerate(names):
    if name in got:
      block = full[offsets[i]:offsets[i + 1], offsets[i]:offsets[i + 1]]
      np.testing.assert_allclose(got[name]["eigenvalues"][0], np.linalg.eigvalsh(block)[-1],
                                 rtol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda p: curvature.ggn_diagonal(p, chunk_examples=0), "GGN chunk_examples must be > 0"),
    (lambda p: curvature.lanczos(p, jax.random.PRNGKey(0), k=1000),
     "k=1000 is larger than the .* unpruned parameters"),
    (lambda p: curvature.hessian_diagonal(p, jax.random.PRNGKey(0), method="newton"),
     "hessian method"),
    (lambda p: curvature.spectral_density(p, jax.random.PRNGKey(0), steps=0),
     "density steps must be > 0"),
    (lambda p: p.with_mask({"Dense_0": {"kernel": np.ones(3)}}), "mask does not match"),
])
def test_bad_input_is_a_one_line_error(call, match):
  tiny = _problem("mlp", dtype=jnp.float32)
  problem = LossProblem(tiny.model, tiny.params, {}, tiny.images, tiny.labels)
  with pytest.raises(validate.InputError, match=match) as error:
    call(problem)
  assert "\n" not in str(error.value)


def test_ggn_as_the_hessian_is_refused_on_a_norm_model_with_the_reason():
  problem = _problem("convnet_instance", dtype=jnp.float32)
  with pytest.raises(validate.InputError, match="instance norm .* use 'ggn\\+residual'"):
    curvature.hessian_diagonal(problem, jax.random.PRNGKey(0), method="ggn")
