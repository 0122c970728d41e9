"""Diagonals computed, not sampled: the exact Hessian diagonal (one tangent
pass per coordinate) and the exact GGN diagonal (C pullbacks per example).
"""
import functools
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import execution as execution_lib
from lmcjax import masks
from lmcjax import models
from lmcjax import progress
from lmcjax import train
from lmcjax import validate
from lmcjax.curvature.operators import make_loss
from lmcjax.curvature.problem import LossProblem

PyTree = Any


@functools.lru_cache(maxsize=16)
def _leaf_hvp_program(model, batch_size_examples: int, execution: str):
  """Jitted (params, stats, images, labels, leaf) -> v -> H_ll v.

  H_ll is the Hessian block of params' leaf number `leaf` (static). The map is
  the linearised gradient with respect to that leaf alone: a jax Partial that
  holds the forward and backward residuals, so each product is one tangent
  pass from that layer to the loss and back to it, with no recomputed
  forward pass and no backward pass below the layer.
  """

  def program(params, batch_stats, images, labels, leaf):
    leaves, tree = jax.tree.flatten(params)
    problem = LossProblem(model, params, batch_stats, images, labels, batch_size_examples)
    loss = make_loss(problem, execution)
    with_leaf = lambda w: jax.tree.unflatten(tree, leaves[:leaf] + [w] + leaves[leaf + 1:])
    return jax.linearize(jax.grad(lambda w: loss(with_leaf(w))), leaves[leaf])[1]

  return jax.jit(program, static_argnums=4)


def _diagonal_entry(args, index):
  """e_i^T H_ll e_i for the flat index i of a leaf; args = (leaf_hvp, leaf)."""
  leaf_hvp, leaf = args
  basis = jnp.zeros(leaf.size, leaf.dtype).at[index].set(1).reshape(leaf.shape)
  return leaf_hvp(basis).ravel()[index]


@functools.lru_cache(maxsize=16)
def _entries_program(chunk_coordinates: int, execution: str):
  return execution_lib.map_points(_diagonal_entry, chunk_coordinates, execution)


def exact_diagonal(problem: LossProblem, *, chunk_coordinates: int = 64, max_params: int = 50000,
                   execution: str = "auto") -> PyTree:
  """diag(H) exactly: e_i^T H e_i for every unpruned coordinate i.

  Leaf by leaf: one linearisation of that leaf's gradient (_leaf_hvp_program),
  then one tangent pass per coordinate, `chunk_coordinates` per vmapped call
  or one per jitted call (execution, execution.resolve). Pruned
  coordinates (problem.mask) are zero and cost nothing. For validating the
  other methods: the cost grows with the number of parameters, so above
  max_params it is refused before any compute.
  """
  leaves, tree = jax.tree.flatten(problem.params)
  mask_leaves = (jax.tree.leaves(problem.mask) if problem.mask is not None
                 else [None] * len(leaves))
  kept = [np.arange(leaf.size) if m is None else np.flatnonzero(np.asarray(m).ravel())
          for leaf, m in zip(leaves, mask_leaves)]
  count = sum(k.size for k in kept)
  validate.require(count <= max_params,
                   f"the exact Hessian diagonal costs one Hessian-vector product per unpruned "
                   f"parameter: {count:,} here, above max_params={max_params:,}; use method "
                   f"'ggn', 'ggn+residual' or 'hutchinson', or raise max_params")
  validate.positive("exact_diagonal chunk_coordinates", chunk_coordinates)
  execution = execution_lib.resolve(execution, problem.params)
  linearise = _leaf_hvp_program(problem.model, problem.batch_size_examples, execution)
  entries = _entries_program(chunk_coordinates, execution)
  out = []
  for number, (leaf, idx) in enumerate(zip(leaves, kept)):
    values = np.zeros(leaf.size, leaf.dtype)
    if idx.size:
      leaf_hvp = linearise(*problem.operands(), number)
      values[idx] = np.asarray(entries((leaf_hvp, leaf), idx.astype(np.int32)))
    out.append(values.reshape(leaf.shape))
  return jax.tree.unflatten(tree, out)


def ggn_is_hessian_diagonal(model) -> Tuple[bool, str]:
  """Whether diag(GGN) is the exact diagonal of the eval-mode loss's Hessian,
  and why: declared by the model's registration (lmcjax/models/registry.py)."""
  props = models.info(model)
  return props.ggn_is_hessian_diagonal, props.curvature_reason


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


def ggn_diagonal(problem: LossProblem, *, chunk_examples: int = 50) -> PyTree:
  """diag(GGN) of the mean cross-entropy over the problem's examples, exactly.

  `chunk_examples` per vmapped call bound memory at chunk x classes x params
  floats (problem.batch_size_examples is the loss's chunk, not used here). A
  Python loop over chunks, not lax.map: XLA:CPU runs convolutions inside
  loops much slower. The labels do not enter (the GGN of softmax
  cross-entropy depends on the predictions only). Pruned entries are zero.
  """
  validate.positive("GGN chunk_examples", chunk_examples)
  images, n = problem.images, problem.num_examples
  chunk = min(chunk_examples, n)
  program = _ggn_program(problem.model)
  total = None
  shown = progress.Progress("GGN diagonal", n, "examples")
  for start in range(0, n, chunk):
    block = images[start:start + chunk]
    count = block.shape[0]
    block = jnp.concatenate([block, jnp.repeat(block[:1], chunk - count, axis=0)])
    weights = (jnp.arange(chunk) < count).astype(jnp.result_type(block.dtype)) / n
    part = program(problem.params, problem.batch_stats, block, weights)
    total = part if total is None else jax.tree.map(jnp.add, total, part)
    shown.update(start + count, wait=total)
  total = total if problem.mask is None else masks.apply(total, problem.mask)
  return jax.tree.map(np.asarray, total)
