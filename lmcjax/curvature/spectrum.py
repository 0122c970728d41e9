"""Hessian eigenvalues: the top k by Lanczos, per-layer top eigenvalues, and
the spectral density by stochastic Lanczos quadrature (as PyHessian's density()).

Lanczos keeps its whole basis and reorthogonalises fully. H is restricted to
the unpruned coordinates (problem.mask).
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, Optional

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from lmcjax import masks
from lmcjax import progress
from lmcjax import validate
from lmcjax.curvature.operators import hvp, make_loss
from lmcjax.curvature.problem import LossProblem

PyTree = Any


@functools.lru_cache(maxsize=16)
def _flat_hvp_program(model, batch_size_examples: int):
  """Jitted (params, stats, images, labels, keep, v) -> keep * H (keep * v), flat.

  keep is the flat 0/1 mask: H restricted to the kept coordinates.
  """

  def program(params, batch_stats, images, labels, keep, v):
    unravel = ravel_pytree(params)[1]
    loss = make_loss(LossProblem(model, params, batch_stats, images, labels, batch_size_examples))
    return keep * ravel_pytree(hvp(loss, params, unravel(keep * v)))[0]

  return jax.jit(program)


@functools.partial(jax.jit, donate_argnums=0)
def _extend_basis(basis, w, j):
  """Lanczos step j: alpha_j = v_j . w, w (= H v_j) orthogonalised against
  every stored row and stored as row j + 1; returns (basis, alpha_j, beta_j).

  Rows after j are zero, so one fixed-shape product projects on rows 0..j.
  Classical Gram-Schmidt twice: once loses orthogonality in float32.
  """
  alpha = jnp.vdot(basis[j], w)
  for _ in range(2):
    w = w - basis.T @ (basis @ w)
  beta = jnp.linalg.norm(w)
  return basis.at[j + 1].set(w / jnp.where(beta > 0, beta, 1)), alpha, beta


@functools.partial(jax.jit, donate_argnums=0)
def _restart(basis, fresh, j):
  """Row j + 1 := `fresh` orthogonalised against rows 0..j, unit length (a
  new Krylov block after an invariant subspace; row j + 1 held noise)."""
  basis = basis.at[j + 1].set(0)
  for _ in range(2):
    fresh = fresh - basis.T @ (basis @ fresh)
  return basis.at[j + 1].set(fresh / jnp.linalg.norm(fresh))


def _lanczos_basis(matvec: Callable, start, steps: int, done: Callable,
                   fresh: Optional[Callable] = None):
  """Up to `steps` Lanczos steps from the unit vector `start`, with full
  reorthogonalisation, until done(alphas, betas, starts, invariant).

  invariant: beta ~ 0 relative to the largest |alpha|. The Krylov space is
  then invariant and its Ritz values exact, but it holds one copy of each
  eigenvalue: a repeated one is missed. Without fresh (one copy is enough:
  top-1, SLQ) the iteration stops there, below 100 eps. With fresh it
  restarts, unless done, from fresh(r) (r = 1, 2, ...) orthogonalised against
  the basis, with beta = 0 in the tridiagonal, which becomes block diagonal
  (as ARPACK does); starts lists the blocks' first steps. The floor is then
  sqrt(eps): a float32 HVP's own noise reached 640 eps on the clustered test
  problem, and a block continued from that noise can lack a repeated
  eigenvector, which a fresh random vector has; dropping a coupling that
  small moves well-separated Ritz values by O(eps).

  Returns the basis ((steps + 1) x n; rows past the last step are zero), the
  tridiagonal's alphas and betas (float64 numpy), starts, and settled: not
  stopped by running out of steps after (or at) an invariant space with fresh.
  """
  basis = jnp.zeros((steps + 1, start.size), start.dtype).at[0].set(start)
  alphas, betas, starts = [], [], [0]
  eps = float(jnp.finfo(start.dtype).eps)
  floor = 100 * eps if fresh is None else float(np.sqrt(eps))
  shown = progress.Progress("Lanczos", steps, "steps (at most)")
  settled = True
  for j in range(steps):
    basis, alpha, beta = _extend_basis(basis, matvec(basis[j]), j)
    alphas.append(float(alpha))
    betas.append(float(beta))
    shown.update(j + 1)
    invariant = betas[-1] <= floor * max(abs(a) for a in alphas)
    if done(alphas, betas, starts, invariant) or (invariant and fresh is None):
      break
    if invariant and j + 1 == steps:
      settled = False
      break
    if invariant:
      betas[-1] = 0.0
      basis = _restart(basis, fresh(len(starts)), j)
      starts.append(j + 1)
  else:
    settled = len(starts) == 1
  return basis, np.asarray(alphas, np.float64), np.asarray(betas, np.float64), starts, settled


def _ritz(alphas: np.ndarray, betas: np.ndarray):
  """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal T."""
  off = betas[:len(alphas) - 1]
  return np.linalg.eigh(np.diag(alphas) + np.diag(off, 1) + np.diag(off, -1))


# Blocks in a row that must add nothing above the k-th Ritz value before
# Lanczos stops after a restart. A block from a random vector whose component
# on a missing copy is tiny can look invariant before it finds that copy
# (beta ~ 1e-4 |alpha| for 1 key in 10 on the clustered test); two fresh
# vectors in a row are that unlucky far more rarely.
_CONFIRMING_BLOCKS = 2


def _top_k_converged(alphas, betas, starts, invariant, k: int, tol: float, margin: float) -> bool:
  """Lanczos' stopping rule.

  Until the Krylov space first becomes invariant: each of the top k Ritz
  pairs has residual ||H y - lambda y|| = beta |y_last| <= tol |lambda|.
  After it: a block holds one copy of each eigenvalue its start vector
  reaches, so a restarted block runs until it too is invariant, and the
  iteration stops once the last _CONFIRMING_BLOCKS blocks found nothing above
  the k-th Ritz value (within margin x its size, the accuracy of a Ritz value
  of another block). Every pair of an invariant block is exact.
  """
  if len(alphas) < k:
    return False
  values, vectors = _ritz(np.asarray(alphas), np.asarray(betas))
  if len(starts) == 1 and not invariant:
    estimate = betas[-1] * np.abs(vectors[-1, -k:])
    return bool(np.all(estimate <= tol * np.abs(values[-k:])))
  if not invariant or len(starts) < _CONFIRMING_BLOCKS:
    return False
  kth = values[-k]
  bounds = list(zip(starts, starts[1:] + [len(alphas)]))[-_CONFIRMING_BLOCKS:]
  tops = [_ritz(np.asarray(alphas[a:b]), np.asarray(betas[a:b]))[0][-1] for a, b in bounds]
  return bool(max(tops) <= kth + margin * abs(kth))


@dataclasses.dataclass
class Spectrum:
  """Top-k Hessian eigenvalues (descending) from Lanczos, with their Ritz residuals."""
  eigenvalues: np.ndarray
  residuals: np.ndarray  # ||H y - lambda y|| of each unit Ritz vector y, by explicit HVPs
  converged: bool  # every residual <= tol * |lambda|, and the stopping rule was met
  iterations: int  # Lanczos steps
  num_hvps: int  # Lanczos steps plus k residual checks

  def as_dict(self) -> Dict[str, Any]:
    return {"eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
            "converged": self.converged, "iterations": self.iterations,
            "num_hvps": self.num_hvps}


def flat_operator(problem: LossProblem):
  """(matvec on flat vectors, flat 0/1 keep mask, number of kept coordinates):
  the problem's Hessian restricted to its unpruned coordinates."""
  flat = ravel_pytree(problem.params)[0]
  keep = (jnp.ones_like(flat) if problem.mask is None
          else ravel_pytree(problem.mask)[0].astype(flat.dtype))
  program = _flat_hvp_program(problem.model, problem.batch_size_examples)
  matvec = lambda v: program(*problem.operands(), keep, v)
  return matvec, keep, int(jnp.sum(keep != 0))


def unit_start(key, keep):
  """A random unit vector on the kept coordinates."""
  v = jax.random.normal(key, keep.shape, keep.dtype) * keep
  return v / jnp.linalg.norm(v)


def lanczos(problem: LossProblem, key, *, k: int = 1, max_iters: int = 100,
            tol: float = 1e-3) -> Spectrum:
  """The k largest Hessian eigenvalues by Lanczos with full reorthogonalisation.

  Stops once each of the top k Ritz pairs has residual ||H y - lambda y|| <=
  tol * |lambda| (estimated from the tridiagonal each step), then measures
  those residuals with k explicit HVPs. For k > 1, when the Krylov space
  becomes invariant it restarts from fold_in(key, r), r = 1, 2, ..., so
  repeated eigenvalues are found with their multiplicity (_lanczos_basis,
  _top_k_converged); k = 1 stops there, as one copy of the top value is
  enough. converged: every measured residual is <= tol |lambda| and the
  stopping rule was met (not max_iters after a restart). Largest algebraically,
  not in magnitude: at a minimum the negative eigenvalues are the small ones.
  """
  validate.positive("lanczos k", k)
  validate.positive("lanczos iterations", max_iters)
  validate.non_negative("lanczos tol", tol)
  matvec, keep, dim = flat_operator(problem)
  validate.require(k <= dim, f"lanczos k={k} is larger than the {dim} unpruned parameters")
  validate.require(max_iters >= k, f"lanczos iterations ({max_iters}) must be >= k ({k})")
  margin = max(tol, float(np.sqrt(jnp.finfo(keep.dtype).eps)))
  done = functools.partial(_top_k_converged, k=k, tol=tol, margin=margin)
  fresh = (lambda r: unit_start(jax.random.fold_in(key, r), keep)) if k > 1 else None
  basis, alphas, betas, _, settled = _lanczos_basis(
      matvec, unit_start(key, keep), min(max_iters, dim), done, fresh)
  values, vectors = _ritz(alphas, betas)
  values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
  ritz = basis[:len(alphas)].T @ jnp.asarray(vectors, basis.dtype)
  residuals = np.asarray([float(jnp.linalg.norm(matvec(ritz[:, i]) - values[i] * ritz[:, i]))
                          for i in range(k)])
  # Not settled (out of steps after an invariant space): a copy of a top value may be missing.
  return Spectrum(values, residuals, bool(np.all(residuals <= tol * np.abs(values)) and settled),
                  len(alphas), len(alphas) + k)


def spectral_density(problem: LossProblem, key, *, num_probes: int = 1, steps: int = 30,
                     sigma: float = 0.01, num_points: int = 2000) -> Dict[str, Any]:
  """Hessian spectral density by stochastic Lanczos quadrature (PyHessian's density()).

  Per probe: `steps` Lanczos steps from a random unit vector (fewer if its
  Krylov space becomes invariant); the tridiagonal's eigenvalues are the
  quadrature nodes and the squared first components of its eigenvectors the
  weights. The density is the mean over probes of the weights' Gaussians
  (width sigma x the nodes' span), on a grid 5 widths beyond the extreme
  nodes, so it integrates to 1 without renormalising. Its mean, the mean of
  v.Hv, estimates trace / dimension.
  """
  validate.positive("density probes", num_probes)
  validate.positive("density steps", steps)
  validate.positive("density sigma", sigma)
  validate.require(num_points >= 2, f"density num_points must be >= 2, got {num_points!r}")
  matvec, keep, dim = flat_operator(problem)
  nodes, weights = [], []
  for probe in range(num_probes):
    start = unit_start(jax.random.fold_in(key, probe), keep)
    _, alphas, betas, _, _ = _lanczos_basis(matvec, start, min(steps, dim), lambda *_: False)
    values, vectors = _ritz(alphas, betas)
    nodes.append(values)
    weights.append(vectors[0] ** 2)
  all_nodes = np.concatenate(nodes)
  span = max(all_nodes.max() - all_nodes.min(), 1e-6 * max(np.abs(all_nodes).max(), 1e-30))
  width = sigma * span
  grid = np.linspace(all_nodes.min() - 5 * width, all_nodes.max() + 5 * width, num_points)
  gauss = lambda at: (np.exp(-0.5 * ((grid[:, None] - at) / width) ** 2)
                      / (width * np.sqrt(2 * np.pi)))
  density = np.mean([gauss(at) @ w for at, w in zip(nodes, weights)], axis=0)
  means = [float(at @ w) for at, w in zip(nodes, weights)]
  return {"grid": grid, "density": density, "nodes": [n.tolist() for n in nodes],
          "weights": [w.tolist() for w in weights], "mean": float(np.mean(means)),
          "mean_stderr": float(np.std(means, ddof=1) / np.sqrt(num_probes))
          if num_probes > 1 else float("inf"),
          "dimension": dim, "num_probes": num_probes, "steps": len(nodes[0]), "sigma": width}


def layer_top_eigenvalues(problem: LossProblem, key, *, max_iters: int = 100,
                          tol: float = 1e-3) -> Dict[str, Dict[str, Any]]:
  """Per kernel (every leaf with >= 2 dims and an unpruned entry): the top
  eigenvalue of its diagonal block of H, by Lanczos on that leaf's unpruned
  coordinates only; leaf i uses fold_in(key, i)."""
  params = problem.params
  full = masks.ones_like(params) if problem.mask is None else problem.mask
  leaves, tree = jax.tree.flatten(full)
  names = [masks.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  out = {}
  for i, (name, leaf) in enumerate(zip(names, leaves)):
    if leaf.ndim < 2 or not np.any(np.asarray(leaf)):
      continue
    only = jax.tree.unflatten(tree, [other if j == i else jnp.zeros_like(other)
                                     for j, other in enumerate(leaves)])
    out[name] = lanczos(problem.with_mask(only), jax.random.fold_in(key, i), k=1,
                        max_iters=max_iters, tol=tol).as_dict()
  return out
