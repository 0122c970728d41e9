"""Git Re-Basin weight matching (Ainsworth, Hayase & Srinivasa, ICLR 2023).

Find the permutation of net B's units that maximises the inner product of
its weights with net A's, sum over leaves <W_a, P(W_b)>. The problem is
coordinate-wise a linear assignment: with every other permutation held fixed,
the objective is linear in one permutation p, sum_i C_p[i, p[i]], where C_p
sums, over the leaves p permutes, A's leaf with p's axis first times B's leaf
(its other axes permuted) with p's axis first, both flattened to (units, -1).
Coordinate descent visits the permutations in a fresh random order each
iteration, solves each assignment exactly (scipy's linear_sum_assignment),
and stops after an iteration in which no permutation improved.

The contractions C_p run as one jitted program per permutation (compiled once
per structure); only the (units x units) matrix goes to the host. Masked
weights take part as zeros.
"""
import functools
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from lmcjax import masks
from lmcjax import validate
from lmcjax.connectivity import permute as permute_lib
from lmcjax.connectivity.structure import PermutationStructure

PyTree = Any
# An assignment replaces the current one only when it raises C_p's matched sum
# by more than this fraction of it: ties (dead units) then end the descent.
_RELATIVE_IMPROVEMENT = 1e-9


def weight_matching(structure: PermutationStructure, variables_a: Mapping, variables_b: Mapping,
                    *, mask_a: Optional[PyTree] = None, mask_b: Optional[PyTree] = None,
                    key: jax.Array, max_iterations: int = 100) -> Tuple[Dict[str, np.ndarray],
                                                                        Dict[str, Any]]:
  """Aligns net B's units to net A's by weight matching.

  Args:
    structure: structure_of(module, variables_a).
    variables_a, variables_b: {'params': ..., 'batch_stats': ...}; only the
      params are matched (running statistics follow the permutation).
    mask_a, mask_b: 0/1 trees with the params' structure, or None (dense).
    key: orders the permutations in each iteration (a named config seed).
    max_iterations: at most this many sweeps over all permutations.
  Returns:
    (perm, objective): perm maps B's units onto A's, so
    permute(structure, perm, params_b) is B aligned to A; objective has
    'inner_product' (the final sum of <W_a, P(W_b)> over all params leaves),
    'history' (that sum after each iteration) and 'iterations'.
  """
  validate.positive("max_iterations", max_iterations)
  params_a = _masked(variables_a, mask_a, "a")
  params_b = _masked(variables_b, mask_b, "b")
  masks.check_matches(params_b, params_a, "params of net b")
  perm = permute_lib.identity(structure)
  names = list(structure.sizes)
  history = []
  for iteration in range(max_iterations):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, iteration), len(names)))
    improved = False
    for name in (names[i] for i in order):
      cost = np.asarray(_cost(structure, name, params_a, params_b, _device(perm)), np.float64)
      units, better = assign(cost, perm[name])
      if better:
        perm[name], improved = units, True
    history.append(float(_inner_product(structure, params_a, params_b, _device(perm))))
    if not improved:
      break
  return perm, {"inner_product": history[-1], "history": history, "iterations": len(history)}


def assign(cost: np.ndarray, current: np.ndarray) -> Tuple[np.ndarray, bool]:
  """The assignment maximising sum_i cost[i, p[i]], and whether it beats `current`."""
  _, units = optimize.linear_sum_assignment(cost, maximize=True)
  rows = np.arange(len(cost))
  old, new = cost[rows, current].sum(), cost[rows, units].sum()
  return units, bool(new - old > _RELATIVE_IMPROVEMENT * max(1.0, abs(old)))


def _masked(variables: Mapping, mask: Optional[PyTree], which: str) -> PyTree:
  validate.require(isinstance(variables, Mapping) and "params" in variables,
                   f"variables of net {which} must be a dict with 'params'")
  params = variables["params"]
  if mask is None:
    return params
  masks.check_matches(mask, params, f"mask_{which}")
  return masks.apply(params, mask)


def _device(perm: Mapping[str, np.ndarray]) -> Dict[str, jax.Array]:
  return {name: jnp.asarray(units, jnp.int32) for name, units in perm.items()}


@functools.partial(jax.jit, static_argnames=("structure", "name"))
def _cost(structure: PermutationStructure, name: str, params_a, params_b, perm) -> jax.Array:
  """C_name[i, j]: the inner product of A's unit i with B's unit j, over every
  leaf axis `name` permutes, B's other permuted axes already aligned."""
  size = structure.sizes[name]
  cost = jnp.zeros((size, size), jnp.float32)
  for path, axes in structure.axes.items():
    if path[0] != "params":
      continue
    for own in (axis for axis in axes if axis.perm == name):
      b = permute_lib.get_leaf(params_b, path[1:])
      for other in axes:
        if other is not own:
          b = permute_lib.take(b, other, perm[other.perm], structure.sizes[other.perm])
      a = _units_first(permute_lib.get_leaf(params_a, path[1:]), own, size)
      cost += jnp.matmul(a, _units_first(b, own, size).T, precision=jax.lax.Precision.HIGHEST)
  return cost


def _units_first(leaf, axis, size: int):
  """(size, -1): the permuted units first, every other entry (tiles included) after."""
  leaf = jnp.moveaxis(leaf, axis.axis, 0)
  if axis.tiles > 1:  # (tiles * size, ...) -> (size, tiles, ...)
    leaf = jnp.swapaxes(leaf.reshape((axis.tiles, size) + leaf.shape[1:]), 0, 1)
  return leaf.reshape(size, -1).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("structure",))
def _inner_product(structure: PermutationStructure, params_a, params_b, perm) -> jax.Array:
  """sum over params leaves of <W_a, P(W_b)>."""
  aligned = permute_lib.permute(structure, perm, params_b)[0]
  products = jax.tree.map(lambda a, b: jnp.vdot(a.astype(jnp.float32), b.astype(jnp.float32),
                                                precision=jax.lax.Precision.HIGHEST),
                          params_a, aligned)
  return sum(jax.tree.leaves(products))
