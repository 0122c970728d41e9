"""The exact GGN diagonal, where it is the Hessian diagonal, Lanczos and SLQ."""
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import hessian
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


def _problem(name, n=6, dtype=jnp.float64):
  """(model, params, batch_stats, images, labels) of a tiny family member, in dtype.

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
  return model, cast(params, 3), stats, x, y


def _dense_ggn(model, params, stats, x, y):
  """J^T H_out J / N built densely from the full Jacobian of the logits, (P, P)."""
  del y  # the GGN of softmax cross-entropy does not depend on the labels
  flat, unravel = ravel_pytree(params)
  logits = lambda f: train.forward(model, unravel(f), stats, x, train=False)[0]
  jac = jax.jacrev(logits)(flat)  # (N, C, P)
  p = jax.nn.softmax(logits(flat))
  h_out = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p)
  return np.asarray(jnp.einsum("ncp,ncd,ndq->pq", jac, h_out, jac) / x.shape[0], np.float64)


def _dense_hessian(make, model, params, stats, x, y):
  """The full (P, P) Hessian of make(model, stats, x, y, batch_size) in float64."""
  flat, unravel = ravel_pytree(params)
  loss = make(model, stats, x, y, 4)
  return np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat), np.float64)


def _full(model, params, stats, x, y):
  return _dense_hessian(hessian.make_loss, model, params, stats, x, y)


@pytest.mark.parametrize("name", ["mlp", "convnet_none_avg", "convnet_instance"])
def test_ggn_diagonal_is_the_diagonal_of_the_dense_ggn(name):
  with jax.enable_x64(True):
    model, params, stats, x, y = _problem(name)
    ggn = _dense_ggn(model, params, stats, x, y)
    got = ravel_pytree(hessian.ggn_diagonal(model, params, stats, x, y, chunk=4))[0]
  np.testing.assert_allclose(got, np.diag(ggn), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_residual_diagonal_vanishes_exactly_where_ggn_is_declared_exact(name):
  # H = GGN + residual as matrices; the residual's diagonal is zero (to
  # rounding) for the families declared piecewise linear in each weight,
  # and clearly not for instance/layer norm.
  with jax.enable_x64(True):
    model, params, stats, x, y = _problem(name)
    full, ggn = _full(model, params, stats, x, y), _dense_ggn(model, params, stats, x, y)
    residual = _dense_hessian(hessian.make_residual_loss, model, params, stats, x, y)
  np.testing.assert_allclose(full, ggn + residual, atol=1e-10 * np.abs(full).max())
  scale = np.abs(np.diag(full)).max()
  vanishes = np.abs(np.diag(residual)).max() <= 1e-10 * scale
  declared, reason = hessian.ggn_is_hessian_diagonal(model)
  assert vanishes == declared == FAMILIES[name][2], reason
  if not declared:  # the off-diagonal residual is what makes these nets nonlinear
    assert np.abs(np.diag(residual)).max() > 1e-3 * scale


def test_ggn_diagonal_is_the_hessian_diagonal_of_a_relu_mlp():
  with jax.enable_x64(True):
    model, params, stats, x, y = _problem("mlp", n=20)
    full = _full(model, params, stats, x, y)
    got = hessian.hessian_diagonal(model, params, stats, x, y, jax.random.PRNGKey(0),
                                   method="ggn", chunk=6)
  assert got.exact and got.method == "ggn" and "exact Hessian diagonal" in got.label
  np.testing.assert_allclose(ravel_pytree(got.values)[0], np.diag(full), rtol=1e-5, atol=1e-12)


def test_residual_estimate_closes_most_of_the_instance_norm_gap():
  model, params, stats, x, y = _problem("convnet_instance", n=8, dtype=jnp.float32)
  want = ravel_pytree(hessian.exact_diagonal(model, params, stats, x, y, batch_size=8))[0]
  ggn = ravel_pytree(hessian.ggn_diagonal(model, params, stats, x, y))[0]
  key = jax.random.PRNGKey(1)
  both = hessian.hessian_diagonal(model, params, stats, x, y, key, method="auto",
                                  max_probes=512, probe_chunk=128, batch_size=8)
  plain = hessian.hessian_diagonal(model, params, stats, x, y, key, method="hutchinson",
                                   max_probes=512, probe_chunk=128, batch_size=8)
  assert both.method == "ggn+residual" and not both.exact
  error = lambda d: np.linalg.norm(ravel_pytree(d.values)[0] - want)
  gap = np.linalg.norm(ggn - want)
  assert gap > 0.05 * np.linalg.norm(want)  # the GGN alone is not the Hessian here
  assert error(both) < 0.5 * gap
  # The residual has less off-diagonal mass than H: smaller error, smaller SE.
  assert error(both) < error(plain) and both.relative_stderr < plain.relative_stderr
  np.testing.assert_allclose(ravel_pytree(both.ggn)[0], ggn, rtol=1e-6)


def test_masked_entries_are_exactly_zero_and_excluded():
  model, params, stats, x, y = _problem("mlp", dtype=jnp.float32)
  mask = jax.tree.map(lambda p: (jax.random.uniform(jax.random.PRNGKey(4), p.shape) < 0.5)
                      .astype(p.dtype), params)
  diag = hessian.ggn_diagonal(model, params, stats, x, y, mask=mask, chunk=4)
  dense = hessian.ggn_diagonal(model, params, stats, x, y, chunk=4)
  for d, full, m in zip(*(jax.tree.leaves(t) for t in (diag, dense, mask))):
    keep = np.asarray(m) != 0
    assert np.all(d[~keep] == 0.0)
    np.testing.assert_allclose(d[keep], full[keep], rtol=1e-6)
  rows = hessian.layer_summaries(diag, mask)
  kernel = np.asarray(mask["Dense_0"]["kernel"])
  assert rows["Dense_0/kernel"]["excluded"] == int((kernel == 0).sum())
  assert rows["Dense_0/kernel"]["min"] > 0  # no excluded zero among the kept entries


def test_lanczos_top3_match_eigvalsh_and_respect_a_mask():
  with jax.enable_x64(True):
    model, params, stats, x, y = _problem("mlp", n=20)
    full = _full(model, params, stats, x, y)
    got = hessian.lanczos(model, params, stats, x, y, jax.random.PRNGKey(5), k=3, max_iters=60,
                          tol=1e-6, batch_size=8)
    mask = jax.tree.map(lambda p: (jax.random.uniform(jax.random.PRNGKey(6), p.shape) < 0.6)
                        .astype(p.dtype), params)
    masked = hessian.lanczos(model, params, stats, x, y, jax.random.PRNGKey(5), k=3, mask=mask,
                             max_iters=60, tol=1e-6, batch_size=8)
    keep = np.asarray(ravel_pytree(mask)[0]) != 0
  np.testing.assert_allclose(got.eigenvalues, np.linalg.eigvalsh(full)[::-1][:3], rtol=1e-4)
  assert got.converged and np.all(got.residuals <= 1e-6 * np.abs(got.eigenvalues))
  sub = np.linalg.eigvalsh(full[np.ix_(keep, keep)])[::-1][:3]
  np.testing.assert_allclose(masked.eigenvalues, sub, rtol=1e-4)


def _softmax_regression():
  """130 parameters (64 inputs x 2 classes + 2 biases) at zero weights.

  The inputs have zero mean and second moments exactly diag(1, 0.95, ...,
  0.95); with the bias input 1, H = diag(1, 0.95, ..., 0.95, 1) (x) H_out
  and H_out = diag(p) - p p^T at p = (1/2, 1/2) has eigenvalue 1/2: the
  top eigenvalue is 0.5, with a 0.95 gap that stalls power iteration.
  """
  n, d = 100, 64
  basis = np.linalg.qr(np.random.default_rng(0).normal(size=(n, d + 1)))[0]
  basis = basis - basis.mean(0)  # zero mean, then re-orthonormalise
  basis = np.linalg.qr(basis)[0][:, :d]
  scales = np.sqrt(np.r_[1.0, np.full(d - 1, 0.95)] * n)
  x = jnp.asarray((basis * scales).reshape(n, 8, 8, 1), jnp.float32)
  model = models.MLP(2, ())
  params = jax.tree.map(jnp.zeros_like, train.init_variables(model, jax.random.PRNGKey(0),
                                                             (8, 8, 1))[0])
  return model, params, x, jnp.arange(n, dtype=jnp.int32) % 2


def test_lanczos_finds_0p5_on_the_softmax_regression_power_iteration_misses():
  model, params, x, y = _softmax_regression()
  assert ravel_pytree(params)[0].size == 130
  flat, unravel = ravel_pytree(params)
  loss = hessian.make_loss(model, {}, x, y, 50)
  exact = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat)))
  np.testing.assert_allclose(exact[-1], 0.5, rtol=1e-5)
  got = hessian.lanczos(model, params, {}, x, y, jax.random.PRNGKey(7), k=1, max_iters=130,
                        tol=1e-4, batch_size=50)
  assert got.converged and got.residuals[0] <= 1e-4 * 0.5
  np.testing.assert_allclose(got.eigenvalues[0], 0.5, rtol=1e-4)
  early = hessian.lanczos(model, params, {}, x, y, jax.random.PRNGKey(7), k=1, max_iters=2,
                          tol=1e-6, batch_size=50)
  assert not early.converged  # judged by the residual, not by a stalled estimate


def test_slq_density_integrates_to_one_and_its_mean_is_trace_over_n():
  model, params, stats, x, y = _problem("mlp", n=20, dtype=jnp.float32)
  exact = ravel_pytree(hessian.exact_diagonal(model, params, stats, x, y, batch_size=8))[0]
  out = hessian.spectral_density(model, params, stats, x, y, jax.random.PRNGKey(8),
                                 num_probes=40, steps=12, batch_size=8)
  grid, density = out["grid"], out["density"]
  assert np.all(density >= 0)
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-3)
  np.testing.assert_allclose(np.trapezoid(grid * density, grid), out["mean"],
                             atol=1e-3 * np.abs(grid).max())
  assert out["dimension"] == exact.size
  assert abs(out["mean"] - exact.sum() / exact.size) <= 4 * out["mean_stderr"]


def test_layer_top_eigenvalues_are_those_of_the_diagonal_blocks():
  with jax.enable_x64(True):
    model, params, stats, x, y = _problem("mlp", n=20)
    full = _full(model, params, stats, x, y)
    got = hessian.layer_top_eigenvalues(model, params, stats, x, y, jax.random.PRNGKey(9),
                                        max_iters=60, tol=1e-8, batch_size=8)
  assert set(got) == {"Dense_0/kernel", "Dense_1/kernel"}
  sizes = [np.size(p) for p in jax.tree.leaves(params)]
  offsets = np.cumsum([0] + sizes)
  names = [masks.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for i, name in enumerate(names):
    if name in got:
      block = full[offsets[i]:offsets[i + 1], offsets[i]:offsets[i + 1]]
      np.testing.assert_allclose(got[name]["eigenvalues"][0], np.linalg.eigvalsh(block)[-1],
                                 rtol=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda m, p, x, y: hessian.ggn_diagonal(m, p, {}, x, y, chunk=0), "GGN chunk must be > 0"),
    (lambda m, p, x, y: hessian.lanczos(m, p, {}, x, y, jax.random.PRNGKey(0), k=1000),
     "k=1000 is larger than the .* unpruned parameters"),
    (lambda m, p, x, y: hessian.hessian_diagonal(m, p, {}, x, y, jax.random.PRNGKey(0),
                                                 method="newton"), "hessian method"),
    (lambda m, p, x, y: hessian.spectral_density(m, p, {}, x, y, jax.random.PRNGKey(0),
                                                  steps=0), "density steps must be > 0"),
])
def test_bad_input_is_a_one_line_error(call, match):
  model, params, _, x, y = _problem("mlp", dtype=jnp.float32)
  with pytest.raises(validate.InputError, match=match) as error:
    call(model, params, x, y)
  assert "\n" not in str(error.value)


def test_ggn_as_the_hessian_is_refused_on_a_norm_model_with_the_reason():
  model, params, stats, x, y = _problem("convnet_instance", dtype=jnp.float32)
  with pytest.raises(validate.InputError, match="instance norm .* use 'ggn\\+residual'"):
    hessian.hessian_diagonal(model, params, stats, x, y, jax.random.PRNGKey(0), method="ggn")
