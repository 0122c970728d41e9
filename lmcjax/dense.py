"""The dense real-data run and its rewind points, shared by every stage.

The train stage, IMP (its round 0 and its rewind point) and the analysis
(branches from step k, the instability curve) all need the same run: config.train
on the real training set from the config's init, with seed path SEED_PATH. The
train stage trains it once and snapshots its state at every step a later stage
rewinds to; a stage that finds a step missing trains the exact prefix
(stop_step) and saves it. So the dense net is never trained twice.

Snapshots live in DIR/dense/<key>/, where key hashes the config sections the
run depends on: a snapshot can never be read under another config, whichever
stages ran or were cached.
"""
import hashlib
import json
import os
from typing import Any, Dict, Iterable, Optional

import jax
import jax.numpy as jnp

from lmcjax import checkpoints
from lmcjax import runtime
from lmcjax import train
from lmcjax import validate

PyTree = Any
SEED_PATH = ("dense",)
# What the dense run's states depend on (log and checkpoint intervals do not).
INPUT_FIELDS = ("seeds", "data", "model", "train", "parallel")
SCHEDULES = ("continue", "restart")


def run_dir(workdir: str, config) -> str:
  inputs = {f: config[f].to_dict() if hasattr(config[f], "to_dict") else config[f]
            for f in INPUT_FIELDS if f in config}
  key = hashlib.sha1(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]
  return os.path.join(workdir, "dense", key)


def snapshot_path(workdir: str, config, step: int) -> str:
  return os.path.join(run_dir(workdir, config), f"step_{step:07d}")


def final_path(workdir: str, config) -> str:
  return os.path.join(run_dir(workdir, config), "final")


def num_steps(config, num_train: int) -> int:
  return train.total_steps(config.train, num_train)


def epoch_step(config, num_train: int, epochs: float, what: str = "rewind epoch") -> int:
  """The step of the dense run at `epochs` epochs; one line if beyond training."""
  spec = config.train
  validate.require(epochs >= 0, f"{what} {epochs!r} must be >= 0")
  validate.require(epochs <= spec.epochs, f"{what} {epochs!r} is beyond training "
                   f"(train.epochs={spec.epochs})")
  return int(round(epochs * num_train / train.effective_batch(spec, num_train)))


def start_step(schedule: str, rewind_step: int) -> int:
  """Where a run from a rewind point starts counting: 'continue' trains the
  remaining steps with the schedule continued (Frankle et al. 2020, open_lth);
  'restart' trains a whole run from the rewound weights."""
  validate.choice("rewind schedule", schedule, SCHEDULES)
  return rewind_step if schedule == "continue" else 0


def _variables(state) -> Dict[str, PyTree]:
  return {"params": state.params, "batch_stats": state.batch_stats}


def _like(s) -> Dict[str, PyTree]:
  return {"params": s.init_params, "batch_stats": s.init_batch_stats}


def train_dense(s, workdir: str, log=None, save_steps: Iterable[int] = (),
                stop_step: Optional[int] = None, stage: str = "train") -> runtime.RunResult:
  """Trains the dense run (to stop_step) and saves its state at save_steps."""
  wanted = {int(k) for k in save_steps} - {0}

  def snapshot(done: int, state, metrics) -> None:
    del metrics
    if done in wanted:
      checkpoints.save_tree(snapshot_path(workdir, s.config, done), _variables(state))

  return runtime.train_run(s, s.config.train, s.init_params, s.init_batch_stats, None,
                              seed_path=SEED_PATH, stage=stage, log=log, stop_step=stop_step,
                              on_step=snapshot, evaluate_test=stop_step is None)


def ensure_snapshots(s, workdir: str, steps: Iterable[int], log=None) -> None:
  """Saves every missing step of `steps` with one prefix run to the last of them."""
  missing = [k for k in sorted(set(steps)) if k > 0 and
             not checkpoints.exists(snapshot_path(workdir, s.config, k))]
  if missing:
    train_dense(s, workdir, log, missing, stop_step=missing[-1], stage="dense/rewind")


def load(s, workdir: str, step: int, log=None) -> Dict[str, PyTree]:
  """{'params', 'batch_stats'} of the dense run at `step` (0 = the init)."""
  if step == 0:
    return jax.tree.map(jnp.array, _like(s))
  ensure_snapshots(s, workdir, [step], log)
  return checkpoints.load_tree(snapshot_path(workdir, s.config, step), _like(s),
                               what=f"dense rewind point at step {step}")


def final(s, workdir: str, log=None, save_steps: Iterable[int] = ()) -> runtime.RunResult:
  """The whole dense run: trained (saving save_steps) unless saved earlier."""
  path = final_path(workdir, s.config)
  n = int(s.x_train.shape[0])
  if not checkpoints.exists(path):
    result = train_dense(s, workdir, log, save_steps)
    checkpoints.save_tree(path, _variables(result.state))
    return result
  tree = checkpoints.load_tree(path, _like(s), what="dense run")
  steps = num_steps(s.config, n)
  state = train.TrainState(step=jnp.asarray(steps, jnp.int32), params=tree["params"],
                           batch_stats=tree["batch_stats"], opt_state=(),
                           rng=jnp.zeros(2, jnp.uint32))
  test = runtime.evaluate(s, state.params, state.batch_stats)
  batch = train.effective_batch(s.config.train, n)
  return runtime.RunResult(state, test, train.data_cost(steps, batch, n))
