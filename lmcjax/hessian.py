"""Curvature at a solution: Hutchinson diagonal and trace, exact diagonal, top eigenvalue.

The loss is the eval-mode (running BatchNorm statistics) cross-entropy
averaged over a fixed set of batches, up to a whole split. Hessian-vector
products are forward-over-reverse: jax.jvp of jax.grad.

Pruned coordinates are held at zero by the mask, so the Hessian studied is
the one of the sparse subnetwork: probes are zero there, and the diagonal
entries there are reported as excluded, not estimated.
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, Optional

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from lmcjax import interpolate
from lmcjax import masks
from lmcjax import train
from lmcjax import validate

PyTree = Any


def loss_batches(key, images, labels, batch_size: int, num_batches: int):
  """The examples the loss averages over: num_batches seeded batches (0 = all).

  A seeded permutation, not the stored order, because a split may be sorted
  by class.
  """
  validate.positive("hessian batch_size", batch_size)
  validate.non_negative("hessian num_batches", num_batches)
  n = int(images.shape[0])
  validate.require(n > 0, "cannot compute a Hessian on an empty split")
  count = n if num_batches == 0 else min(n, batch_size * num_batches)
  idx = jax.random.permutation(key, n)[:count]
  return images[idx], labels[idx]


def make_loss(model, batch_stats: PyTree, images, labels, batch_size: int) -> Callable:
  """params -> mean cross-entropy over (images, labels), batch_size at a time."""
  evaluate = train.make_eval_fn(model, batch_size)
  return lambda params: evaluate(params, batch_stats, images, labels)["loss"]


def hvp(loss: Callable, params: PyTree, vector: PyTree) -> PyTree:
  """H v by forward-over-reverse differentiation."""
  return jax.jvp(jax.grad(loss), (params,), (vector,))[1]


def rademacher(key, params: PyTree, mask: Optional[PyTree] = None) -> PyTree:
  """A +-1 tree like params (zero at pruned entries)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  z = [jax.random.rademacher(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
  z = jax.tree.unflatten(tree, z)
  return z if mask is None else masks.apply(z, mask)


def _dot(a: PyTree, b: PyTree):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@functools.lru_cache(maxsize=16)
def _probe_program(model, batch_size: int, chunk: int):
  """Jitted: (params, stats, images, labels, mask, keys, valid) -> sums over the
  valid probes of z*Hz and (z*Hz)^2, and the per-probe trace samples z.Hz.

  Always `chunk` probes, with `valid` zeroing the unused ones of a last,
  partial chunk, so one compile serves every chunk.
  """

  def program(params, batch_stats, images, labels, mask, keys, valid):
    loss = make_loss(model, batch_stats, images, labels, batch_size)

    def one_probe(key):
      z = rademacher(key, params, mask)
      zhz = jax.tree.map(jnp.multiply, z, hvp(loss, params, z))
      return zhz, sum(jnp.sum(x) for x in jax.tree.leaves(zhz))

    zhz, traces = jax.vmap(one_probe)(keys)
    weigh = lambda a: a * valid.reshape((-1,) + (1,) * (a.ndim - 1))
    sums = jax.tree.map(lambda a: jnp.sum(weigh(a), 0), zhz)
    squares = jax.tree.map(lambda a: jnp.sum(weigh(a * a), 0), zhz)
    return sums, squares, traces

  return jax.jit(program)


@dataclasses.dataclass
class Estimate:
  """A Hutchinson estimate: diagonal and its standard error (numpy trees)."""
  diagonal: PyTree
  stderr: PyTree
  num_probes: int
  trace: float
  trace_stderr: float
  relative_stderr: float  # max of the diagonal's and the trace's
  converged: bool


def _relative(diag_mean: np.ndarray, diag_se: np.ndarray, trace: float, trace_se: float) -> float:
  """Relative standard error: ||SE||/||diag|| and SE(trace)/|trace|, the larger.

  abs() because a trace (or diagonal sum) may be negative away from a minimum.
  """
  tiny = np.finfo(np.float64).tiny
  return max(np.linalg.norm(diag_se) / max(np.linalg.norm(diag_mean), tiny),
             trace_se / max(abs(trace), tiny))


def hutchinson(model, params: PyTree, batch_stats: PyTree, images, labels, key, *,
               mask: Optional[PyTree] = None, max_probes: int = 64, chunk: int = 8,
               tol: float = 0.0, batch_size: int = 1000) -> Estimate:
  """diag(H) ~ mean over Rademacher z of z * Hz, `chunk` probes per vmapped call.

  Stops once the relative standard error (see _relative) is <= tol, after at
  least two chunks; tol=0 runs all max_probes. Probe k uses fold_in(key, k),
  so the estimate does not depend on the chunk size.
  """
  validate.positive("hessian probes", max_probes)
  validate.positive("hessian probe chunk", chunk)
  validate.non_negative("hessian tol", tol)
  validate.require(images.shape[0] > 0, "cannot compute a Hessian on an empty split")
  if mask is not None:
    masks.check_matches(mask, params)
  program = _probe_program(model, batch_size, chunk)
  flat_params, unravel = ravel_pytree(params)
  total = np.zeros(flat_params.size, np.float64)
  total_sq = np.zeros_like(total)
  traces = []
  n, converged, relative = 0, False, np.inf
  while n < max_probes and not converged:
    count = min(chunk, max_probes - n)
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n, n + chunk))
    valid = (jnp.arange(chunk) < count).astype(flat_params.dtype)
    sums, squares, chunk_traces = jax.device_get(
        program(params, batch_stats, images, labels, mask, keys, valid))
    total += np.asarray(ravel_pytree(sums)[0], np.float64)
    total_sq += np.asarray(ravel_pytree(squares)[0], np.float64)
    traces.extend(np.asarray(chunk_traces[:count], np.float64).tolist())
    n += count
    if n >= 2:
      mean, se = _mean_se(total, total_sq, n)
      trace, trace_se = float(np.mean(traces)), float(np.std(traces, ddof=1) / np.sqrt(n))
      relative = _relative(mean, se, trace, trace_se)
      converged = bool(tol > 0 and n >= 2 * min(chunk, max_probes) and relative <= tol)
  mean, se = _mean_se(total, total_sq, n)
  to_tree = lambda v: jax.tree.map(np.asarray, unravel(jnp.asarray(v, flat_params.dtype)))
  trace_se = float(np.std(traces, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
  return Estimate(to_tree(mean), to_tree(se), n, float(np.mean(traces)), trace_se,
                  float(relative), converged)


def _mean_se(total, total_sq, n):
  mean = total / n
  if n < 2:
    return mean, np.full_like(mean, np.inf)
  var = np.maximum(total_sq - n * mean * mean, 0.0) / (n - 1)
  return mean, np.sqrt(var / n)


@functools.lru_cache(maxsize=16)
def _exact_program(model, batch_size: int, chunk: int):
  """Jitted (params, stats, images, labels) -> diag(H) as a flat vector."""

  def program(params, batch_stats, images, labels):
    flat, unravel = ravel_pytree(params)
    loss = make_loss(model, batch_stats, images, labels, batch_size)

    def entry(i):
      basis = unravel(jnp.zeros_like(flat).at[i].set(1.0))
      return ravel_pytree(hvp(loss, params, basis))[0][i]

    return interpolate.chunked_vmap(entry, jnp.arange(flat.size), chunk)

  return jax.jit(program)


def exact_diagonal(model, params: PyTree, batch_stats: PyTree, images, labels, *,
                   mask: Optional[PyTree] = None, chunk: int = 64, batch_size: int = 1000,
                   max_params: int = 20000) -> PyTree:
  """diag(H) exactly, one HVP per coordinate (e_i^T H e_i), vmapped in chunks.

  For validating Hutchinson on small nets: the cost is one HVP per parameter.
  """
  flat, unravel = ravel_pytree(params)
  validate.require(flat.size <= max_params,
                   f"exact Hessian diagonal needs {flat.size} HVPs; limit is {max_params}")
  validate.positive("exact diagonal chunk", chunk)
  validate.require(images.shape[0] > 0, "cannot compute a Hessian on an empty split")
  diag = unravel(_exact_program(model, batch_size, chunk)(params, batch_stats, images, labels))
  diag = diag if mask is None else masks.apply(diag, mask)
  return jax.tree.map(np.asarray, diag)


@functools.lru_cache(maxsize=16)
def _power_step(model, batch_size: int):
  """Jitted (params, stats, images, labels, mask, v) -> (v.Hv, Hv/|Hv|), H restricted
  to the unpruned coordinates."""

  def step(params, batch_stats, images, labels, mask, v):
    loss = make_loss(model, batch_stats, images, labels, batch_size)
    hv = hvp(loss, params, v)
    hv = hv if mask is None else masks.apply(hv, mask)
    norm = jnp.sqrt(_dot(hv, hv))
    return _dot(v, hv), jax.tree.map(lambda x: x / norm, hv)

  return jax.jit(step)


def top_eigenvalue(model, params: PyTree, batch_stats: PyTree, images, labels, key, *,
                   mask: Optional[PyTree] = None, iters: int = 20, tol: float = 1e-3,
                   batch_size: int = 1000) -> Dict[str, float]:
  """The largest-magnitude Hessian eigenvalue by power iteration (Rayleigh quotient).

  Stops when the estimate changes by <= tol relative to its magnitude.
  """
  validate.positive("power iterations", iters)
  validate.require(images.shape[0] > 0, "cannot compute a Hessian on an empty split")
  step = _power_step(model, batch_size)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  v = jax.tree.unflatten(tree, [jax.random.normal(k, l.shape, l.dtype)
                                for k, l in zip(keys, leaves)])
  v = v if mask is None else masks.apply(v, mask)
  v = jax.tree.map(lambda x: x / jnp.sqrt(_dot(v, v)), v)
  previous, value, done, converged = np.inf, np.nan, 0, False
  while done < iters and not converged:
    value, v = step(params, batch_stats, images, labels, mask, v)
    value, done = float(value), done + 1
    converged = abs(value - previous) <= tol * abs(value)
    previous = value
  return {"eigenvalue": value, "iterations": done, "converged": bool(converged)}


def layer_summaries(diagonal: PyTree, mask: Optional[PyTree] = None,
                    bins: int = 50) -> Dict[str, Dict[str, Any]]:
  """Per parameter leaf: trace, mean, max, min, histogram, kept and excluded counts.

  Pruned entries are excluded from every figure and counted in 'excluded'.
  """
  validate.positive("histogram bins", bins)
  mask_leaves = (jax.tree.leaves(mask) if mask is not None
                 else [None] * len(jax.tree.leaves(diagonal)))
  out = {}
  for (path, d), m in zip(jax.tree_util.tree_flatten_with_path(diagonal)[0], mask_leaves):
    d = np.asarray(d, np.float64).ravel()
    kept = d if m is None else d[np.asarray(m).ravel() != 0]
    row = {"kept": int(kept.size), "excluded": int(d.size - kept.size)}
    if kept.size:
      counts, edges = np.histogram(kept, bins=bins)
      row.update(trace=float(kept.sum()), mean=float(kept.mean()), max=float(kept.max()),
                 min=float(kept.min()), histogram={"counts": counts.tolist(),
                                                   "edges": edges.tolist()})
    out[masks.path_name(path)] = row
  return out


def kept_values(tree: PyTree, mask: Optional[PyTree] = None) -> np.ndarray:
  """All unpruned entries of a tree, flattened (for whole-model histograms)."""
  values = [np.asarray(x).ravel() for x in jax.tree.leaves(tree)]
  if mask is None:
    return np.concatenate(values)
  keep = [np.asarray(m).ravel() != 0 for m in jax.tree.leaves(mask)]
  return np.concatenate([v[k] for v, k in zip(values, keep)])
