"""Speed and memory of permutation alignment against plain NumPy/SciPy.

  python bench/bench_alignment.py [--images=1000] [--chunk_examples=250]
                                  [--memory_examples=500,5000] [--repeats=1] [--quick]

Two random-init nets per model (the cost does not depend on training):
ConvNet-3 w128 (instance norm) on 32x32x3 and ResNet-20 x4 (BatchNorm).
  weight matching:     lmcjax (one jitted contraction per permutation) against
                       the same coordinate descent with host-side NumPy
                       contractions per permutation, as git-re-basin runs it;
                       same key, so the same visiting order (the row says
                       whether both found the same permutation);
  activation matching: lmcjax (moments accumulated in one jitted scan over
                       chunks) against jitted forward passes per chunk whose
                       activations are accumulated on the host in NumPy;
  memory:              XLA's compiled memory analysis of the accumulation
                       for two example counts: its temporaries stay flat,
                       only the images (the argument) grow.
Times exclude compilation (every program runs once untimed first). --quick
runs small nets (ConvNet-3 w16 on 16x16x3, ResNet-20 x1) on few images, to
check that the script runs.
"""
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_analysis  # pylint: disable=g-import-not-at-top,wrong-import-position  # best_time
from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import masks  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.connectivity import activation_matching as am  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.connectivity import permute as permute_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.connectivity import structure as structure_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.connectivity import weight_matching as wm  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("images", 1000, "Images activation matching correlates over.")
flags.DEFINE_integer("chunk_examples", 250, "Examples per accumulation step.")
flags.DEFINE_list("memory_examples", ["500", "5000"], "Example counts of the memory rows.")
flags.DEFINE_bool("quick", False, "Small nets and few images: check that the script runs.")
FLAGS = flags.FLAGS


def random_variables(model, shape, seed: int):
  """He-scaled kernels, unit norm scales, zero shifts and means, unit variances,
  drawn on the host (compiling flax's initializers is slower than the bench)."""
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + shape))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = masks.path_name(path)
    if leaf.ndim > 1:
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    else:
      value = np.full(leaf.shape, float(name.endswith(("scale", "var"))))
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, dict(abstract))


def numpy_weight_matching(structure, params_a, params_b, key, max_iterations=100):
  """The same coordinate descent with host-side NumPy contractions."""
  get = lambda tree, path: np.asarray(permute_lib.get_leaf(tree, path[1:]), np.float64)
  leaves = [(path, axes, get(params_a, path), get(params_b, path))
            for path, axes in structure.axes.items() if path[0] == "params"]
  perm, names = permute_lib.identity(structure), list(structure.sizes)
  for iteration in range(max_iterations):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, iteration), len(names)))
    improved = False
    for name in (names[i] for i in order):
      size = structure.sizes[name]
      cost = np.zeros((size, size))
      for _, axes, a, b in leaves:
        for own in (axis for axis in axes if axis.perm == name):
          for other in axes:
            if other is not own:
              b = np.take(b, _index(other, perm[other.perm], structure.sizes[other.perm]),
                          axis=other.axis)
          cost += _units_first(a, own, size) @ _units_first(b, own, size).T
      units, better = wm.assign(cost, perm[name])
      if better:
        perm[name], improved = units, True
    if not improved:
      break
  return perm


def _index(axis, units, size):
  return (np.arange(axis.tiles)[:, None] * size + np.asarray(units)[None, :]).reshape(-1)


def _units_first(leaf, axis, size):
  leaf = np.moveaxis(leaf, axis.axis, 0)
  if axis.tiles > 1:
    leaf = np.swapaxes(leaf.reshape((axis.tiles, size) + leaf.shape[1:]), 0, 1)
  return leaf.reshape(size, -1)


def numpy_activation_matching(model, structure, variables_a, variables_b, images, chunk):
  """Jitted forward passes per chunk; moments accumulated on the host."""
  forward = jax.jit(lambda v, x: am._activations(model, structure, v, x))  # pylint: disable=protected-access
  sums = {name: {"a": 0.0, "b": 0.0, "aa": 0.0, "bb": 0.0, "ab": 0.0} for name in structure.sizes}
  counts = dict.fromkeys(structure.sizes, 0)
  for start in range(0, images.shape[0], chunk):
    x = images[start:start + chunk]
    acts_a, acts_b = forward(variables_a, x), forward(variables_b, x)
    for name, paths in structure.activations.items():
      for path in paths:
        a = np.asarray(acts_a[path], np.float64).reshape(-1, structure.sizes[name])
        b = np.asarray(acts_b[path], np.float64).reshape(a.shape)
        s = sums[name]
        for moment, value in (("a", a.sum(0)), ("b", b.sum(0)), ("aa", (a * a).sum(0)),
                              ("bb", (b * b).sum(0)), ("ab", a.T @ b)):
          s[moment] = s[moment] + value
        counts[name] += len(a)
  return {name: optimize.linear_sum_assignment(am.correlation(sums[name], counts[name]),
                                               maximize=True)[1] for name in structure.sizes}


def bench_model(label, model, shape, images):
  a, b = (random_variables(model, shape, seed) for seed in (0, 1))
  structure = structure_lib.structure_of(model, a)
  key = jax.random.PRNGKey(0)
  found = {}
  fast = bench_analysis.best_time(
      lambda: found.setdefault("jax", wm.weight_matching(structure, a, b, key=key)[0]),
      FLAGS.repeats)
  slow = bench_analysis.best_time(
      lambda: found.setdefault("numpy", numpy_weight_matching(structure, a["params"],
                                                              b["params"], key)), FLAGS.repeats)
  same = all(np.array_equal(found["jax"][n], found["numpy"][n]) for n in structure.sizes)
  bench_analysis.report(f"{label} weight matching", fast, slow, "lmcjax", "numpy")
  print(f"  {len(structure.sizes)} permutations; same permutation as numpy: {same}", flush=True)
  chunk = FLAGS.chunk_examples
  fast = bench_analysis.best_time(
      lambda: am.activation_matching(model, structure, a, b, images, chunk_examples=chunk),
      FLAGS.repeats)
  slow = bench_analysis.best_time(
      lambda: numpy_activation_matching(model, structure, a, b, images, chunk), FLAGS.repeats)
  bench_analysis.report(f"{label} activation matching", fast, slow, "lmcjax", "numpy")
  print(f"  {images.shape[0]} images in chunks of {chunk}", flush=True)
  bench_memory(model, structure, a, b, shape, chunk)


def bench_memory(model, structure, a, b, shape, chunk):
  """Compiled memory of the accumulation for each example count."""
  for examples in map(int, FLAGS.memory_examples):
    images = jax.ShapeDtypeStruct((examples,) + shape, jnp.float32)
    compiled = am._sums.lower(model, structure, a, b, images,  # pylint: disable=protected-access
                              chunk_examples=min(chunk, examples)).compile()
    memory = compiled.memory_analysis()
    if memory is None:
      print(f"  {examples} examples: this backend reports no memory analysis", flush=True)
      continue
    print(f"  {examples:>6d} examples: temporaries {memory.temp_size_in_bytes / 2**20:8.1f} MiB"
          f"   arguments {memory.argument_size_in_bytes / 2**20:8.1f} MiB", flush=True)


def main(argv):
  del argv
  side, conv_width, multiplier = (16, 16, 1) if FLAGS.quick else (32, 128, 4)
  shape = (side, side, 3)
  n = 64 if FLAGS.quick else FLAGS.images
  images = jax.random.normal(jax.random.PRNGKey(1), (n,) + shape)
  print(f"devices: {jax.devices()}; {n} random {shape} images", flush=True)
  conv = models.create(model_part.get("convnet", depth=3, width=conv_width, norm="instance"), 10)
  bench_model(f"ConvNet-3 w{conv_width}", conv, shape, images)
  resnet = models.create(model_part.get("resnet20", width_multiplier=multiplier), 10)
  bench_model(f"ResNet-20 x{multiplier}", resnet, shape, images)


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  app.run(main)
