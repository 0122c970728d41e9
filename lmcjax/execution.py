"""How independent pieces of work run on this backend: the one execution policy.

Every batch of independent work in lmcjax goes through here: K SGD-noise
copies (engine, branches), the alphas of an interpolation path, landscape grid
points, Hutchinson probes and exact-diagonal coordinates (curvature), the
example chunks of one evaluation, MTT's expert trajectories and the seeds of a
distilled set's evaluation (distill). Each takes an `execution` of EXECUTIONS,
'auto' by default, and `resolve` makes the one choice per backend and network.
"""
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmcjax import validate

PyTree = Any
# The mesh axis that independent pieces of work (copies, points) are split over.
COPY_AXIS = "copies"
# How independent pieces of work run: K copies of a run, the alphas of an
# interpolation path, landscape grid points, Hutchinson probes, Hessian
# diagonal entries and the example chunks of one evaluation. 'vmapped' batches
# them into one fused program (jit(vmap(...)) or lax.map/scan), which fills an
# accelerator; 'sequential' drives one jitted call per piece from Python (or
# unrolls the pieces under an outer jit). On XLA:CPU both batched forms lose
# for convolutional nets: vmap over parameter copies turns each convolution
# into a grouped convolution (3-4x slower for 4 evaluation copies, 1.3x for
# 2 ConvNet-3 train-step copies), and XLA:CPU rewrites
# convolutions to its fast NHWC/HWIO kernels only in a program's entry
# computation, so the gradient convolutions of a differentiated loss inside a
# lax.map/scan body fall back to a naive loop (23-41x slower for ConvNet-3,
# as measured: docs/performance.md).
# bench/bench_analysis.py and bench/bench_eval.py measure both.
EXECUTIONS = ("auto", "vmapped", "sequential")


def resolve(choice: str, params: PyTree = None) -> str:
  """'auto' -> 'sequential' for a convolutional net (a 4-D kernel in params) on
  CPU, else 'vmapped'; an explicit choice is kept. A dense net on CPU gains
  from vmap (x2 for 2-4 LeNet copies, bench/bench_analysis.py). params may be
  tracers (the choice is made at trace time from their shapes)."""
  validate.choice("execution", choice, EXECUTIONS)
  if choice != "auto":
    return choice
  return "sequential" if convolutional_on_cpu(params) else "vmapped"


def convolutional_on_cpu(params: PyTree) -> bool:
  """Whether params hold a 4-D (convolution) kernel and JAX runs on XLA:CPU:
  where batched and looped programs lose (see EXECUTIONS)."""
  convolutional = any(jnp.ndim(p) == 4 for p in jax.tree.leaves(params))
  return jax.default_backend() == "cpu" and convolutional


def chunked_vmap(fn: Callable, xs: PyTree, chunk: int) -> PyTree:
  """fn vmapped over the leading axis of xs, `chunk` rows at a time (lax.map).

  Use under jit. The rows are padded with copies of the last row to whole
  chunks and the padding is dropped, so any count works with one compile.
  """
  validate.positive("chunk size", chunk)
  n = jax.tree.leaves(xs)[0].shape[0]
  validate.require(n > 0, "nothing to evaluate: zero points")
  chunk = min(chunk, n)
  pad = (-n) % chunk
  pad_rows = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
  blocks = jax.tree.map(lambda a: pad_rows(a).reshape((-1, chunk) + a.shape[1:]), xs)
  out = jax.lax.map(jax.vmap(fn), blocks)
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)


def map_points(point_fn: Callable, chunk: int, execution: str) -> Callable:
  """Returns run(args, points) -> point_fn(args, p) for each row p of points, stacked.

  point_fn(args, p) returns a tree of arrays; points is a host array.
  execution 'vmapped': one jitted program, chunked_vmap over `chunk` points at
  a time; with several local devices the points are padded and split over
  them first, each device mapping over its share. 'sequential': a
  Python loop over one jitted point_fn call per point (one compile), with the
  results stacked on the device. Build it once per point_fn (under
  functools.lru_cache) so its programs compile once.
  """
  if execution == "sequential":
    one = jax.jit(point_fn)

    def run(args, points):
      outs = [one(args, p) for p in np.asarray(points)]
      return jax.tree.map(lambda *o: jnp.stack(o), *outs)

    return run
  mapped = jax.jit(lambda args, points: chunked_vmap(functools.partial(point_fn, args), points,
                                                     chunk))
  per_device = jax.jit(lambda args, blocks: jax.vmap(
      lambda block: chunked_vmap(functools.partial(point_fn, args), block, chunk))(blocks))

  def run_vmapped(args, points):
    points = np.asarray(points)
    # Points are cheap to pad (unlike copies): every device takes a block.
    devices = min(len(jax.local_devices()), len(points))
    if devices < 2:
      return mapped(args, points)
    mesh = _local_mesh(devices)
    pad = (-len(points)) % devices
    padded = np.concatenate([points, np.repeat(points[-1:], pad, axis=0)]) if pad else points
    blocks = jax.device_put(padded.reshape((devices, -1) + points.shape[1:]),
                            NamedSharding(mesh, PartitionSpec(COPY_AXIS)))
    out = per_device(args, blocks)
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:len(points)], out)

  return run_vmapped


def devices_for(num_pieces: int, num_devices: int) -> int:
  """How many devices split `num_pieces` independent pieces so that each takes
  whole pieces: the most devices that divide the count (one piece per device
  where there are at least as many pieces as devices); 1 = no split."""
  return max(k for k in range(1, min(num_devices, num_pieces) + 1) if num_pieces % k == 0)


def copy_mesh(num_pieces: int):
  """A mesh of local devices over COPY_AXIS for `num_pieces` independent pieces
  of work (devices_for), or None where they stay on one device.

  So K SGD-noise copies on a node of 8 GPUs train on 8 devices at once rather
  than each copy's batch being split eight ways.
  """
  usable = devices_for(num_pieces, len(jax.local_devices())) if num_pieces > 0 else 1
  return _local_mesh(usable) if usable > 1 else None


def _local_mesh(num_devices: int) -> Mesh:
  """The first num_devices local devices as a mesh over COPY_AXIS."""
  return Mesh(np.asarray(jax.local_devices()[:num_devices]), (COPY_AXIS,))


def shard_copies(stacked: PyTree) -> PyTree:
  """Stacked copies (copy index on axis 0) split over the local devices by
  copy_mesh; unchanged on one device. jit then runs each device's copies
  where they lie: vmapped copies never exchange data."""
  num = jax.tree.leaves(stacked)[0].shape[0]
  mesh = copy_mesh(num)
  if mesh is None:
    return stacked
  return jax.device_put(stacked, NamedSharding(mesh, PartitionSpec(COPY_AXIS)))


def take(stacked: PyTree, i: int) -> PyTree:
  """Copy i of a tree whose leaves have a leading copy axis."""
  return jax.tree.map(lambda a: a[i], stacked)


def stack(trees: Sequence[PyTree]) -> PyTree:
  """The trees stacked on a new leading (copy) axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
