"""Permute a net's units: params, running statistics and mask together.

A permutation is a dict: permutation name -> int array `p` of its units, read
as "new unit i is old unit p[i]" (jnp.take along each permuted axis). The
alignment functions return the `p` that maps net B's units onto net A's, so
`permute(structure, perm, params_b)` is B aligned to A.
"""
import functools
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import validate
from lmcjax.connectivity.structure import PermutationStructure, PermutedAxis

PyTree = Any
Permutation = Dict[str, Any]  # name -> int array of its units


def identity(structure: PermutationStructure) -> Permutation:
  """The permutation that changes nothing."""
  return {name: np.arange(size) for name, size in structure.sizes.items()}


def random_permutation(structure: PermutationStructure, key: jax.Array) -> Permutation:
  """Independent uniform permutations of every permutation's units: the
  ranks of uniform draws, one draw for all units (one dispatch, not one
  compiled program per size)."""
  draws = np.asarray(jax.random.uniform(key, (sum(structure.sizes.values()),)))
  bounds = np.cumsum([0] + list(structure.sizes.values()))
  return {name: np.argsort(draws[start:stop], kind="stable")
          for name, start, stop in zip(structure.sizes, bounds[:-1], bounds[1:])}


def invert(perm: Permutation) -> Permutation:
  """permute(s, invert(p), permute(s, p, x)) == x."""
  return {name: np.argsort(np.asarray(p)) for name, p in perm.items()}


def compose(first: Permutation, then: Permutation) -> Permutation:
  """Permuting by `first` and then by `then` is permuting by compose(first, then)."""
  return {name: np.asarray(first[name])[np.asarray(then[name])] for name in first}


def permute(structure: PermutationStructure, perm: Permutation, params: PyTree,
            batch_stats: Optional[PyTree] = None,
            mask: Optional[PyTree] = None) -> Tuple[PyTree, Optional[PyTree], Optional[PyTree]]:
  """The same net with its units reordered: (params, batch_stats, mask).

  Args:
    structure: structure_of(module, variables).
    perm: name -> int array (see the module docstring); jit-traceable.
    params: the net's params; batch_stats its running statistics (None or {}
      where it keeps none); mask a 0/1 tree with the params' structure, or None.
  Returns:
    The three trees permuted alike (None stays None), so the permuted masked
    net computes what the masked net computes.
  """
  check(structure, perm)
  perm = {name: jnp.asarray(units, jnp.int32) for name, units in perm.items()}
  params, permuted_stats, mask = _permute_trees(structure, perm, params, batch_stats or None, mask)
  return params, permuted_stats if batch_stats else batch_stats, mask


@functools.partial(jax.jit, static_argnames="structure")
def _permute_trees(structure: PermutationStructure, perm, params, batch_stats, mask):
  """permute's three trees in one compiled program."""
  params = _permute_collection(structure, perm, "params", params)
  if batch_stats is not None:
    batch_stats = _permute_collection(structure, perm, "batch_stats", batch_stats)
  if mask is not None:
    mask = _permute_collection(structure, perm, "params", mask)
  return params, batch_stats, mask


def check(structure: PermutationStructure, perm: Permutation) -> None:
  """One line if `perm` lacks a permutation or has one of the wrong size."""
  for name, size in structure.sizes.items():
    validate.require(name in perm, f"the permutation of model {structure.model!r} lacks {name!r}")
    validate.require(np.shape(perm[name]) == (size,),
                     f"permutation {name!r} has shape {np.shape(perm[name])}, "
                     f"model {structure.model!r} has {size} units there")


def take(leaf, axis: PermutedAxis, units, size: int):
  """`leaf` with `units` (a permutation of `size` units) applied along `axis`,
  in each of its tiles."""
  index = jnp.asarray(units)
  if axis.tiles > 1:
    index = (jnp.arange(axis.tiles)[:, None] * size + index[None, :]).reshape(-1)
  return jnp.take(leaf, index, axis=axis.axis)


def _permute_collection(structure: PermutationStructure, perm: Permutation, collection: str,
                        tree: PyTree) -> PyTree:
  """Every leaf of `tree` (one collection) permuted along its structure's axes."""
  seen = set()

  def permute_leaf(path, leaf):
    key = (collection,) + tuple(str(getattr(p, "key", p)) for p in path)
    axes = structure.axes.get(key, ())
    if axes:
      seen.add(key)
    for axis in axes:
      leaf = take(leaf, axis, perm[axis.perm], structure.sizes[axis.perm])
    return leaf

  out = jax.tree_util.tree_map_with_path(permute_leaf, tree)
  missing = sorted(k for k in structure.axes if k[0] == collection and k not in seen)
  first = "/".join(missing[0][1:]) if missing else ""
  validate.require(not missing, f"{collection} do not match model {structure.model!r}'s "
                                f"permutation structure: it has no leaf {first}")
  return out


def get_leaf(tree: Mapping, path: Tuple[str, ...]):
  """tree[path[0]][path[1]]..."""
  for key in path:
    tree = tree[key]
  return tree
