"""Evaluation-side speed on a ConvNet: the old fused programs against the per-backend choice.

  python bench/bench_eval.py [--repeats=1] [--images=1000] [--alphas=31] [--grid=5]
                             [--hessian_images=256] [--hessian_batch=128] [--probes=2]
                             [--exact_params=2] [--exact_new_params=32] [--shape=28,28,1]
                             [--platform=gpu]

ConvNet-3 width 32, instance norm, avg pool (configs/cifar10_small.py's
model, 21,898 parameters on 28x28x1) on real MNIST digits (lmcjax.data's
bundled MNIST-5k), or random pixels for another --shape (32,32,3: CIFAR).
Every row times two paths, interleaved, after one untimed run of each
(compilation), and prints the time per unit of work and the ratio, since
absolute times are noisy on shared cores:
  old: execution='vmapped', the fused programs lmcjax used everywhere: alphas,
       grid points and probes vmapped, the example chunks of a loss scanned
       with lax.map (--hessian_images in chunks of --hessian_batch);
  new: execution='auto', what the library now picks for this backend.
Rows: one Hessian-vector product; a Hutchinson probe (--probes per call);
--alphas interpolation alphas and a --grid x --grid landscape (per point; the
analysis default is 21x21) on --images test images; the exact Hessian
diagonal per parameter, on coordinates of the widest kernel chosen with a
mask: old = the one-hot HVP per coordinate, vmapped, that exact_diagonal used
(--exact_params coordinates), new = exact_diagonal (--exact_new_params,
which share its one linearisation per leaf).

--platform=gpu (or tpu) runs on an accelerator, where 'auto' resolves to
'vmapped': both columns then time the same fused programs (ratio ~1), and
their throughputs are the accelerator path's.
"""
import os
import sys
import time

from absl import app
from absl import flags
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import cifar10_small  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import curvature  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import execution as execution_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import interpolate  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import landscape  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("repeats", 1, "Timed repeats of each path (after one untimed run); best kept.")
flags.DEFINE_list("shape", ["28", "28", "1"], "Image shape H,W,C; 28,28,1 uses real MNIST digits.")
flags.DEFINE_integer("images", 1000, "Test images for interpolation and the landscape.")
flags.DEFINE_integer("eval_batch", 1000, "Evaluation chunk (config.eval_batch_size).")
flags.DEFINE_integer("alphas", 31, "Interpolation alphas.")
flags.DEFINE_integer("grid", 5, "Landscape resolution per axis (the analysis default is 21).")
flags.DEFINE_integer("hessian_images", 256, "Images the Hessian's loss averages over.")
flags.DEFINE_integer("hessian_batch", 128, "Examples per chunk of the Hessian's loss.")
flags.DEFINE_integer("probes", 2, "Hutchinson probes per timed call.")
flags.DEFINE_integer("exact_params", 2, "Coordinates the old exact diagonal is timed on.")
flags.DEFINE_integer("exact_new_params", 32, "Coordinates the new exact diagonal is timed on "
                     "(its one linearisation per leaf is shared by them).")
flags.DEFINE_enum("platform", "", ["", "cpu", "gpu", "tpu"],
                  "JAX platform ('' = JAX's default). On gpu/tpu 'auto' is the vmapped path.")
FLAGS = flags.FLAGS


def interleaved(paths, repeats: int):
  """Best wall time of each fn in paths {name: fn}, after one untimed call
  each (compilation), the timed calls alternating between the paths."""
  for fn in paths.values():
    jax.block_until_ready(fn())
  best = {name: np.inf for name in paths}
  for _ in range(repeats):
    for name, fn in paths.items():
      tick = time.perf_counter()
      jax.block_until_ready(fn())
      best[name] = min(best[name], time.perf_counter() - tick)
  return best


def report(work: str, unit: str, counts, fns, repeats: int) -> None:
  """Times old (vmapped) and new (auto) on counts (old, new) units of work; prints both per
  unit and old/new."""
  best = interleaved(fns, repeats)
  old, new = best["old"] / counts[0], best["new"] / counts[1]
  print(f"{work:<40s} old {old:8.3f} s/{unit}  new {new:8.3f} s/{unit}  "
        f"new is x{old / new:6.2f} faster", flush=True)


def setup():
  """(model, params of two inits, test images, labels) for ConvNet-3 w32."""
  shape = tuple(int(s) for s in FLAGS.shape)
  model = models.create(cifar10_small.get_config().model, 10)
  ends = [train.init_variables(model, jax.random.PRNGKey(seed), shape)[0] for seed in (0, 1)]
  n = max(FLAGS.images, FLAGS.hessian_images)
  if shape == (28, 28, 1):
    mnist = data.load_mnist5k()
    x, y = mnist.normalise(mnist.x_train[:n]), mnist.y_train[:n]
  else:
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (n,) + shape))
    y = np.arange(n) % 10
  return model, ends, jnp.asarray(x), jnp.asarray(y, jnp.int32)


def bench_hvp(model, params, x, y):
  v = curvature.rademacher(jax.random.PRNGKey(3), params)

  def program(execution):
    loss = lambda p, xx, yy: curvature.make_loss(
        curvature.LossProblem(model, p, {}, xx, yy, FLAGS.hessian_batch), execution)(p)
    hvp = jax.jit(lambda p, w, xx, yy: curvature.hvp(lambda q: loss(q, xx, yy), p, w))
    return lambda: hvp(params, v, x, y)

  report(f"HVP, {x.shape[0]} images in chunks of {FLAGS.hessian_batch}", "HVP", (1, 1),
         {"old": program("vmapped"), "new": program("auto")}, FLAGS.repeats)


def bench_hutchinson(model, params, x, y):
  problem = curvature.LossProblem(model, params, {}, x, y, FLAGS.hessian_batch)
  run = lambda execution: lambda: curvature.hutchinson(
      problem, jax.random.PRNGKey(4), max_probes=FLAGS.probes, chunk_probes=FLAGS.probes,
      execution=execution).trace
  report(f"Hutchinson, {FLAGS.probes} probes, {x.shape[0]} images", "probe", (FLAGS.probes,) * 2,
         {"old": run("vmapped"), "new": run("auto")}, FLAGS.repeats)


def bench_interpolation(model, ends, x, y):
  alphas = interpolate.default_alphas(FLAGS.alphas)
  a, b = ({"params": p, "batch_stats": {}} for p in ends)
  run = lambda execution: lambda: interpolate.evaluate_path(
      model, a, b, alphas, x, y, eval_batch_size=FLAGS.eval_batch, chunk_alphas=8,
      execution=execution)["loss"]
  report(f"interpolation, {FLAGS.alphas} alphas, {x.shape[0]} images", "alpha", (FLAGS.alphas,) * 2,
         {"old": run("vmapped"), "new": run("auto")}, FLAGS.repeats)


def bench_landscape(model, params, x, y):
  plane = landscape.random_plane(jax.random.PRNGKey(5), params, 2)
  axes = landscape.grid_axes(plane, FLAGS.grid)
  run = lambda execution: lambda: landscape.evaluate_grid(
      model, plane, axes, {}, x, y, chunk=32, eval_batch_size=FLAGS.eval_batch,
      execution=execution)["loss"]
  report(f"landscape {FLAGS.grid}x{FLAGS.grid}, {x.shape[0]} images", "point",
         (FLAGS.grid ** 2,) * 2,
         {"old": run("vmapped"), "new": run("auto")}, FLAGS.repeats)


def one_hot_entries(model, params, x, y, indices, chunk: int):
  """The old exact_diagonal: e_i^T H e_i by a full one-hot HVP per coordinate,
  vmapped `chunk` at a time through the lax.map-scanned loss."""
  flat, unravel = ravel_pytree(params)

  def program(p, xx, yy, idx):
    loss = curvature.make_loss(curvature.LossProblem(model, p, {}, xx, yy, FLAGS.hessian_batch),
                               "vmapped")
    basis = lambda i: unravel(jnp.zeros_like(flat).at[i].set(1.0))
    entry = lambda i: ravel_pytree(curvature.hvp(loss, p, basis(i)))[0][i]
    return execution_lib.chunked_vmap(entry, idx, chunk)

  return jax.jit(program)(params, x, y, jnp.asarray(indices))


def leaf_mask(params, leaf: int, count: int):
  """A mask keeping `count` coordinates spread over leaf number `leaf`, and their flat indices."""
  leaves, tree = jax.tree.flatten(params)
  picked = np.linspace(0, leaves[leaf].size - 1, count).astype(int)
  keep = [np.zeros(array.shape, np.float32) for array in leaves]
  keep[leaf].ravel()[picked] = 1.0
  return jax.tree.unflatten(tree, keep), sum(array.size for array in leaves[:leaf]) + picked


def bench_exact(model, params, x, y):
  """Per-parameter cost, on coordinates of the widest kernel (Conv_1 or Conv_2)."""
  leaves = jax.tree.leaves(params)
  widest = int(np.argmax([leaf.size for leaf in leaves]))
  exact = lambda mask: curvature.exact_diagonal(
      curvature.LossProblem(model, params, {}, x, y, FLAGS.hessian_batch, mask=mask))
  mask, flat_idx = leaf_mask(params, widest, FLAGS.exact_params)
  old = lambda: one_hot_entries(model, params, x, y, flat_idx, chunk=FLAGS.exact_params)
  np.testing.assert_allclose(ravel_pytree(exact(mask))[0][flat_idx], np.asarray(old()),
                             rtol=2e-3, atol=1e-6)
  many, _ = leaf_mask(params, widest, FLAGS.exact_new_params)
  report(f"exact diagonal, in a {leaves[widest].size}-weight kernel", "param",
         (FLAGS.exact_params, FLAGS.exact_new_params), {"old": old, "new": lambda: exact(many)},
         FLAGS.repeats)


def main(argv):
  del argv
  if FLAGS.platform:
    jax.config.update("jax_platforms", FLAGS.platform)
  model, ends, x, y = setup()
  chosen = execution_lib.resolve("auto", ends[0])
  size = ravel_pytree(ends[0])[0].size
  print(f"devices {jax.devices()}; ConvNet-3 w32 instance/avg, {size:,} params, images "
        f"{tuple(x.shape[1:])}; old = 'vmapped', new = 'auto' -> '{chosen}'", flush=True)
  if chosen == "vmapped":
    print("  (this backend picks the vmapped programs: both columns time the same path)",
          flush=True)
  hx, hy = x[:FLAGS.hessian_images], y[:FLAGS.hessian_images]
  bench_hvp(model, ends[0], hx, hy)
  bench_hutchinson(model, ends[0], hx, hy)
  bench_exact(model, ends[0], hx, hy)
  ex, ey = x[:FLAGS.images], y[:FLAGS.images]
  bench_interpolation(model, ends, ex, ey)
  bench_landscape(model, ends[0], ex, ey)


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  app.run(main)
