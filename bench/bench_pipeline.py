"""One table for the whole tool: train-step throughput against the machine's
peak, vmapped copies against sequential ones, and the default pipeline's stages.

  python bench/bench_pipeline.py [--workdir runs/default] [--steps 50]

With --workdir, stage times are read from that finished run's summary.json;
without it the default pipeline is run into a temporary directory first.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

import bench_analysis  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import branches  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax.configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import logs  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import pipeline
from lmcjax import runtime  # pylint: disable=g-import-not-at-top,wrong-import-position


def train_step_rows(steps: int, batch: int):
  peak = bench_train_step.peak_matmul_gflops()
  rows = []
  for name, model_kw, shape in bench_train_step.CASES:
    step, make_state, data, _ = bench_train_step.build(model_kw, shape, batch)
    seconds = bench_train_step.time_steps(step, make_state(), data, None, steps)
    gflops = bench_train_step.step_flops(step, make_state(), data, None) * steps / seconds / 1e9
    rows.append((name, steps * batch / seconds, gflops, 100 * gflops / peak))
  return peak, rows


def copies_rows(epochs: float, repeats: int):
  config = default.get_config()
  config.train.epochs = epochs
  config.log_every_steps = 0
  s = runtime.setup(config)
  rows = []
  for num in (2, 4):
    vmapped = lambda n=num: branches.train_branches(
        s, config.train, s.init_params, {}, None, prefix=("bench",), num_copies=n, chunk=n).params
    sequential = lambda n=num: [runtime.train_run(s, config.train, s.init_params, {}, None,
                                                     seed_path=p, stage="bench").state.params
                                for p in branches.seed_paths(("bench",), n)]
    fast = bench_analysis.best_time(vmapped, repeats)
    slow = bench_analysis.best_time(sequential, repeats)
    rows.append((num, fast, slow, slow / fast))
  return rows


def stage_rows(workdir: str):
  if not workdir:
    workdir = tempfile.mkdtemp(prefix="lmcjax_bench_")
    config = default.get_config()
    config.log_every_steps = 0
    pipeline.run(config, workdir)
  summary = logs.read_json(os.path.join(workdir, "summary.json"))
  return workdir, [(k, v["seconds"]) for k, v in summary.items()
                   if isinstance(v, dict) and "seconds" in v]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default="", help="finished default run to read stage times from")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--copy_epochs", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  print(f"backend={jax.default_backend()} devices={jax.device_count()}")
  peak, rows = train_step_rows(args.steps, args.batch)
  print(f"\n| train step (batch {args.batch}) | examples/s | GFLOP/s | % of peak matmul "
        f"({peak:.0f} GFLOP/s) |\n|---|---:|---:|---:|")
  for name, ex, gf, pct in rows:
    print(f"| {name} | {ex:,.0f} | {gf:.1f} | {pct:.0f}% |")
  print(f"\n| LeNet-300-100 copies ({args.copy_epochs:g} epochs each) | vmapped s | sequential s | "
        f"speedup |\n|---|---:|---:|---:|")
  for num, fast, slow, ratio in copies_rows(args.copy_epochs, args.repeats):
    print(f"| N={num} | {fast:.2f} | {slow:.2f} | x{ratio:.2f} |")
  workdir, stages = stage_rows(args.workdir)
  print(f"\n| default pipeline stage ({workdir}) | seconds |\n|---|---:|")
  for name, seconds in stages:
    print(f"| {name} | {seconds:.1f} |")
  print(f"| total | {np.sum([s for _, s in stages]):.1f} |")


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  main()
