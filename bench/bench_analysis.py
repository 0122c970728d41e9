"""Speed of the analysis' vmapped programs against their Python-loop equivalents.

  python bench/bench_analysis.py [--epochs=3] [--repeats=2]

LeNet-300-100 on MNIST-5k (4k train / 1k test), as the default experiment.
Each line prints both wall times (compile excluded: every program is run
once before timing) and their ratio, all measured in this one run:
  interpolation: 31 alphas in one vmapped call vs a loop of per-alpha jitted evals;
  hutchinson:    32 probes in vmapped chunks of 8 vs one probe per call;
  landscape:     a 21x21 grid chunked-vmapped vs a jitted eval per point;
  branches:      N = 2, 4 copies as one vmapped scan vs N sequential train_run calls.

Then ConvNet-3 w32 (instance norm) on 32x32x3 images (random CIFAR-shaped
pixels, 5,000 train: the cost is that of CIFAR-10 5k), where the execution is
chosen per backend: SGD-noise branches per copy-epoch, with the 'auto' choice
(on CPU: the jitted step driven from Python) and vmapped, against the train
stage per epoch; then the two forms of vmapped copies over the same
--conv_scan_steps steps, a jit(vmap(step)) call per step (CPU's choice) and
one jit(vmap(scan)) call (the accelerators'), and their ratio. The last line is
  conv branches per copy-epoch / train stage per epoch: R
"""
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import branches  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import engine  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import curvature  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import execution as execution_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import interpolate  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import landscape  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("epochs", 3, "Training epochs of each branch copy.")
flags.DEFINE_integer("repeats", 2, "Timed repeats; the best is reported.")
flags.DEFINE_integer("conv_epochs", 1, "Epochs of each ConvNet run (train stage and copies).")
flags.DEFINE_bool("conv_vmapped", True, "Also time vmapped ConvNet copies, per step and scanned.")
flags.DEFINE_integer("conv_scan_steps", 4, "Steps of the ConvNet's vmapped per-step vs scan timing "
                     "(the scan is slow on CPU).")
FLAGS = flags.FLAGS


def best_time(fn, repeats: int) -> float:
  """Best wall time of fn() over repeats, after one untimed warm-up (compile)."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    tick = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - tick)
  return min(times)


def report(name: str, fast: float, slow: float, fast_name: str, slow_name: str) -> None:
  print(f"{name:<28s} {fast_name} {fast:8.3f}s  {slow_name} {slow:8.3f}s  "
        f"speedup x{slow / fast:6.2f}", flush=True)


def bench_interpolation(s, a, b, repeats):
  alphas = interpolate.default_alphas(31)
  x, y = s.x_test, s.y_test
  vmapped = lambda: interpolate.evaluate_path(s.model, a, b, alphas, x, y, chunk_alphas=8)["loss"]
  evaluate = train.make_eval_fn(s.model, s.config.eval_batch_size)
  one = jax.jit(lambda alpha: evaluate(interpolate.interpolate(a["params"], b["params"], alpha),
                                       {}, x, y)["loss"])
  loop = lambda: [float(one(jnp.float32(al))) for al in alphas]
  report("interpolation 31 alphas", best_time(vmapped, repeats), best_time(loop, repeats),
         "vmapped", "loop")


def bench_hutchinson(s, a, repeats):
  x, y = curvature.loss_batches(jax.random.PRNGKey(0), s.x_train, s.y_train, 500, 2)
  key = jax.random.PRNGKey(1)
  problem = curvature.LossProblem(s.model, a["params"], {}, x, y, batch_size_examples=500)
  run = lambda chunk: lambda: curvature.hutchinson(problem, key, max_probes=32,
                                                   chunk_probes=chunk).trace
  report("hutchinson 32 probes", best_time(run(8), repeats), best_time(run(1), repeats),
         "chunks of 8", "sequential")


def bench_landscape(s, a, repeats):
  plane = landscape.random_plane(jax.random.PRNGKey(2), a["params"], 2)
  axes = landscape.grid_axes(plane, 21)
  x, y = s.x_test, s.y_test
  grid = lambda: landscape.evaluate_grid(s.model, plane, axes, {}, x, y, chunk=32)["loss"]
  evaluate = train.make_eval_fn(s.model, s.config.eval_batch_size)
  one = jax.jit(lambda c: evaluate(landscape.point_params(plane, c), {}, x, y)["loss"])
  points = [jnp.asarray([cx, cy]) for cy in axes[1] for cx in axes[0]]
  loop = lambda: [float(one(c)) for c in points]
  report("landscape 21x21", best_time(grid, repeats), best_time(loop, repeats),
         "chunked vmap", "per point")


def bench_branches(s, start, num, repeats):
  spec = s.config.train
  vmapped = lambda: branches.train_branches(s, spec, start["params"], {}, None, prefix=("bench",),
                                            num_copies=num, chunk=num).params
  sequential = lambda: [runtime.train_run(s, spec, start["params"], {}, None,
                                             seed_path=p, stage="bench").state.params
                        for p in branches.seed_paths(("bench",), num)]
  report(f"branches N={num}", best_time(vmapped, repeats), best_time(sequential, repeats),
         "vmapped", "sequential")


def conv_setup(epochs: int, workdir: str):
  """ConvNet-3 w32 on 5,000 + 1,000 random 32x32x3 images, the study's train spec."""
  from lmcjax.configs import cifar10_small  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  path = os.path.join(workdir, "cifar_shaped.npz")
  np.savez(path, x_train=rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8),
           y_train=(np.arange(5000) % 10).astype(np.int32),
           x_test=rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8),
           y_test=(np.arange(1000) % 10).astype(np.int32))
  config = cifar10_small.get_config()
  config.data.update(name="npz", npz_path=path, train_subset=0, test_subset=0)
  config.train.epochs = epochs
  config.log_every_steps = 0
  return runtime.setup(config)


def timed_once(fn) -> float:
  """Wall time of fn() after one untimed call of the same program (compile)."""
  return best_time(fn, 1)


def bench_conv_branches(epochs: int, vmapped: bool) -> None:
  with tempfile.TemporaryDirectory() as workdir:
    s = conv_setup(epochs, workdir)
  spec, copies = s.config.train, 2
  run = lambda: runtime.train_run(s, spec, s.init_params, {}, None, seed_path=("bench",),
                                     stage="bench", evaluate_test=False).state.params
  per_epoch = timed_once(run) / epochs
  branch = lambda execution: lambda: branches.train_branches(
      s, spec, s.init_params, {}, None, prefix=("bench",), num_copies=copies, chunk=copies,
      execution=execution).params
  auto = timed_once(branch("auto")) / (copies * epochs)
  print(f"ConvNet-3 w32 32x32x3, 5000 images: train stage {per_epoch:7.2f}s/epoch; branches "
        f"({execution_lib.resolve('auto', s.init_params)}) {auto:7.2f}s per copy-epoch",
        flush=True)
  if vmapped:
    batched = timed_once(branch("vmapped")) / (copies * epochs)
    print(f"ConvNet-3 w32 branches, vmapped: {batched:7.2f}s per copy-epoch "
          f"(x{batched / auto:.2f} the auto choice)", flush=True)
    bench_vmapped_drivers(s, copies)
  print(f"conv branches per copy-epoch / train stage per epoch: {auto / per_epoch:.2f}", flush=True)


def bench_vmapped_drivers(s, num_copies: int) -> None:
  """The two forms of engine's vmapped copies on the ConvNet, the same steps:
  a jit(vmap(step)) call per step against one jit(vmap(scan)) call."""
  spec, steps = s.config.train, FLAGS.conv_scan_steps
  program = engine.train_program(s.model, spec, s.dataset.num_classes, steps)
  make = lambda: [engine.seeded_copy(program, s.init_params, {}, s.config.seeds, ("bench", i),
                                     s.x_train, s.y_train, spec.batch_size, 0, f"bench {i}")
                  for i in range(num_copies)]
  timed = lambda scan: timed_once(lambda: engine.run_copies(
      program, make(), None, steps, execution="vmapped",
      scan=scan)[0].params) / (num_copies * steps)
  per_step, scanned = timed(False), timed(True)
  print(f"ConvNet-3 w32 vmapped copies, {steps} steps: a call per step {per_step:6.3f}s, "
        f"one scan {scanned:6.3f}s per copy-step; scan / per step: {scanned / per_step:.2f}",
        flush=True)


def main(argv):
  del argv
  config = default.get_config()
  config.train.epochs = FLAGS.epochs
  config.log_every_steps = 0
  s = runtime.setup(config)
  print(f"devices: {jax.devices()}; LeNet-300-100, MNIST-5k; branches {FLAGS.epochs:g} epochs "
        f"({train.total_steps(config.train, int(s.x_train.shape[0]))} steps)", flush=True)
  start = {"params": s.init_params, "batch_stats": {}}
  ends = [jax.tree.map(lambda p, k=k: p + 0.05 * jax.random.normal(jax.random.PRNGKey(k), p.shape),
                       start) for k in (10, 11)]
  bench_interpolation(s, ends[0], ends[1], FLAGS.repeats)
  bench_hutchinson(s, ends[0], FLAGS.repeats)
  bench_landscape(s, ends[0], FLAGS.repeats)
  for num in (2, 4):
    bench_branches(s, start, num, FLAGS.repeats)
  bench_conv_branches(FLAGS.conv_epochs, FLAGS.conv_vmapped)


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  app.run(main)
