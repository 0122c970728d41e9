"""One process of tests/test_parallel.py: trains a tiny masked MLP and saves the result.

Run as a subprocess, because the device count (XLA_FLAGS) and jax.distributed
must be set before JAX starts:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
    python tests/parallel_worker.py --out DIR --runs plain,data_parallel
  python tests/parallel_worker.py --out DIR --runs data_parallel \
    --coordinator localhost:PORT --num_processes 2 --process_id I

Each run writes DIR/<run>_p<process>.npz: the final parameters (flattened
leaves), the per-step losses, the test metrics, the device count and the number of
devices that hold the trained parameters.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from lmcjax.configs import default  # pylint: disable=g-import-not-at-top
from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top
from lmcjax.configs.parts import parallel as parallel_config  # pylint: disable=g-import-not-at-top
from lmcjax.configs.parts import train as train_part  # pylint: disable=g-import-not-at-top
from lmcjax import engine  # pylint: disable=g-import-not-at-top
from lmcjax import masks  # pylint: disable=g-import-not-at-top
from lmcjax import models  # pylint: disable=g-import-not-at-top
from lmcjax import parallel  # pylint: disable=g-import-not-at-top
from lmcjax import train  # pylint: disable=g-import-not-at-top
from lmcjax import validate  # pylint: disable=g-import-not-at-top

NUM_EXAMPLES, BATCH, STEPS = 96, 16, 8


def make_config(args, data_parallel: bool) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = model_part.get("mlp", hidden=(16,))
  config.parallel = parallel_config.get_section()
  config.parallel.data_parallel = data_parallel
  if args.coordinator:
    config.parallel.distributed = True
    config.parallel.coordinator_address = args.coordinator
    config.parallel.num_processes = args.num_processes
    config.parallel.process_id = args.process_id
  return config


def tiny_data():
  """The same synthetic set in every process: a pure function of a fixed key."""
  kx, ky = jax.random.split(jax.random.PRNGKey(42))
  images = jax.random.normal(kx, (NUM_EXAMPLES, 8, 8, 1))
  return images, jax.random.randint(ky, (NUM_EXAMPLES,), 0, 10)


def half_mask(params):
  """Keeps every other weight of each kernel, so the masked path is exercised."""
  prunable = masks.prunable_tree(params)
  return jax.tree.map(
      lambda p, keep: (jnp.arange(p.size).reshape(p.shape) % 2 == 0).astype(p.dtype)
      if keep else jnp.ones_like(p), params, prunable)


def run(config, batch_size: int = BATCH):
  """Trains STEPS steps with momentum and weight decay; returns (state, losses, test)."""
  images, labels = tiny_data()
  model = models.create(config.model, 10)
  spec = train_part.train_spec(epochs=1, batch_size=batch_size,  # STEPS steps run, whatever epochs
                            lr=0.1, momentum=0.9, weight_decay=5e-3, schedule="constant")
  params, stats = train.init_variables(model, jax.random.PRNGKey(0), images.shape[1:])
  program = engine.train_program(model, spec, 10, STEPS)
  copy = engine.Copy(train.create_state(params, stats, program.tx, jax.random.PRNGKey(1)),
                     train.BatchOrder(jax.random.PRNGKey(2), NUM_EXAMPLES, batch_size),
                     images, labels, "train")
  losses = []
  state, _ = engine.run(program, copy, half_mask(params), STEPS, log_every=1,
                        on_log=lambda _, m: losses.append(m["loss"]),
                        placer=parallel.batch_placer(config))
  # Evaluation reads the replicated params with the process-local test split.
  test = jax.jit(train.make_eval_fn(model, 32))(state.params, state.batch_stats, images, labels)
  return state, losses, {k: float(v) for k, v in test.items()}


def save(path: str, state, losses, test) -> None:
  leaves = jax.tree.leaves(state.params)
  # Devices holding the trained params: 2 proves the run used the mesh.
  param_devices = len(leaves[0].sharding.device_set)
  np.savez(path, losses=np.asarray(losses), test_loss=test["loss"],
           test_accuracy=test["accuracy"], device_count=jax.device_count(),
           step=int(state.step), param_devices=param_devices,
           **{f"leaf{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--runs", default="plain,data_parallel")
  parser.add_argument("--coordinator", default="")
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  args = parser.parse_args()
  parallel.maybe_initialize_distributed(make_config(args, True))
  for name in args.runs.split(","):
    config = make_config(args, name != "plain")
    if name == "indivisible":  # a batch the mesh cannot split: one-line error, no step run
      try:
        run(config, batch_size=BATCH - 1)
      except validate.InputError as e:
        print(f"InputError: {e}")
      continue
    out = os.path.join(args.out, f"{name}_p{jax.process_index()}.npz")
    save(out, *run(config))
  print(f"done process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.device_count()} devices")


if __name__ == "__main__":
  main()
