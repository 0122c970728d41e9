"""Curvature at a solution: Hessian and GGN diagonals, Lanczos spectra.

The loss is the eval-mode (running BatchNorm statistics) cross-entropy
averaged over a fixed set of examples, up to a whole split. Hessian-vector
products are forward-over-reverse: jax.jvp of jax.grad.

Diagonal methods (METHODS):
  ggn           the exact diagonal of the generalized Gauss-Newton matrix,
                C vector-Jacobian products per example. It is the exact Hessian
                diagonal wherever the logits are piecewise linear in each single
                weight (see ggn_is_hessian_diagonal), and refused elsewhere.
  ggn+residual  GGN diagonal plus a Hutchinson estimate of the residual
                H - GGN only (for instance/layer norm models).
  hutchinson    Hutchinson on H itself, with a stopping rule on its
                relative standard error.
  exact         one HVP per parameter (tiny nets).
  auto          ggn where it is the Hessian diagonal, else ggn+residual.
Top eigenvalues come from Lanczos with full reorthogonalisation, the spectral
density from stochastic Lanczos quadrature (as PyHessian's density()).

Pruned coordinates are held at zero by the mask, so the Hessian studied is
the one of the sparse subnetwork: probes are zero there, and the diagonal
entries there are reported as excluded, not estimated.
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Tuple

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from lmcjax import interpolate
from lmcjax import masks
from lmcjax import models
from lmcjax import progress
from lmcjax import train
from lmcjax import validate

PyTree = Any
METHODS = ("auto", "ggn", "ggn+residual", "hutchinson", "exact")
# An estimate whose relative standard error exceeds this is noise at the scale
# of the diagonal: the report flags it and never compares it between models.
TRUSTED_RELATIVE_STDERR = 0.3


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


def make_loss(model, batch_stats: PyTree, images, labels, batch_size: int,
              execution: str = "auto") -> Callable:
  """params -> mean cross-entropy over (images, labels), batch_size at a time.

  execution: how the example chunks run (train.sum_over_chunks); 'auto' keeps
  a convolutional net's differentiated chunks out of loops on CPU.
  """
  evaluate = train.make_eval_fn(model, batch_size, execution)
  return lambda params: evaluate(params, batch_stats, images, labels)["loss"]


def make_residual_loss(model, batch_stats: PyTree, images, labels, batch_size: int,
                       execution: str = "auto") -> Callable:
  """params -> mean over examples of <stop_gradient(dL/df), f(params)>.

  Its Hessian is the residual sum_c (dL/df_c) d2f_c in H = GGN + residual:
  holding dL/df = softmax(f) - onehot(y) fixed leaves only the logits' own
  curvature to be differentiated. Examples go batch_size at a time, run as
  make_loss's chunks.
  """
  validate.require(images.shape[0] > 0, "cannot compute a Hessian on an empty split")
  blocks = train.example_chunks((images, labels), batch_size)

  @jax.jit
  def block_sum(params, block):
    x, y, ok = block
    logits, _ = train.forward(model, params, batch_stats, x, train=False)
    dloss = jax.nn.softmax(logits) - jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(jax.lax.stop_gradient(dloss * ok[:, None]) * logits)

  def loss(params):
    chosen = train.resolve_execution(execution, params)
    return train.sum_over_chunks(block_sum, params, blocks, chosen) / images.shape[0]

  return loss


OPERATORS = {"hessian": make_loss, "residual": make_residual_loss}


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


@functools.lru_cache(maxsize=16)
def _probe_programs(model, batch_size: int, operator: str, execution: str):
  """Jitted (one, batch) on (params, stats, images, labels, mask, key or keys).

  one: a probe's sample, z * Hz as a flat vector with the trace z.Hz
  appended. batch: the mean and the sum of squared deviations (M2) of the
  samples of a vector of keys, vmapped. H is the Hessian of OPERATORS[operator].
  """

  def one_probe(params, batch_stats, images, labels, mask, key):
    loss = OPERATORS[operator](model, batch_stats, images, labels, batch_size, execution)
    z = rademacher(key, params, mask)
    zhz = jax.tree.map(jnp.multiply, z, hvp(loss, params, z))
    return jnp.append(ravel_pytree(zhz)[0], sum(jnp.sum(x) for x in jax.tree.leaves(zhz)))

  def block_moments(*args):
    samples = jax.vmap(one_probe, in_axes=(None,) * 5 + (0,))(*args)
    mean = jnp.mean(samples, axis=0)
    return mean, jnp.sum(jnp.square(samples - mean), axis=0)

  return jax.jit(one_probe), jax.jit(block_moments)


@jax.jit
def _merge(moments, size, block_mean, block_m2):
  """(count, mean, M2) of the samples so far, updated with a block's.

  Chan et al.'s pairwise update: stable in float32, so the running moments
  stay on the device and no probe is read back until the end.
  """
  count, mean, m2 = moments
  total = count + size
  delta = block_mean - mean
  spread = jnp.square(delta) * (count * size / total)
  return total, mean + delta * (size / total), m2 + block_m2 + spread


@jax.jit
def _mean_se(moments):
  """The samples' mean and its standard error (inf below two samples)."""
  count, mean, m2 = moments
  variance = jnp.maximum(m2, 0.0) / jnp.maximum(count - 1, 1)
  return mean, jnp.where(count > 1, jnp.sqrt(variance / count), jnp.inf)


@jax.jit
def _norms(moments):
  """||mean||, ||SE|| of the diagonal and the trace's mean and SE: all the
  stopping rule needs, four scalars instead of the whole diagonal."""
  mean, se = _mean_se(moments)
  return jnp.linalg.norm(mean[:-1]), jnp.linalg.norm(se[:-1]), mean[-1], se[-1]


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


def _relative(mean_norm: float, se_norm: float, trace: float, trace_se: float) -> float:
  """Relative standard error: ||SE||/||diag|| and SE(trace)/|trace|, the larger.

  abs() because a trace (or diagonal sum) may be negative away from a minimum.
  """
  tiny = np.finfo(np.float64).tiny
  return max(float(se_norm) / max(float(mean_norm), tiny),
             float(trace_se) / max(abs(float(trace)), tiny))


def hutchinson(model, params: PyTree, batch_stats: PyTree, images, labels, key, *,
               mask: Optional[PyTree] = None, max_probes: int = 64, chunk: int = 8,
               tol: float = 0.0, batch_size: int = 1000, operator: str = "hessian",
               execution: str = "auto") -> Estimate:
  """diag(H) ~ mean over Rademacher z of z * Hz, checked every `chunk` probes.

  Stops once the relative standard error (see _relative) is <= tol, after at
  least two chunks; tol=0 runs all max_probes. Probe k uses fold_in(key, k),
  so the estimate does not depend on the chunk size or the execution.
  execution (train.resolve_execution): 'vmapped' runs each full chunk of
  probes as one vmapped program, 'sequential' one jitted probe at a time; a
  last, shorter chunk runs probe by probe either way (no padded probes, and
  no compile per remainder size). The running mean and variance stay on the
  device. operator='residual' estimates the diagonal of H - GGN instead
  (make_residual_loss).
  """
  validate.choice("hutchinson operator", operator, OPERATORS)
  validate.positive("hessian probes", max_probes)
  validate.positive("hessian probe chunk", chunk)
  validate.non_negative("hessian tol", tol)
  validate.require(images.shape[0] > 0, "cannot compute a Hessian on an empty split")
  if mask is not None:
    masks.check_matches(mask, params)
  execution = train.resolve_execution(execution, params)
  one, batch = _probe_programs(model, batch_size, operator, execution)
  args = (params, batch_stats, images, labels, mask)
  flat_params, unravel = ravel_pytree(params)
  zeros = jnp.zeros(flat_params.size + 1, flat_params.dtype)
  moments = (jnp.zeros((), jnp.int32), zeros, zeros)
  n, converged, relative = 0, False, np.inf
  shown = progress.Progress(f"Hutchinson {operator} diagonal", max_probes, "probes")
  while n < max_probes and not converged:
    count = min(chunk, max_probes - n)
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n, n + count))
    if execution == "vmapped" and count == chunk:
      moments = _merge(moments, count, *batch(*args, keys))
    else:
      for k in keys:
        sample = one(*args, k)
        moments = _merge(moments, 1, sample, jnp.zeros_like(sample))
    n += count
    if n >= 2 and (tol > 0 or n >= max_probes):
      relative = _relative(*_norms(moments))
      converged = bool(tol > 0 and n >= 2 * min(chunk, max_probes) and relative <= tol)
    shown.update(max_probes if converged else n, f"relative SE {relative:.3g}"
                 + (f", converged after {n} probes" if converged else ""))
  mean, se = jax.device_get(_mean_se(moments))
  to_tree = lambda v: jax.tree.map(np.asarray, unravel(jnp.asarray(v[:-1], flat_params.dtype)))
  return Estimate(to_tree(mean), to_tree(se), n, float(mean[-1]), float(se[-1]),
                  float(relative), converged)


@functools.lru_cache(maxsize=16)
def _leaf_hvp_program(model, batch_size: int, execution: str):
  """Jitted (params, stats, images, labels, leaf) -> v -> H_ll v.

  H_ll is the Hessian block of params' leaf number `leaf` (static). The map is
  the linearised gradient with respect to that leaf alone: a jax Partial that
  holds the forward and backward residuals, so each product is one tangent
  pass from that layer to the loss and back to it, with no recomputed
  forward pass and no backward pass below the layer.
  """

  def program(params, batch_stats, images, labels, leaf):
    leaves, tree = jax.tree.flatten(params)
    loss = make_loss(model, batch_stats, images, labels, batch_size, execution)
    with_leaf = lambda w: jax.tree.unflatten(tree, leaves[:leaf] + [w] + leaves[leaf + 1:])
    return jax.linearize(jax.grad(lambda w: loss(with_leaf(w))), leaves[leaf])[1]

  return jax.jit(program, static_argnums=4)


def _diagonal_entry(args, index):
  """e_i^T H_ll e_i for the flat index i of a leaf; args = (leaf_hvp, leaf)."""
  leaf_hvp, leaf = args
  basis = jnp.zeros(leaf.size, leaf.dtype).at[index].set(1).reshape(leaf.shape)
  return leaf_hvp(basis).ravel()[index]


@functools.lru_cache(maxsize=16)
def _entries_program(chunk: int, execution: str):
  return interpolate.map_points(_diagonal_entry, chunk, execution)


def exact_diagonal(model, params: PyTree, batch_stats: PyTree, images, labels, *,
                   mask: Optional[PyTree] = None, chunk: int = 64, batch_size: int = 1000,
                   max_params: int = 50000, execution: str = "auto") -> PyTree:
  """diag(H) exactly: e_i^T H e_i for every unpruned coordinate i.

  Leaf by leaf: one linearisation of that leaf's gradient (_leaf_hvp_program),
  then one tangent pass per coordinate, `chunk` coordinates per vmapped call
  or one per jitted call (execution, train.resolve_execution). Pruned
  coordinates are zero and cost nothing. For validating the other methods:
  the cost grows with the number of parameters, so above max_params it is
  refused before any compute.
  """
  if mask is not None:
    masks.check_matches(mask, params)
  leaves, tree = jax.tree.flatten(params)
  mask_leaves = jax.tree.leaves(mask) if mask is not None else [None] * len(leaves)
  kept = [np.arange(leaf.size) if m is None else np.flatnonzero(np.asarray(m).ravel())
          for leaf, m in zip(leaves, mask_leaves)]
  count = sum(k.size for k in kept)
  validate.require(count <= max_params,
                   f"the exact Hessian diagonal costs one Hessian-vector product per unpruned "
                   f"parameter: {count:,} here, above max_params={max_params:,}; use method "
                   f"'ggn', 'ggn+residual' or 'hutchinson', or raise max_params")
  validate.positive("exact diagonal chunk", chunk)
  validate.require(images.shape[0] > 0, "cannot compute a Hessian on an empty split")
  execution = train.resolve_execution(execution, params)
  linearise = _leaf_hvp_program(model, batch_size, execution)
  entries = _entries_program(chunk, execution)
  out = []
  for number, (leaf, idx) in enumerate(zip(leaves, kept)):
    values = np.zeros(leaf.size, leaf.dtype)
    if idx.size:
      leaf_hvp = linearise(params, batch_stats, images, labels, number)
      values[idx] = np.asarray(entries((leaf_hvp, leaf), idx.astype(np.int32)))
    out.append(values.reshape(leaf.shape))
  return jax.tree.unflatten(tree, out)


def ggn_is_hessian_diagonal(model) -> Tuple[bool, str]:
  """Whether diag(GGN) is the exact diagonal of the eval-mode loss's Hessian, and why.

  H = GGN + sum_c (dL/df_c) d2f_c. When the logits are piecewise linear in
  each single weight (ReLU, linear or max pooling, eval-mode BatchNorm, which
  is a fixed affine map), d2f_c/dw_i^2 vanishes almost everywhere, so the
  residual's diagonal does. Instance and layer norm divide by statistics of
  the example itself, so a weight before them enters the logits nonlinearly.
  """
  known = (models.MLP, models.ConvNet, models.ResNet, models.VGG, models.AlexNet)
  name = type(model).__name__
  if not isinstance(model, known):
    return False, f"{name} is not an lmcjax model whose layers are known"
  norm = getattr(model, "norm", "none")
  if norm in ("instance", "layer"):
    return False, (f"{name} with {norm} norm normalises by each example's own statistics, "
                   "so its weights enter the logits nonlinearly")
  bn = " and eval-mode BatchNorm (a fixed affine map)" if norm == "batch" else ""
  return True, f"{name}: ReLU, linear or max pooling{bn}; piecewise linear in each weight"


def resolve_method(method: str, model) -> str:
  """The concrete diagonal method; 'ggn' on a model where it is not the Hessian
  diagonal is refused with the reason."""
  validate.choice("hessian method", method, METHODS)
  exact, reason = ggn_is_hessian_diagonal(model)
  if method == "auto":
    return "ggn" if exact else "ggn+residual"
  validate.require(method != "ggn" or exact,
                   f"hessian method 'ggn' is the Hessian diagonal only where the residual "
                   f"vanishes, not here: {reason}; use 'ggn+residual' or 'hutchinson'")
  return method


@functools.lru_cache(maxsize=16)
def _ggn_program(model):
  """Jitted (params, stats, images, weights) -> sum_n weights_n sum_c (J_n^T s_nc)^2.

  The output Hessian of softmax cross-entropy is diag(p) - p p^T = S S^T with
  S = diag(sqrt p) - p sqrt(p)^T, so its C columns s_c, pulled back through
  one linearisation per example, give the GGN diagonal exactly.
  """

  def squared_pullbacks(params, batch_stats, image):
    logits_of = lambda p: train.forward(model, p, batch_stats, image[None], train=False)[0][0]
    logits, pullback = jax.vjp(logits_of, params)
    prob = jax.nn.softmax(logits)
    root = jnp.sqrt(prob)
    factor = jnp.diag(root) - jnp.outer(prob, root)
    columns = jax.vmap(pullback)(factor.T)[0]
    return jax.tree.map(lambda g: jnp.sum(g * g, axis=0), columns)

  def program(params, batch_stats, images, weights):
    per_example = jax.vmap(squared_pullbacks, in_axes=(None, None, 0))(params, batch_stats, images)
    return jax.tree.map(lambda a: jnp.tensordot(weights, a, axes=1), per_example)

  return jax.jit(program)


def ggn_diagonal(model, params: PyTree, batch_stats: PyTree, images, labels, *,
                 mask: Optional[PyTree] = None, chunk: int = 50) -> PyTree:
  """diag(GGN) of the mean cross-entropy over (images, labels), exactly.

  `chunk` examples per vmapped call bound memory at chunk x classes x params
  floats. A Python loop over chunks, not lax.map: XLA:CPU runs convolutions
  inside loops much slower. The labels do not enter (the GGN of softmax
  cross-entropy depends on the predictions only); they are checked so that a
  call reads like the other estimators'. Pruned entries are zero.
  """
  validate.positive("GGN chunk", chunk)
  n = int(images.shape[0])
  validate.require(n > 0, "cannot compute a Hessian on an empty split")
  validate.require(labels.shape[:1] == images.shape[:1],
                   f"{images.shape[0]} images but {labels.shape[0]} labels")
  if mask is not None:
    masks.check_matches(mask, params)
  chunk = min(chunk, n)
  program = _ggn_program(model)
  total = None
  shown = progress.Progress("GGN diagonal", n, "examples")
  for start in range(0, n, chunk):
    block = images[start:start + chunk]
    count = block.shape[0]
    block = jnp.concatenate([block, jnp.repeat(block[:1], chunk - count, axis=0)])
    weights = (jnp.arange(chunk) < count).astype(jnp.result_type(block.dtype)) / n
    part = program(params, batch_stats, block, weights)
    total = part if total is None else jax.tree.map(jnp.add, total, part)
    shown.update(start + count, wait=total)
  total = total if mask is None else masks.apply(total, mask)
  return jax.tree.map(np.asarray, total)


@dataclasses.dataclass
class Diagonal:
  """A Hessian (or GGN) diagonal with its method and standard error (numpy trees).

  exact=True: computed, not sampled (stderr is zero). label says what it is.
  """
  values: PyTree
  stderr: PyTree
  method: str
  label: str
  exact: bool
  num_probes: int
  relative_stderr: float
  converged: bool
  trace: float
  trace_stderr: float
  ggn: Optional[PyTree] = None  # the GGN part of 'ggn+residual'


def _from_estimate(est: Estimate, method: str, label: str, offset: Optional[PyTree] = None) -> Diagonal:
  """A Hutchinson estimate (of H, or of H - GGN plus the exact GGN `offset`)."""
  values = est.diagonal if offset is None else jax.tree.map(np.add, offset, est.diagonal)
  trace = est.trace + (0.0 if offset is None else float(sum(np.sum(x) for x in jax.tree.leaves(offset))))
  flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(values)])
  se = np.concatenate([np.ravel(x) for x in jax.tree.leaves(est.stderr)])
  return Diagonal(values, est.stderr, method, label, False, est.num_probes,
                  _relative(np.linalg.norm(flat), np.linalg.norm(se), trace, est.trace_stderr),
                  est.converged, trace, est.trace_stderr, offset)


def _exact(values: PyTree, method: str, label: str) -> Diagonal:
  trace = float(sum(np.sum(x, dtype=np.float64) for x in jax.tree.leaves(values)))
  zeros = jax.tree.map(np.zeros_like, values)
  return Diagonal(values, zeros, method, label, True, 0, 0.0, True, trace, 0.0)


def hessian_diagonal(model, params: PyTree, batch_stats: PyTree, images, labels, key, *,
                     method: str = "auto", mask: Optional[PyTree] = None, chunk: int = 50,
                     max_probes: int = 64, probe_chunk: int = 8, tol: float = 0.0,
                     batch_size: int = 1000, max_params: int = 50000,
                     execution: str = "auto") -> Diagonal:
  """diag(H) by `method` (see METHODS), labelled with what it is.

  chunk: examples per GGN call; max_probes, probe_chunk, tol: Hutchinson's
  (of H, or of the residual H - GGN); max_params: the 'exact' method's limit;
  execution: how probes and exact entries run (train.resolve_execution).
  """
  method = resolve_method(method, model)
  common = dict(mask=mask, batch_size=batch_size, execution=execution)
  probes = dict(max_probes=max_probes, chunk=probe_chunk, tol=tol, **common)
  if method == "ggn":
    values = ggn_diagonal(model, params, batch_stats, images, labels, mask=mask, chunk=chunk)
    return _exact(values, method, "exact Hessian diagonal (= GGN diagonal: "
                  + ggn_is_hessian_diagonal(model)[1] + ")")
  if method == "exact":
    values = exact_diagonal(model, params, batch_stats, images, labels, max_params=max_params,
                            **common)
    return _exact(values, method, "exact Hessian diagonal (one HVP per parameter)")
  if method == "hutchinson":
    est = hutchinson(model, params, batch_stats, images, labels, key, **probes)
    return _from_estimate(est, method, "Hutchinson estimate of the Hessian diagonal")
  ggn = ggn_diagonal(model, params, batch_stats, images, labels, mask=mask, chunk=chunk)
  residual = hutchinson(model, params, batch_stats, images, labels, key, operator="residual",
                        **probes)
  return _from_estimate(residual, method, "Hessian diagonal = exact GGN diagonal + Hutchinson "
                        "estimate of the residual", offset=ggn)


@functools.lru_cache(maxsize=16)
def _flat_hvp_program(model, batch_size: int):
  """Jitted (params, stats, images, labels, keep, v) -> keep * H (keep * v), flat.

  keep is the flat 0/1 mask: H restricted to the kept coordinates.
  """

  def program(params, batch_stats, images, labels, keep, v):
    unravel = ravel_pytree(params)[1]
    loss = make_loss(model, batch_stats, images, labels, batch_size)
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


def _lanczos_basis(matvec: Callable, start, steps: int, done: Callable):
  """Up to `steps` Lanczos steps from the unit vector `start`, with full
  reorthogonalisation; stops early when done(alphas, betas) or when the Krylov
  space is invariant (beta ~ 0: every Ritz value is then exact).

  Returns the basis ((steps + 1) x n; rows past the last step are zero) and
  the tridiagonal's alphas and betas (float64 numpy).
  """
  basis = jnp.zeros((steps + 1, start.size), start.dtype).at[0].set(start)
  alphas, betas = [], []
  floor = 100 * float(jnp.finfo(start.dtype).eps)
  shown = progress.Progress("Lanczos", steps, "steps (at most)")
  for j in range(steps):
    basis, alpha, beta = _extend_basis(basis, matvec(basis[j]), j)
    alphas.append(float(alpha))
    betas.append(float(beta))
    shown.update(j + 1)
    if betas[-1] <= floor * max(abs(a) for a in alphas) or done(alphas, betas):
      break
  return basis, np.asarray(alphas, np.float64), np.asarray(betas, np.float64)


def _ritz(alphas: np.ndarray, betas: np.ndarray):
  """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal T."""
  off = betas[:len(alphas) - 1]
  return np.linalg.eigh(np.diag(alphas) + np.diag(off, 1) + np.diag(off, -1))


@dataclasses.dataclass
class Spectrum:
  """Top-k Hessian eigenvalues (descending) from Lanczos, with their Ritz residuals."""
  eigenvalues: np.ndarray
  residuals: np.ndarray  # ||H y - lambda y|| of each unit Ritz vector y, by explicit HVPs
  converged: bool  # every residual <= tol * |lambda|
  iterations: int  # Lanczos steps
  num_hvps: int  # Lanczos steps plus k residual checks

  def as_dict(self) -> Dict[str, Any]:
    return {"eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
            "converged": self.converged, "iterations": self.iterations,
            "num_hvps": self.num_hvps}


def _flat_operator(model, params, batch_stats, images, labels, mask, batch_size: int):
  """(matvec on flat vectors, flat 0/1 keep mask, number of kept coordinates)."""
  validate.require(images.shape[0] > 0, "cannot compute a Hessian on an empty split")
  flat = ravel_pytree(params)[0]
  if mask is not None:
    masks.check_matches(mask, params)
  keep = jnp.ones_like(flat) if mask is None else ravel_pytree(mask)[0].astype(flat.dtype)
  program = _flat_hvp_program(model, batch_size)
  matvec = lambda v: program(params, batch_stats, images, labels, keep, v)
  return matvec, keep, int(jnp.sum(keep != 0))


def _unit_start(key, keep):
  v = jax.random.normal(key, keep.shape, keep.dtype) * keep
  return v / jnp.linalg.norm(v)


def lanczos(model, params: PyTree, batch_stats: PyTree, images, labels, key, *, k: int = 1,
            mask: Optional[PyTree] = None, max_iters: int = 100, tol: float = 1e-3,
            batch_size: int = 1000) -> Spectrum:
  """The k largest Hessian eigenvalues by Lanczos with full reorthogonalisation.

  Stops once each of the top k Ritz pairs has residual ||H y - lambda y|| <=
  tol * |lambda| (estimated from the tridiagonal each step), then measures
  those residuals with k explicit HVPs. H is restricted to the unpruned
  coordinates. Largest algebraically, not in magnitude: at a minimum the
  negative eigenvalues are the small ones.
  """
  validate.positive("lanczos k", k)
  validate.positive("lanczos iterations", max_iters)
  validate.non_negative("lanczos tol", tol)
  matvec, keep, dim = _flat_operator(model, params, batch_stats, images, labels, mask, batch_size)
  validate.require(k <= dim, f"lanczos k={k} is larger than the {dim} unpruned parameters")
  validate.require(max_iters >= k, f"lanczos iterations ({max_iters}) must be >= k ({k})")

  def converged(alphas, betas):
    if len(alphas) < k:
      return False
    values, vectors = _ritz(np.asarray(alphas), np.asarray(betas))
    estimate = betas[-1] * np.abs(vectors[-1, -k:])
    return bool(np.all(estimate <= tol * np.abs(values[-k:])))

  basis, alphas, betas = _lanczos_basis(matvec, _unit_start(key, keep), min(max_iters, dim),
                                        converged)
  values, vectors = _ritz(alphas, betas)
  values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
  ritz = basis[:len(alphas)].T @ jnp.asarray(vectors, basis.dtype)
  residuals = np.asarray([float(jnp.linalg.norm(matvec(ritz[:, i]) - values[i] * ritz[:, i]))
                          for i in range(k)])
  return Spectrum(values, residuals, bool(np.all(residuals <= tol * np.abs(values))),
                  len(alphas), len(alphas) + k)


def spectral_density(model, params: PyTree, batch_stats: PyTree, images, labels, key, *,
                     mask: Optional[PyTree] = None, num_probes: int = 1, steps: int = 30,
                     sigma: float = 0.01, num_points: int = 2000,
                     batch_size: int = 1000) -> Dict[str, Any]:
  """Hessian spectral density by stochastic Lanczos quadrature (PyHessian's density()).

  Per probe: `steps` Lanczos steps from a random unit vector; the
  tridiagonal's eigenvalues are the quadrature nodes and the squared first
  components of its eigenvectors the weights. The density is the mean over
  probes of the weights' Gaussians (width sigma x the nodes' span), on a grid
  5 widths beyond the extreme nodes, so it integrates to 1 without
  renormalising. Its mean, the mean of v.Hv, estimates trace / dimension.
  """
  validate.positive("density probes", num_probes)
  validate.positive("density steps", steps)
  validate.positive("density sigma", sigma)
  validate.require(num_points >= 2, f"density num_points must be >= 2, got {num_points!r}")
  matvec, keep, dim = _flat_operator(model, params, batch_stats, images, labels, mask, batch_size)
  nodes, weights = [], []
  for probe in range(num_probes):
    start = _unit_start(jax.random.fold_in(key, probe), keep)
    _, alphas, betas = _lanczos_basis(matvec, start, min(steps, dim), lambda a, b: False)
    values, vectors = _ritz(alphas, betas)
    nodes.append(values)
    weights.append(vectors[0] ** 2)
  all_nodes = np.concatenate(nodes)
  span = max(all_nodes.max() - all_nodes.min(), 1e-6 * max(np.abs(all_nodes).max(), 1e-30))
  width = sigma * span
  grid = np.linspace(all_nodes.min() - 5 * width, all_nodes.max() + 5 * width, num_points)
  gauss = lambda at: np.exp(-0.5 * ((grid[:, None] - at) / width) ** 2) / (width * np.sqrt(2 * np.pi))
  density = np.mean([gauss(at) @ w for at, w in zip(nodes, weights)], axis=0)
  means = [float(at @ w) for at, w in zip(nodes, weights)]
  return {"grid": grid, "density": density, "nodes": [n.tolist() for n in nodes],
          "weights": [w.tolist() for w in weights], "mean": float(np.mean(means)),
          "mean_stderr": float(np.std(means, ddof=1) / np.sqrt(num_probes))
          if num_probes > 1 else float("inf"),
          "dimension": dim, "num_probes": num_probes, "steps": len(nodes[0]), "sigma": width}


def layer_top_eigenvalues(model, params: PyTree, batch_stats: PyTree, images, labels, key, *,
                          mask: Optional[PyTree] = None, max_iters: int = 100,
                          tol: float = 1e-3, batch_size: int = 1000) -> Dict[str, Dict[str, Any]]:
  """Per kernel (every leaf with >= 2 dims): the top eigenvalue of its diagonal
  block of H, by Lanczos on that leaf's coordinates only."""
  full = masks.ones_like(params) if mask is None else mask
  leaves, tree = jax.tree.flatten(full)
  names = [masks.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  out = {}
  for i, (name, leaf) in enumerate(zip(names, leaves)):
    if leaf.ndim < 2 or not np.any(np.asarray(leaf)):
      continue
    only = jax.tree.unflatten(tree, [l if j == i else jnp.zeros_like(l) for j, l in enumerate(leaves)])
    out[name] = lanczos(model, params, batch_stats, images, labels, jax.random.fold_in(key, i),
                        k=1, mask=only, max_iters=max_iters, tol=tol,
                        batch_size=batch_size).as_dict()
  return out


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
