"""Speed of the curvature methods against the ones they replace, in one run.

  python bench/bench_hessian.py [--examples=1000] [--rows=200] [--repeats=2]

On MNIST-5k training images, at the init (the cost does not depend on where):
  GGN diagonal:  LeNet-300-100 (266,610 params; the exact Hessian diagonal)
                 and ConvNet-3 w32 (instance norm: the GGN, not the Hessian),
                 against the seed paper's one HVP row per parameter (timed on
                 --rows parameters and extrapolated);
  Hutchinson:    64 probes in vmapped chunks of 8 against one probe per call;
  Lanczos top-1: HVPs to a Ritz residual <= 1e-3 |lambda| against power
                 iteration stopped by the same residual rule.
Times exclude compilation (every program runs once untimed first).
"""
import os
import sys

from absl import app
from absl import flags
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_analysis  # pylint: disable=g-import-not-at-top,wrong-import-position  # --repeats, best_time
from lmcjax.configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import curvature  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import execution as execution_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.curvature import spectrum  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("examples", 1000, "Training images the loss averages over.")
flags.DEFINE_integer("conv_examples", 100, "Images for ConvNet-3 w32: per-example conv "
                     "pullbacks are slow on XLA:CPU (1,000 took > 15 minutes on 2 cores).")
flags.DEFINE_integer("rows", 200, "Parameters timed for the one-HVP-per-parameter baseline.")
FLAGS = flags.FLAGS


def hvp_rows_seconds(problem, rows: int, chunk_rows: int, repeats: int) -> float:
  """Seconds for `rows` diagonal entries e_i^T H e_i, each a full-vector HVP,
  vmapped `chunk_rows` at a time: the plain method, the baseline of the GGN
  rows. (curvature.exact_diagonal itself linearises each leaf's gradient
  once and picks its execution per backend; bench/bench_eval.py times it.)"""
  params = problem.params
  flat, unravel = ravel_pytree(params)
  loss = curvature.make_loss(problem)
  entry = lambda i: ravel_pytree(curvature.hvp(loss, params, unravel(
      jnp.zeros_like(flat).at[i].set(1.0))))[0][i]
  program = jax.jit(lambda idx: execution_lib.chunked_vmap(entry, idx, chunk_rows))
  return bench_analysis.best_time(lambda: program(jnp.arange(rows)), repeats)


def bench_ggn(name, problem, rows, chunk_rows, repeats):
  size = ravel_pytree(problem.params)[0].size
  ggn = bench_analysis.best_time(lambda: curvature.ggn_diagonal(problem, chunk_examples=50),
                                 repeats)
  per_row = hvp_rows_seconds(problem, rows, chunk_rows, repeats) / rows
  exact, reason = curvature.ggn_is_hessian_diagonal(problem.model)
  what = "exact Hessian diagonal" if exact else "GGN diagonal, NOT the Hessian's"
  print(f"{name}: {size:,} params, {problem.num_examples} examples; {what} ({reason})",
        flush=True)
  print(f"  GGN diagonal {ggn:8.2f}s   one HVP per parameter {per_row * 1e3:.2f} ms x {size:,} "
        f"= {per_row * size:9.0f}s (from {rows} rows)   speedup x{per_row * size / ggn:,.0f}",
        flush=True)


def bench_hutchinson(problem, repeats):
  key = jax.random.PRNGKey(1)
  run = lambda chunk: lambda: curvature.hutchinson(problem, key, max_probes=64,
                                                   chunk_probes=chunk).trace
  fast, slow = bench_analysis.best_time(run(8), repeats), bench_analysis.best_time(run(1), repeats)
  print(f"Hutchinson 64 probes: chunks of 8 {fast:.2f}s ({fast / 64 * 1e3:.1f} ms/probe)   "
        f"sequential {slow:.2f}s ({slow / 64 * 1e3:.1f} ms/probe)   speedup x{slow / fast:.2f}",
        flush=True)


def power_iteration_hvps(problem, key, tol: float, max_iters: int):
  """HVPs until ||Hv - (v.Hv) v|| <= tol |v.Hv| (the residual rule Lanczos uses)."""
  matvec, keep, _ = spectrum.flat_operator(problem)
  v = spectrum.unit_start(key, keep)
  for count in range(1, max_iters + 1):
    hv = matvec(v)
    value = float(jnp.vdot(v, hv))
    if float(jnp.linalg.norm(hv - value * v)) <= tol * abs(value):
      return count, value
    v = hv / jnp.linalg.norm(hv)
  return max_iters, value


def bench_lanczos(problem, tol=1e-3):
  key = jax.random.PRNGKey(2)
  top = curvature.lanczos(problem, key, k=1, max_iters=300, tol=tol)
  power, value = power_iteration_hvps(problem, key, tol, 2000)
  print(f"top eigenvalue to residual <= {tol:g}|lambda|: Lanczos {top.num_hvps} HVPs "
        f"({top.iterations} steps + 1 check; lambda {top.eigenvalues[0]:.5g}, converged "
        f"{top.converged})   power iteration {power} HVPs (lambda {value:.5g})   "
        f"ratio x{power / top.num_hvps:.1f}", flush=True)


def main(argv):
  del argv
  config = default.get_config()
  s = runtime.setup(config)
  x, y = s.x_train[:FLAGS.examples], s.y_train[:FLAGS.examples]
  print(f"devices: {jax.devices()}; MNIST-5k, {x.shape[0]} training images", flush=True)
  lenet = curvature.LossProblem(s.model, s.init_params, {}, x, y, batch_size_examples=1000)
  bench_ggn("LeNet-300-100", lenet, FLAGS.rows, 64, FLAGS.repeats)
  conv_cfg = model_part.get("convnet", depth=3, width=32, norm="instance")
  conv = models.create(conv_cfg, s.dataset.num_classes)
  conv_params, _ = train.init_variables(conv, jax.random.PRNGKey(0), s.dataset.image_shape)
  # 1000 images of 28x28x32 activations per HVP: 2 rows per vmapped call, and
  # a tenth of the rows (the per-row time is what is extrapolated).
  n = FLAGS.conv_examples
  conv_problem = curvature.LossProblem(conv, conv_params, {}, x[:n], y[:n],
                                       batch_size_examples=1000)
  bench_ggn("ConvNet-3 w32 (instance norm)", conv_problem, max(2, FLAGS.rows // 10), 2,
            FLAGS.repeats)
  bench_hutchinson(lenet, FLAGS.repeats)
  bench_lanczos(lenet)


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  app.run(main)
