"""Examples/s of the dense and the masked train step, and their ratio, in one run.

  python bench/bench_train_step.py [--steps 200] [--batch 64]

The masked step multiplies gradients and params by the mask; XLA fuses that
into the optimizer update, so the target is masked/dense time <= 1.10.
Dense and masked runs are interleaved in rounds so that machine noise hits both.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from lmcjax.configs.parts import model as model_part
from lmcjax.configs.parts import train as train_part
from lmcjax import cpu_runtime
from lmcjax import masks
from lmcjax import models
from lmcjax import train

CASES = (
    ("lenet300 (MNIST 28x28x1)", dict(name="lenet300"), (28, 28, 1)),
    ("convnet-3 w32 (32x32x3)", dict(name="convnet", width=32), (32, 32, 3)),
    ("convnet-3 w128 (32x32x3)", dict(name="convnet", width=128), (32, 32, 3)),
)


def build(model_kw, shape, batch):
  model = models.create(model_part.get(**model_kw), 10)
  spec = train_part.train_spec()
  params, stats = train.init_variables(model, jax.random.PRNGKey(0), shape)
  tx = train.make_optimizer(spec, 10_000)
  step = jax.jit(train.make_train_step(model, tx, spec.augment, 10), donate_argnums=0)
  keys = jax.random.split(jax.random.PRNGKey(1), len(jax.tree.leaves(params)))
  prunable = jax.tree.leaves(masks.prunable_tree(params))
  # 80% sparsity: a typical IMP mask, and it makes no difference to dense compute.
  leaves = [(jax.random.uniform(k, p.shape) > 0.8).astype(p.dtype) if f else jnp.ones_like(p)
            for k, p, f in zip(keys, jax.tree.leaves(params), prunable)]
  mask = jax.tree.unflatten(jax.tree.structure(params), leaves)
  batch_data = {"image": jax.random.normal(jax.random.PRNGKey(2), (batch,) + shape),
                "label": jnp.arange(batch) % 10}
  make_state = lambda: train.create_state(jax.tree.map(jnp.copy, params), stats, tx,
                                          jax.random.PRNGKey(3))
  return step, make_state, batch_data, mask


def step_flops(step, state, batch, mask) -> float:
  """FLOPs of one compiled train step, as XLA's cost analysis counts them."""
  return lowered_flops(step.lower(state, batch, mask))


def lowered_flops(lowered) -> float:
  """FLOPs of a lowered jitted call, as XLA's cost analysis counts them."""
  analysis = lowered.compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", 0.0))


def peak_matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul throughput of this machine: the roofline we compare to."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
  matmul = jax.jit(lambda x: x @ x)
  jax.block_until_ready(matmul(a))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a))
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best / 1e9


def time_steps(step, state, batch, mask, steps):
  state, m = step(state, batch, mask)  # compile outside the timing
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch, mask)
  jax.block_until_ready((state.params, m))
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  peak = peak_matmul_gflops()
  print(f"backend={jax.default_backend()} devices={jax.device_count()} batch={args.batch} "
        f"steps/round={args.steps} rounds={args.rounds} peak_matmul={peak:.1f} GFLOP/s")
  print(f"{'model':28s} {'dense ex/s':>12s} {'masked ex/s':>12s} {'masked/dense time':>18s} "
        f"{'dense GFLOP/s':>14s} {'% of peak':>10s}")
  for name, model_kw, shape in CASES:
    step, make_state, batch, mask = build(model_kw, shape, args.batch)
    dense, masked = [], []
    for _ in range(args.rounds):
      dense.append(time_steps(step, make_state(), batch, None, args.steps))
      masked.append(time_steps(step, make_state(), batch, mask, args.steps))
    d, m = np.median(dense), np.median(masked)
    n = args.steps * args.batch
    gflops = step_flops(step, make_state(), batch, None) * args.steps / d / 1e9
    print(f"{name:28s} {n / d:12.0f} {n / m:12.0f} {m / d:18.3f} {gflops:14.1f} "
          f"{100 * gflops / peak:9.0f}%")


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  main()
