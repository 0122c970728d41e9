"""Examples/s of the dense train step on 1 device vs data-parallel over N forced host devices.

  python bench/bench_parallel.py [--devices 1,2] [--batch 256] [--steps 30]

Each device count runs in its own process (XLA_FLAGS must be set before JAX
starts). On one CPU socket the forced devices share the same cores, so this
measures the overhead of the sharded program, not a speed-up; on a multi-GPU
host or TPU the same code path scales out.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"mlp": dict(name="lenet300"), "convnet32": dict(name="convnet", width=32)}


def measure(model_name: str, batch: int, steps: int) -> dict:
  """Examples/s of the jitted dense step, placed by lmcjax.parallel when >1 device."""
  sys.path.insert(0, REPO)
  from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top
  cpu_runtime.configure()  # before JAX starts its CPU client
  import jax  # pylint: disable=g-import-not-at-top
  from lmcjax.configs import default  # pylint: disable=g-import-not-at-top
  from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top
  from lmcjax.configs.parts import parallel as parallel_config  # pylint: disable=g-import-not-at-top
  from lmcjax.configs.parts import train as train_part  # pylint: disable=g-import-not-at-top
  from lmcjax import models, parallel, train  # pylint: disable=g-import-not-at-top

  config = default.get_config()
  config.model = model_part.get(**MODELS[model_name])
  config.parallel = parallel_config.get_section()
  config.parallel.data_parallel = True
  shape = (32, 32, 3) if model_name.startswith("convnet") else (28, 28, 1)
  model = models.create(config.model, 10)
  spec = train_part.train_spec(batch_size=batch)
  params, stats = train.init_variables(model, jax.random.PRNGKey(0), shape)
  tx = train.make_optimizer(spec, steps)
  state = train.create_state(params, stats, tx, jax.random.PRNGKey(1))
  step = jax.jit(train.make_train_step(model, tx, spec.augment, 10), donate_argnums=0)
  images = jax.random.normal(jax.random.PRNGKey(2), (batch,) + shape)
  host_batch = {"image": images, "label": jax.numpy.arange(batch) % 10}
  placer = parallel.batch_placer(config)
  if placer:
    state = placer.replicate(state)
  place = placer or (lambda b: b)

  def run(n):
    nonlocal state
    for _ in range(n):
      state, metrics = step(state, place(host_batch), None)
    jax.block_until_ready(metrics)

  run(3)  # compile and warm up
  start = time.perf_counter()
  run(steps)
  seconds = time.perf_counter() - start
  return {"model": model_name, "devices": jax.device_count(), "batch": batch,
          "examples_per_s": steps * batch / seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", default="1,2")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--models", default="mlp,convnet32")
  parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:  # pylint: disable=protected-access
    print(json.dumps(measure(args._child, args.batch, args.steps)))  # pylint: disable=protected-access
    return
  rows = []
  for model_name in args.models.split(","):
    for n in map(int, args.devices.split(",")):
      env = dict(os.environ, JAX_PLATFORMS="cpu",
                 XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
      out = subprocess.run([sys.executable, __file__, "--_child", model_name, "--batch",
                            str(args.batch), "--steps", str(args.steps)],
                           env=env, capture_output=True, text=True, check=True, timeout=600)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(f"cpu cores visible: {os.cpu_count()}")
  print("| model | devices | batch | examples/s |\n|---|---|---|---|")
  for r in rows:
    print(f"| {r['model']} | {r['devices']} | {r['batch']} | {r['examples_per_s']:.0f} |")


if __name__ == "__main__":
  main()
