"""What the report shows of a diagonal: per-layer figures and the kept entries."""
from typing import Any, Dict, Optional

import jax
import numpy as np

from lmcjax import masks
from lmcjax import validate

PyTree = Any


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
