"""Experiment setup and stage dispatch behind launch/main.py.

`train_run` is the one training primitive every stage uses (dense training,
IMP rounds, retraining, SGD-noise branches): it builds the jitted masked step
once per (model, spec, length) and runs it with named seeds.
"""
import dataclasses
import functools
import json
import os
import platform
import time
from typing import Any, Callable, Dict, Optional, Tuple

from absl import logging
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


def check_config(config) -> None:
  """Checks every section that the configured stages read, before any compute."""
  validate.require(len(config.stages) > 0, "config.stages is empty")
  for stage in config.stages:
    validate.choice("config.stages entry", stage, STAGES)
  data_lib.check_config(config.data)
  models.check_config(config.model)
  train.check_spec(config.train, "train")
  validate.choice("prune.scope", config.prune.scope, masks.SCOPES)
  validate.positive("eval_batch_size", config.eval_batch_size)
  validate.non_negative("log_every_steps", config.log_every_steps)
  validate.non_negative("checkpoint_every_steps", config.checkpoint_every_steps)
  parallel.check_config(config)
  for stage in config.stages:
    stage_module(stage).check_config(config)


def setup(config) -> Setup:
  dataset = data_lib.load(config.data)
  model = models.create(config.model, dataset.num_classes)
  params, batch_stats = train.init_variables(model, rng.named_key(config.seeds.init, "init"),
                                             dataset.image_shape)
  to_device = lambda x: jnp.asarray(dataset.normalise(x))
  return Setup(config, dataset, model,
               to_device(dataset.x_train), jnp.asarray(dataset.y_train),
               to_device(dataset.x_test), jnp.asarray(dataset.y_test),
               params, batch_stats, masks.prunable_tree(params, config.prune.scope))


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
    copy.state = checkpointer.restore_latest(copy.state) or copy.state
  end = num_steps if stop_step is None else min(stop_step, num_steps)
  state, _ = engine.run(program, copy, mask, end, log_every=s.config.log_every_steps,
                        on_log=log.logger(stage) if log else None, checkpointer=checkpointer,
                        placer=parallel.batch_placer(s.config), on_step=on_step)
  if checkpointer:
    checkpointer.close()
  test = evaluate(s, state.params, state.batch_stats) if evaluate_test else {}
  return RunResult(state, test, train.data_cost(end - start_step, batch, n))


def software_versions() -> Dict[str, str]:
  import flax, optax, orbax.checkpoint  # pylint: disable=g-import-not-at-top,multiple-imports
  return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "orbax": orbax.checkpoint.__version__,
          "numpy": np.__version__, "backend": jax.default_backend()}


# Stage name -> module exposing run_stage(setup, workdir, log) -> summary dict,
# check_config(config) (raises InputError before any compute), CONFIG_FIELDS
# (the config sections it reads), DEPENDS_ON (earlier stages whose outputs it
# reads) and OUTPUT_DIRS(workdir) (what it writes, moved aside when stale);
# optionally REPORT_ONLY_FIELDS (see stage_inputs).
STAGE_MODULES: Dict[str, str] = {
    "train": "lmcjax.dense",
    "distill": "lmcjax.distill",
    "imp": "lmcjax.imp",
    "analysis": "lmcjax.analysis",
    "report": "lmcjax.report",
}
STAGES = tuple(STAGE_MODULES)


def stage_module(name: str):
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(STAGE_MODULES[name])


def _has(config, field: str) -> bool:
  head, *rest = field.split(".")
  return head in config and (not rest or _has(config[head], ".".join(rest)))


def _section(config, field: str):
  """A config section or a dotted field ('analysis.rounds') as plain data."""
  value = config
  for key in field.split("."):
    value = value[key]
  return value.to_dict() if hasattr(value, "to_dict") else value


def stage_inputs(config, stage: str, downstream: bool = False) -> Dict[str, Any]:
  """What a stage's result depends on: the config fields it reads, and those of
  the stages whose outputs it reads. Readable on disk in DIR/stages/.

  downstream=True gives what a later stage sees of this one: without the
  module's REPORT_ONLY_FIELDS (dotted paths, e.g. 'distill.eval'), which change
  the stage's own report but not the files later stages read, so toggling
  them reruns this stage alone.
  """
  module = stage_module(stage)
  inputs = {field: _section(config, field) for field in module.CONFIG_FIELDS if _has(config, field)}
  inputs = json.loads(json.dumps(inputs, default=str))
  if downstream:
    for path in getattr(module, "REPORT_ONLY_FIELDS", ()):
      *parents, leaf = path.split(".")
      node = inputs
      for key in parents:
        node = node.get(key, {})
      node.pop(leaf, None)
  for upstream in module.DEPENDS_ON:
    if upstream in config.stages:
      inputs[f"stage:{upstream}"] = stage_inputs(config, upstream, downstream=True)
  return inputs


def _stage_record_paths(workdir: str, stage: str) -> Tuple[str, str]:
  base = os.path.join(workdir, "stages")
  return os.path.join(base, f"{stage}.inputs.json"), os.path.join(base, f"{stage}.done.json")


def _move_aside_stale(workdir: str, stage: str) -> None:
  """Outputs of a stage run under other inputs are moved, never deleted."""
  stale_root = os.path.join(workdir, "stale", f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}")
  for path in stage_module(stage).OUTPUT_DIRS(workdir):
    if os.path.exists(path):
      os.makedirs(stale_root, exist_ok=True)
      os.replace(path, os.path.join(stale_root, os.path.basename(path)))
      logging.info("stage %s: inputs changed; moved %s to %s", stage, path, stale_root)


def run_cached_stage(s: Setup, workdir: str, log: logs.MetricsLog, stage: str) -> Dict[str, Any]:
  """Runs a stage unless it already finished with the same inputs.

  A finished stage is skipped; an unfinished one with the same inputs is rerun
  and resumes from its own checkpoints; one whose inputs changed starts over.
  """
  inputs = stage_inputs(s.config, stage)
  inputs_path, done_path = _stage_record_paths(workdir, stage)
  os.makedirs(os.path.dirname(inputs_path), exist_ok=True)
  previous = logs.read_json(inputs_path) if os.path.exists(inputs_path) else None
  always = getattr(stage_module(stage), "ALWAYS_RUN", False)
  if previous == inputs and os.path.exists(done_path) and not always:
    logging.info("stage %s: finished earlier with the same inputs; skipped", stage)
    return logs.read_json(done_path)["summary"]
  if previous is not None and previous != inputs:
    _move_aside_stale(workdir, stage)
    if os.path.exists(done_path):
      os.remove(done_path)
  logs.write_json(inputs_path, inputs)
  start = time.perf_counter()
  summary = stage_module(stage).run_stage(s, workdir, log)
  summary["seconds"] = time.perf_counter() - start
  logs.write_json(done_path, {"summary": summary})
  return summary


def check_workdir_writable(workdir: str) -> None:
  """Fails before compute if the workdir cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_probe")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise validate.InputError(f"cannot write workdir {workdir!r}: {e.strerror or e}") from e


def run(config, workdir: str) -> Dict[str, Any]:
  """Runs config.stages in order; writes DIR/metrics.jsonl and DIR/summary.json."""
  check_config(config)
  check_workdir_writable(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  s = setup(config)
  log = logs.MetricsLog(workdir)
  summary = {"dataset": s.dataset.name, "model": config.model.name,
             "num_train": int(s.x_train.shape[0]), "num_test": int(s.x_test.shape[0]),
             "versions": software_versions()}
  for stage in config.stages:
    logging.info("stage %s", stage)
    summary[stage] = run_cached_stage(s, workdir, log, stage)
    logs.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary
