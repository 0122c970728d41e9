"""Distillation speed and MTT memory on MNIST-5k (CPU-sized by default).

  python bench/bench_distill.py [--width 32] [--iters 3] [--experts 4]

Prints: seconds per outer iteration of each method (after compilation); MTT's
compiled temporary memory (XLA memory_analysis, the step's peak scratch) at
syn_steps 10/20/40 with and without remat, with rolled scans as on an
accelerator; and the time of an expert epoch trained vmapped over experts vs
one expert after another.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from lmcjax.configs import distill_mnist5k  # pylint: disable=g-import-not-at-top
from lmcjax.distill import experts
from lmcjax.distill import stage
from lmcjax.distill import trajectory_matching
from lmcjax import cpu_runtime
from lmcjax import models
from lmcjax import runtime


# MTT experts are trained once (unrolled, fast on CPU) and reloaded by later builds.
EXPERTS = tempfile.mkdtemp(prefix="bench_distill_experts_")


def seconds_per_iteration(config, s, method: str, iters: int) -> float:
  d = config.distill
  d.method = method
  model = models.create(stage.model_config(config), s.dataset.num_classes)
  d.mtt.expert_dir = EXPERTS
  m, tx, learn, _ = stage.build(d, model, s.x_train, s.y_train, s.dataset.num_classes)
  _, stats = stage.run_outer(m, tx, learn, iters + 1, jax.random.PRNGKey(0))
  return stats["seconds_per_iteration"]


def mtt_temp_bytes(config, s, syn_steps: int, remat: bool) -> int:
  d = config.distill
  d.method, d.unroll = "mtt", False
  d.mtt.syn_steps, d.mtt.remat = syn_steps, remat
  model = models.create(stage.model_config(config), s.dataset.num_classes)
  d.mtt.expert_dir = EXPERTS
  m, tx, learn, _ = stage.build(d, model, s.x_train, s.y_train, s.dataset.num_classes)
  ctx = m.next_context(0, None, jax.random.PRNGKey(0))
  compiled = jax.jit(m.step).lower(learn, tx.init(learn), jax.random.PRNGKey(1), ctx).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def expert_epoch_seconds(config, s, vmapped: bool, num_experts: int) -> float:
  d = config.distill
  model = models.create(stage.model_config(config), s.dataset.num_classes)
  cfg = trajectory_matching.expert_settings(d.mtt, 3, d.unroll, num_experts)
  _, seconds = experts.train_experts(model, s.x_train, s.y_train, s.dataset.num_classes, cfg,
                                     jax.random.PRNGKey(0),
                                     execution="vmapped" if vmapped else "sequential")
  return float(np.mean(seconds[1:]))  # epoch 0 includes compilation


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--experts", type=int, default=4)
  parser.add_argument("--methods", default="dm,dc,idc,mtt")
  args = parser.parse_args()
  config = distill_mnist5k.get_config()
  config.distill.model.width = args.width
  config.distill.mtt.max_start_epoch = 1  # bench experts: 3 epochs are enough
  s = runtime.setup(config)
  print(f"# MNIST-5k, ConvNet-3 width {args.width}, ipc {config.distill.ipc}, "
        f"backend {jax.default_backend()}, {jax.device_count()} device(s)")
  for method in args.methods.split(","):
    sec = seconds_per_iteration(config, s, method, args.iters)
    print(f"{method:4s} seconds/outer iteration: {sec:.3f}", flush=True)
  if "mtt" not in args.methods:
    seconds_per_iteration(config, s, "mtt", 0)  # trains the experts once
  print("MTT step temp memory (MiB), rolled scan:")
  for steps in (10, 20, 40):
    plain, remat = (mtt_temp_bytes(config, s, steps, r) / 2**20 for r in (False, True))
    print(f"  syn_steps {steps:3d}: no remat {plain:8.1f}   remat {remat:8.1f}", flush=True)
  config.distill.unroll = True
  vm = expert_epoch_seconds(config, s, True, args.experts)
  seq = expert_epoch_seconds(config, s, False, args.experts)
  print(f"experts x{args.experts}, one epoch: vmapped {vm:.2f}s  sequential {seq:.2f}s  "
        f"sequential/vmapped {seq / vm:.2f}")


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  main()
