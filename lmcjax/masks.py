"""Masks: pytrees with the params' structure, 0/1 on prunable leaves, ones elsewhere.

Masks are float arrays in the params' dtype so that applying one is a single
fused multiply. Which leaves are prunable is `config.prune.scope`.
"""
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import validate

PyTree = Any
# all_kernels: every conv and dense kernel, output layer included (the paper).
SCOPES = ("all_kernels", "hidden_kernels", "conv_kernels")


def path_name(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def prunable_tree(params: PyTree, scope: str = "all_kernels", classifier: str = "") -> PyTree:
  """Pytree of Python bools: which leaves may be pruned.

  Args:
    params: the model's parameters.
    scope: one of SCOPES.
    classifier: the top-level params key of the classifier head, as the model's
      registration names it (`models.info(model).classifier`); needed by
      'hidden_kernels', which keeps the head dense.
  """
  validate.choice("prune.scope", scope, SCOPES)
  validate.require(scope != "hidden_kernels" or classifier in params,
                   f"prune.scope='hidden_kernels' needs the classifier head's name; "
                   f"{classifier!r} is not a top-level module of these params")

  def is_prunable(path, leaf):
    name = path[-1].key if hasattr(path[-1], "key") else ""
    if name != "kernel" or leaf.ndim < 2:
      return False
    if scope == "conv_kernels":
      return leaf.ndim == 4
    if scope == "hidden_kernels":
      return path_name(path[:1]) != classifier
    return True

  return jax.tree_util.tree_map_with_path(is_prunable, params)


def ones_like(params: PyTree) -> PyTree:
  """The dense mask."""
  return jax.tree.map(jnp.ones_like, params)


def apply(params: PyTree, mask: PyTree) -> PyTree:
  return jax.tree.map(lambda p, m: p * m, params, mask)


def check_matches(mask: PyTree, params: PyTree, what: str = "mask") -> None:
  """One-line error if a mask (or any tree) does not match the params' tree."""
  want = jax.tree_util.tree_flatten_with_path(params)[0]
  got = jax.tree_util.tree_flatten_with_path(mask)[0]
  want_paths = {path_name(p): np.shape(leaf) for p, leaf in want}
  got_paths = {path_name(p): np.shape(leaf) for p, leaf in got}
  missing = sorted(set(want_paths) - set(got_paths))
  extra = sorted(set(got_paths) - set(want_paths))
  validate.require(not missing and not extra,
                   f"{what} does not match the model: missing {missing[:3]}, "
                   f"unexpected {extra[:3]}")
  for name, shape in want_paths.items():
    validate.require(got_paths[name] == shape,
                     f"{what} leaf {name} has shape {got_paths[name]}, model has {shape}")


def counts(mask: PyTree, prunable: PyTree) -> Dict[str, Tuple[int, int]]:
  """Per prunable layer: (kept, total)."""
  out = {}
  for (path, m), keep in zip(jax.tree_util.tree_flatten_with_path(mask)[0],
                             jax.tree_util.tree_leaves(prunable)):
    if keep:
      out[path_name(path)] = (int(np.count_nonzero(np.asarray(m))), int(np.size(m)))
  return out


def sparsity(mask: PyTree, prunable: PyTree) -> float:
  """Fraction of prunable weights that are pruned."""
  c = counts(mask, prunable).values()
  total = sum(t for _, t in c)
  return 1.0 - sum(k for k, _ in c) / total if total else 0.0


def sparsity_report(mask: PyTree, prunable: PyTree) -> Dict[str, Any]:
  """Total and per-layer sparsity, JSON-ready."""
  layers = {name: {"kept": k, "total": t, "sparsity": 1.0 - k / t}
            for name, (k, t) in counts(mask, prunable).items()}
  return {"sparsity": sparsity(mask, prunable), "layers": layers}
