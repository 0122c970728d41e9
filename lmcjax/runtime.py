"""The runtime every stage shares: data and model set-up, evaluation, training.

`train_run` is the one training primitive every stage uses (dense training,
IMP rounds, retraining, SGD-noise branches): it builds the jitted masked step
once per (model, spec, length) and runs it with named seeds. The stages and
their order live in lmcjax/pipeline.py, which imports this module, never the
other way round.
"""
import dataclasses
import functools
import platform
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import checkpoints
from lmcjax import data as data_lib
from lmcjax import engine
from lmcjax import logs
from lmcjax import masks
from lmcjax import models
from lmcjax import parallel
from lmcjax import rng
from lmcjax import train
from lmcjax import validate

PyTree = Any


@dataclasses.dataclass
class Setup:
  """What every stage shares: the config, data on device, the model and its init."""
  config: Any
  dataset: data_lib.Dataset
  model: Any
  x_train: jnp.ndarray
  y_train: jnp.ndarray
  x_test: jnp.ndarray
  y_test: jnp.ndarray
  init_params: PyTree
  init_batch_stats: PyTree
  prunable: PyTree


@dataclasses.dataclass
class RunResult:
  state: train.TrainState
  test: Dict[str, float]
  cost: Dict[str, int]


def setup(config) -> Setup:
  dataset = data_lib.load(config.data)
  model = models.create(config.model, dataset.num_classes)
  params, batch_stats = train.init_variables(model, rng.named_key(config.seeds.init, "init"),
                                             dataset.image_shape)
  to_device = lambda x: jnp.asarray(dataset.normalise(x))
  return Setup(config, dataset, model,
               to_device(dataset.x_train), jnp.asarray(dataset.y_train),
               to_device(dataset.x_test), jnp.asarray(dataset.y_test),
               params, batch_stats,
               masks.prunable_tree(params, config.prune.scope, models.info(model).classifier))


@functools.lru_cache(maxsize=8)
def _compiled_eval(model, batch_size: int):
  return jax.jit(train.make_eval_fn(model, batch_size))


def evaluate(s: Setup, params, batch_stats, split: str = "test") -> Dict[str, float]:
  images, labels = (s.x_test, s.y_test) if split == "test" else (s.x_train, s.y_train)
  out = _compiled_eval(s.model, s.config.eval_batch_size)(params, batch_stats, images, labels)
  return {k: float(v) for k, v in out.items()}


def train_run(s: Setup, spec, params, batch_stats, mask: Optional[PyTree], *,
              seed_path: Tuple[Any, ...], stage: str, log: Optional[logs.MetricsLog] = None,
              images=None, labels=None, checkpoint_dir: str = "",
              stop_step: Optional[int] = None, start_step: int = 0,
              on_step: Optional[Callable] = None, evaluate_test: bool = True) -> RunResult:
  """Trains (params, batch_stats) under `mask` with `spec` and evaluates on test.

  The data order and augmentation draws come from config.seeds.data_order and
  config.seeds.augment folded with `seed_path`, so two runs that differ only
  in seed_path differ only in SGD noise. With checkpoint_dir, the state is
  saved every config.checkpoint_every_steps and a rerun resumes from it.
  With stop_step, training stops there with the full run's schedule: the state
  is an exact prefix of the full run (a rewind point at step k). With
  start_step = k, (params, batch_stats) are taken as the run's state at step k
  (Frankle et al.'s rewinding): it trains the remaining steps k..T-1 with the
  schedule continued at k and a fresh optimizer. on_step: see engine.run.
  The caller's arrays are copied, never donated.
  """
  images = s.x_train if images is None else images
  labels = s.y_train if labels is None else labels
  n = int(images.shape[0])
  num_steps = train.total_steps(spec, n)
  batch = train.effective_batch(spec, n)
  validate.require(0 <= start_step <= num_steps, f"rewind step {start_step} is beyond the "
                   f"{num_steps} steps of this run (epochs={spec.epochs})")
  program = engine.train_program(s.model, spec, s.dataset.num_classes, num_steps, start_step)
  if mask is not None:
    params = masks.apply(params, mask)
  copy = engine.seeded_copy(program, params, batch_stats, s.config.seeds, seed_path, images,
                            labels, batch, start_step, stage)
  checkpointer = None
  if checkpoint_dir:
    checkpointer = checkpoints.StateCheckpointer(checkpoint_dir, s.config.checkpoint_every_steps)
  end = num_steps if stop_step is None else min(stop_step, num_steps)
  state, _ = engine.run(program, copy, mask, end, log_every=s.config.log_every_steps,
                        on_log=log.logger(stage) if log else None, checkpointer=checkpointer,
                        placer=parallel.batch_placer(s.config), on_step=on_step)
  if checkpointer:
    checkpointer.close()
  test = evaluate(s, state.params, state.batch_stats) if evaluate_test else {}
  return RunResult(state, test, train.data_cost(end - start_step, batch, n))


def software_versions() -> Dict[str, str]:
  # Imported here: only a run's summary needs these versions.
  import flax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint  # pylint: disable=g-import-not-at-top
  return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax": orbax.checkpoint.__version__,
          "numpy": np.__version__, "backend": jax.default_backend()}
