"""Magnitude pruning: pure functions from (scores, mask) to the next mask.

Each round removes `fraction` of the prunable weights that are still kept, so
after k rounds of fraction 0.2 the sparsity is 1 - 0.8^k up to the rounding of
counts. The counts are exact (round(fraction * kept) weights go each round)
and ties are broken deterministically: among equal scores the weight with the
lower flat index (leaf order of the params tree, then row-major) goes first.

Masks follow lmcjax.masks: the params' tree, 0/1 in the params' dtype on
prunable leaves and ones elsewhere. Scores and masks are read on the host
(numpy), where a stable sort is cheap and exactly reproducible.
"""
from typing import Any, List

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import validate

PyTree = Any
METHODS = ("global", "layerwise")


def magnitude_scores(params: PyTree) -> PyTree:
  """|w| for every leaf: IMP's criterion."""
  return jax.tree.map(jnp.abs, params)


def random_scores(key: jax.Array, params: PyTree) -> PyTree:
  """Uniform scores, one independent draw per leaf: pruning by them is random pruning."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.uniform(k, jnp.shape(leaf))
                            for k, leaf in zip(keys, leaves)])


def num_to_prune(kept: int, fraction: float) -> int:
  """Weights removed from `kept` survivors in one round (round half to even)."""
  return int(np.round(fraction * kept))


def _prunable_leaves(tree: PyTree, prunable: PyTree) -> List[np.ndarray]:
  return [np.asarray(leaf)
          for leaf, p in zip(jax.tree.leaves(tree), jax.tree.leaves(prunable)) if p]


def _rebuild(mask: PyTree, prunable: PyTree, new_leaves: List[np.ndarray]) -> PyTree:
  """`mask` with its prunable leaves replaced, in order, by `new_leaves`."""
  leaves, treedef = jax.tree.flatten(mask)
  replacements = iter(new_leaves)
  out = [jnp.asarray(next(replacements), jnp.asarray(leaf).dtype) if p else leaf
         for leaf, p in zip(leaves, jax.tree.leaves(prunable))]
  return treedef.unflatten(out)


def _drop_lowest(scores: np.ndarray, kept: np.ndarray, count: int) -> np.ndarray:
  """Flat keep-vector with the `count` lowest-scoring kept entries removed.

  A stable argsort over the kept entries (already in flat-index order) breaks
  ties by flat index, so the result never depends on the sort implementation.
  """
  kept_idx = np.flatnonzero(kept)
  order = np.argsort(scores[kept_idx], kind="stable")
  new = kept.copy()
  new[kept_idx[order[:count]]] = False
  return new


def _check_args(scores: PyTree, mask: PyTree, fraction: float) -> None:
  validate.fraction_open("prune fraction", fraction)
  validate.require(jax.tree.structure(scores) == jax.tree.structure(mask),
                   "pruning scores and mask have different trees")


def prune_global(scores: PyTree, mask: PyTree, prunable: PyTree, fraction: float = 0.2) -> PyTree:
  """Removes `fraction` of all kept prunable weights, lowest scores first, across layers."""
  _check_args(scores, mask, fraction)
  score_leaves = _prunable_leaves(scores, prunable)
  mask_leaves = _prunable_leaves(mask, prunable)
  flat_scores = np.concatenate([s.ravel() for s in score_leaves]).astype(np.float64)
  flat_kept = np.concatenate([m.ravel() != 0 for m in mask_leaves])
  new_kept = _drop_lowest(flat_scores, flat_kept, num_to_prune(int(flat_kept.sum()), fraction))
  splits = np.cumsum([m.size for m in mask_leaves])[:-1]
  new_leaves = [k.reshape(m.shape) for k, m in zip(np.split(new_kept, splits), mask_leaves)]
  return _rebuild(mask, prunable, new_leaves)


def prune_layerwise(scores: PyTree, mask: PyTree, prunable: PyTree,
                    fraction: float = 0.2) -> PyTree:
  """Removes `fraction` of the kept weights of each prunable layer separately."""
  _check_args(scores, mask, fraction)
  new_leaves = []
  for s, m in zip(_prunable_leaves(scores, prunable), _prunable_leaves(mask, prunable)):
    kept = m.ravel() != 0
    new = _drop_lowest(s.ravel().astype(np.float64), kept, num_to_prune(int(kept.sum()), fraction))
    new_leaves.append(new.reshape(m.shape))
  return _rebuild(mask, prunable, new_leaves)


def prune(scores: PyTree, mask: PyTree, prunable: PyTree, fraction: float = 0.2,
          method: str = "global") -> PyTree:
  """The next round's mask by `method` (global | layerwise)."""
  validate.choice("imp.method", method, METHODS)
  fn = prune_global if method == "global" else prune_layerwise
  return fn(scores, mask, prunable, fraction)


def random_with_layer_counts(key: jax.Array, mask: PyTree, prunable: PyTree) -> PyTree:
  """A uniformly random mask that keeps as many weights per layer as `mask`.

  The random-pruning control: it matches the layerwise sparsity of an IMP
  mask but not which weights survive. Layer i draws from fold_in(key, i).
  """
  new_leaves = []
  for i, m in enumerate(_prunable_leaves(mask, prunable)):
    kept = int(np.count_nonzero(m))
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
    new = np.zeros(m.size, bool)
    new[perm[:kept]] = True
    new_leaves.append(new.reshape(m.shape))
  return _rebuild(mask, prunable, new_leaves)


def expected_sparsity(rounds: int, fraction: float = 0.2) -> float:
  """1 - (1 - fraction)^rounds: the sparsity IMP reaches, ignoring count rounding."""
  return 1.0 - (1.0 - fraction) ** rounds

