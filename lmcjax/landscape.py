"""Loss landscapes on planes (and lines) in parameter space.

A `Plane` is an origin and k directions (parameter trees); the point with
coordinates c is origin + sum_k c_k d_k. Kinds:
  three_point: through theta0, theta1, theta2 with the orthonormal
    (Gram-Schmidt) basis of theta1 - theta0, theta2 - theta0, so distances
    on the plot are Euclidean distances in parameter space;
  four_seed: the seed paper's M = (theta0 + theta1)/2, V0 = (theta0 -
    theta1)/2, V1 = (theta3 - theta2)/2; theta0, theta1 sit at (1, 0), (-1, 0)
    and theta2, theta3 at their projections;
  random: Li et al. (2018) filter-normalised Gaussian directions, 1-D or 2-D.
Grid points run as chosen per backend (execution.resolve): vmapped in
chunks on an accelerator, one jitted call per point for a convolutional net
on CPU (execution.map_points).
"""
import dataclasses
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

from lmcjax import execution as execution_lib
from lmcjax import logs
from lmcjax import masks
from lmcjax import progress
from lmcjax import train
from lmcjax import validate

PyTree = Any
KINDS = ("three_point", "four_seed", "random_1d", "random_2d")


@dataclasses.dataclass
class Plane:
  origin: PyTree
  directions: Tuple[PyTree, ...]
  points: Dict[str, Tuple[float, ...]]  # named solutions' coordinates
  kind: str


def _check_same(trees: Sequence[PyTree]) -> None:
  for i, t in enumerate(trees[1:], 1):
    masks.check_matches(t, trees[0], what=f"landscape solution {i}")


def three_point_plane(t0: PyTree, t1: PyTree, t2: PyTree) -> Plane:
  """The plane through three solutions, with an orthonormal basis."""
  _check_same([t0, t1, t2])
  f0, unravel = ravel_pytree(t0)
  d1 = ravel_pytree(t1)[0] - f0
  d2 = ravel_pytree(t2)[0] - f0
  n1 = float(jnp.linalg.norm(d1))
  validate.require(n1 > 0, "landscape: solutions 0 and 1 are identical; no plane through them")
  u = d1 / n1
  w = d2 - jnp.vdot(d2, u) * u
  nw = float(jnp.linalg.norm(w))
  validate.require(nw > 1e-6 * max(n1, 1.0), "landscape: the three solutions are collinear")
  v = w / nw
  points = {"theta0": (0.0, 0.0), "theta1": (n1, 0.0),
            "theta2": (float(jnp.vdot(d2, u)), float(jnp.vdot(d2, v)))}
  return Plane(t0, (unravel(u), unravel(v)), points, "three_point")


def four_seed_plane(t0: PyTree, t1: PyTree, t2: PyTree, t3: PyTree) -> Plane:
  """The seed paper's plane through the midpoint of theta0 and theta1."""
  _check_same([t0, t1, t2, t3])
  flats = [ravel_pytree(t)[0] for t in (t0, t1, t2, t3)]
  unravel = ravel_pytree(t0)[1]
  mid = (flats[0] + flats[1]) / 2
  basis = jnp.stack([(flats[0] - flats[1]) / 2, (flats[3] - flats[2]) / 2], 1)
  gram = basis.T @ basis
  validate.require(float(jnp.linalg.det(gram)) > 1e-10 * float(jnp.trace(gram)) ** 2,
                   "landscape: V0 and V1 of the four-seed plane are parallel or zero")
  coords = lambda f: tuple(float(c) for c in jnp.linalg.solve(gram, basis.T @ (f - mid)))
  points = {f"theta{i}": coords(f) for i, f in enumerate(flats)}
  return Plane(unravel(mid), (unravel(basis[:, 0]), unravel(basis[:, 1])), points, "four_seed")


def filter_normalized_direction(key, params: PyTree, mask: Optional[PyTree] = None,
                                skip_bias_and_norm: bool = True) -> PyTree:
  """A Gaussian direction whose every filter has the norm of the weight's filter.

  A filter is one output unit: the last axis of a flax Dense or Conv kernel.
  1-D leaves (biases, norm scales and offsets) are zero when skipped and
  otherwise copy the weights, as in Li et al.'s code. Pruned entries are
  zero, so the direction stays in the sparse subspace.
  """
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  mask_leaves = jax.tree.leaves(mask) if mask is not None else [None] * len(leaves)
  out = []
  for k, w, m in zip(keys, leaves, mask_leaves):
    if w.ndim <= 1:
      out.append(jnp.zeros_like(w) if skip_bias_and_norm else w)
      continue
    d = jax.random.normal(k, w.shape, w.dtype)
    d = d if m is None else d * m
    axes = tuple(range(w.ndim - 1))
    w_norm = jnp.sqrt(jnp.sum(w * w, axis=axes, keepdims=True))
    d_norm = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
    out.append(d * w_norm / jnp.where(d_norm > 0, d_norm, 1.0))
  return jax.tree.unflatten(tree, out)


def random_plane(key, params: PyTree, dims: int = 2, mask: Optional[PyTree] = None,
                 skip_bias_and_norm: bool = True) -> Plane:
  """Li et al.'s 1-D or 2-D filter-normalised random directions around params."""
  validate.choice("random landscape dims", dims, (1, 2))
  dirs = tuple(filter_normalized_direction(jax.random.fold_in(key, i), params, mask,
                                           skip_bias_and_norm) for i in range(dims))
  return Plane(params, dirs, {"theta0": (0.0,) * dims}, f"random_{dims}d")


def grid_axes(plane: Plane, resolution: int, margin: float = 0.25,
              span: float = 1.0) -> Tuple[np.ndarray, ...]:
  """Axis coordinates: the solutions' bounding box widened by `margin` of its
  size, or [-span, span] around a single point (random directions)."""
  validate.require(resolution >= 2, f"landscape resolution must be >= 2, got {resolution!r}")
  validate.non_negative("landscape margin", margin)
  pts = np.asarray(list(plane.points.values()), np.float64)
  axes = []
  for k in range(len(plane.directions)):
    low, high = pts[:, k].min(), pts[:, k].max()
    if high - low <= 0:
      low, high = low - span, high + span
    else:
      pad = margin * (high - low)
      low, high = low - pad, high + pad
    axes.append(np.linspace(low, high, resolution, dtype=np.float32))
  return tuple(axes)


def point_params(plane: Plane, coords, mask: Optional[PyTree] = None) -> PyTree:
  """origin + sum_k coords[k] * directions[k], times the mask."""
  def combine(o, *ds):
    return o + sum(c * d for c, d in zip(coords, ds))
  params = jax.tree.map(combine, plane.origin, *plane.directions)
  return params if mask is None else masks.apply(params, mask)


@functools.lru_cache(maxsize=16)
def _grid_program(model, eval_batch_size: int, chunk: int, execution: str):
  """(args, coords) -> metrics per point.

  args = (origin, directions, mask, batch_stats, images, labels).
  """
  evaluate = train.make_eval_fn(model, eval_batch_size)

  def at_point(args, coords):
    origin, directions, mask, batch_stats, images, labels = args
    plane = Plane(origin, directions, {}, "")
    return evaluate(point_params(plane, coords, mask), batch_stats, images, labels)

  return execution_lib.map_points(at_point, chunk, execution)


def _evaluate_points(model, plane: Plane, coords: np.ndarray, batch_stats, images, labels, mask,
                     chunk: int, eval_batch_size: int, execution: str) -> Dict[str, np.ndarray]:
  """{'loss', 'accuracy'} at each row of coords, one call per `chunk` points.

  One call per chunk, not one for the grid, so progress can be reported. When
  vmapped, the last chunk is padded with its last point, so every call has
  one shape and compiles once; sequential calls are per point anyway.
  """
  n = coords.shape[0]
  chunk = min(chunk, n)
  program = _grid_program(model, eval_batch_size, chunk, execution)
  pad = (-n) % chunk if execution == "vmapped" else 0
  padded = np.concatenate([coords, np.repeat(coords[-1:], pad, axis=0)])
  args = (plane.origin, tuple(plane.directions), mask, batch_stats, images, labels)
  shown = progress.Progress("landscape grid", n, "points")
  outs = []
  for start in range(0, n, chunk):
    outs.append(program(args, padded[start:start + chunk]))
    shown.update(min(start + chunk, n), wait=outs[-1])
  outs = jax.device_get(outs)
  return {k: np.concatenate([o[k] for o in outs])[:n] for k in ("loss", "accuracy")}


def evaluate_grid(model, plane: Plane, axes: Sequence[np.ndarray], batch_stats: PyTree,
                  images, labels, *, mask: Optional[PyTree] = None, chunk: int = 16,
                  eval_batch_size: int = 1000, execution: str = "auto") -> Dict[str, np.ndarray]:
  """Loss and error on the grid spanned by `axes` (one per direction).

  Returns arrays of shape (len(axes[1]), len(axes[0])) for a plane (rows: y),
  or (len(axes[0]),) for a line, plus the axes and the solutions' coordinates.
  batch_stats are used as they are (eval mode) at every point. chunk: points
  per vmapped call when execution ('auto' | 'vmapped' | 'sequential',
  execution.resolve) is 'vmapped'.
  """
  validate.positive("landscape chunk", chunk)
  validate.require(len(axes) == len(plane.directions),
                   f"{len(axes)} axes for {len(plane.directions)} directions")
  validate.require(images.shape[0] > 0, "cannot evaluate a landscape on an empty split")
  mesh = np.meshgrid(*axes, indexing="xy")
  coords = np.stack([m.ravel() for m in mesh], axis=1).astype(np.float32)
  execution = execution_lib.resolve(execution, plane.origin)
  out = _evaluate_points(model, plane, coords, batch_stats, images, labels, mask, chunk,
                         eval_batch_size, execution)
  shape = mesh[0].shape
  result = {"loss": np.asarray(out["loss"]).reshape(shape),
            "error": 1.0 - np.asarray(out["accuracy"]).reshape(shape)}
  for k, a in enumerate(axes):
    result[f"axis{k}"] = np.asarray(a)
  result["point_names"] = np.asarray(list(plane.points))
  result["point_coords"] = np.asarray(list(plane.points.values()), np.float64)
  return result


def save_grid(path: str, grid: Dict[str, np.ndarray], kind: str) -> None:
  """The raw grid as npz (no pickles), so plots can be redrawn without recompute."""
  logs.write_npz(path, kind=np.asarray(kind), **grid)
