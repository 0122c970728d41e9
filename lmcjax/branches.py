"""SGD-noise branches: N copies trained from one point.

Copy i is exactly what `runtime.train_run(..., seed_path=prefix +
("branch", i), start_step=k)` would train: the same params, mask, optimizer
and steps; only the data order and the augmentation draws differ, through the
seed path. The engine trains them (lmcjax.engine.run_copies), with the
execution chosen per backend (execution.resolve):
  vmapped:    `chunk` copies at a time as one batched program, which fills
              an accelerator: jit(vmap(scan)), or on XLA:CPU for a convnet a
              jit(vmap(step)) call per step (engine._vmapped_steps);
  sequential: one copy after another, the jitted step driven from Python: on
              XLA:CPU, where a vmapped conv step costs ~1.3x K single steps,
              this trains at the train stage's speed, and it is train_run's
              code path bit for bit. 'auto' picks it for convnets on CPU
              (dense nets still gain from vmap).

trained_copies wraps train_branches for the analysis stage: the copies are
checkpointed while they train and saved when done, under a folder of DIR
(lmcjax.workdir.branch_copy), where a rerun reloads them and lmcjax.results
finds them.
"""
import dataclasses
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import jax
import numpy as np

from lmcjax import checkpoints
from lmcjax import engine
from lmcjax import execution as execution_lib
from lmcjax import logs
from lmcjax import masks
from lmcjax import parallel
from lmcjax import runtime
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout

PyTree = Any


@dataclasses.dataclass
class Branches:
  """Trained copies; params and batch_stats carry a leading copy axis."""
  params: PyTree
  batch_stats: PyTree
  final_loss: np.ndarray  # (copies,) training loss of the last step
  seed_paths: List[Tuple[Any, ...]]
  cost: Dict[str, int]  # per copy

  def ends(self) -> PyTree:
    """The stacked {'params', 'batch_stats'} trees interpolate.pairwise takes."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def seed_paths(prefix: Tuple[Any, ...], num_copies: int) -> List[Tuple[Any, ...]]:
  return [tuple(prefix) + ("branch", i) for i in range(num_copies)]


def train_branches(s, spec, params: PyTree, batch_stats: PyTree, mask: Optional[PyTree], *,
                   prefix: Tuple[Any, ...], num_copies: int, chunk: int,
                   images=None, labels=None, start_step: int = 0,
                   execution: str = "auto", checkpoint_dir: Optional[str] = None) -> Branches:
  """Trains num_copies SGD-noise copies of (params, batch_stats) under `mask`.

  Args:
    s: runtime.Setup (model, data, config.seeds).
    spec: train spec (epochs, batch_size, optimizer, ...).
    prefix: seed-path prefix; copy i uses prefix + ('branch', i).
    chunk: copies per vmapped call; fewer than num_copies bounds memory.
    images, labels: training data; default the real training split.
    start_step: (params, batch_stats) are the state at this step of a run of
      `spec` (a rewind point): the copies train the remaining steps with the
      schedule continued (runtime.train_run).
    execution: 'auto' | 'vmapped' | 'sequential' (execution.resolve).
    checkpoint_dir: where the copies save their state every
      config.checkpoint_every_steps (if > 0); a killed run resumes from it.
  """
  validate.positive("num_branches", num_copies)
  validate.positive("branch chunk", chunk)
  execution = execution_lib.resolve(execution, params)
  images = s.x_train if images is None else images
  labels = s.y_train if labels is None else labels
  n = int(images.shape[0])
  validate.require(n > 0, "cannot train branches on an empty split")
  if mask is not None:
    masks.check_matches(mask, params)
    params = masks.apply(params, mask)
  num_steps = train.total_steps(spec, n)
  validate.require(0 <= start_step <= num_steps, f"branch start step {start_step} is beyond "
                   f"the {num_steps} steps of training (epochs={spec.epochs})")
  batch = train.effective_batch(spec, n)
  paths = seed_paths(prefix, num_copies)
  program = engine.train_program(s.model, spec, s.dataset.num_classes, num_steps, start_step)
  copies = [engine.seeded_copy(program, params, batch_stats, s.config.seeds, path, images, labels,
                               batch, start_step, f"branch {path}") for path in paths]
  states, losses = engine.run_copies(program, copies, mask, num_steps, execution=execution,
                                     chunk=chunk, placer=parallel.batch_placer(s.config),
                                     checkpoint_dir=checkpoint_dir,
                                     checkpoint_every_steps=s.config.checkpoint_every_steps)
  return Branches(params=states.params, batch_stats=states.batch_stats, final_loss=losses,
                  seed_paths=paths, cost=train.data_cost(num_steps - start_step, batch, n))


def save_copies(parent: str, copies: Branches) -> None:
  """Each copy's final {'params', 'batch_stats'}, so lmcjax.results can reload
  it, then the record that marks them complete (for trained_copies)."""
  stacked, num_copies = copies.ends(), len(copies.final_loss)
  for i in range(num_copies):
    checkpoints.save_tree(layout.branch_copy(parent, i), execution_lib.take(stacked, i))
  logs.write_json(layout.branch_copies_record(parent),
                  {"num_copies": num_copies, "final_loss": np.asarray(copies.final_loss).tolist(),
                   "cost": copies.cost})
  shutil.rmtree(layout.branch_checkpoints(parent), ignore_errors=True)


def _saved_copies(parent: str, like: PyTree, num_copies: int,
                  prefix: Tuple[Any, ...]) -> Optional[Branches]:
  """The copies a killed earlier attempt of this stage finished and saved (the
  pipeline moves outputs of other inputs aside), or None."""
  record_path = layout.branch_copies_record(parent)
  if not os.path.exists(record_path):
    return None
  record = logs.read_json(record_path)
  if record.get("num_copies") != num_copies:
    return None
  trees = [checkpoints.load_tree(layout.branch_copy(parent, i), like, what="saved branch copy")
           for i in range(num_copies)]
  stacked = execution_lib.stack(trees)
  return Branches(stacked["params"], stacked["batch_stats"], np.asarray(record["final_loss"]),
                  seed_paths(prefix, num_copies), record["cost"])


def trained_copies(s, spec, start: PyTree, mask, parent: str, *, num_copies: int,
                   prefix: Tuple[Any, ...], **train_kwargs) -> Branches:
  """train_branches from `start`, checkpointed under `parent` and saved there;
  copies saved by an earlier attempt are reloaded instead of retrained (bit
  for bit the same: the training is deterministic and the trees exact)."""
  like = {"params": start["params"], "batch_stats": start["batch_stats"]}
  saved = _saved_copies(parent, like, num_copies, prefix)
  if saved is not None:
    logging.info("branches under %s: reloaded the %d copies an earlier attempt saved",
                 parent, num_copies)
    return saved
  copies = train_branches(s, spec, start["params"], start["batch_stats"], mask,
                          prefix=prefix, num_copies=num_copies,
                          checkpoint_dir=layout.branch_checkpoints(parent), **train_kwargs)
  jax.block_until_ready(copies.ends())
  save_copies(parent, copies)
  return copies


def copy_test_errors(s, stacked: PyTree, num_copies: int) -> List[float]:
  """The test error of each of the first num_copies copies stacked on axis 0."""
  return [1.0 - runtime.evaluate(s, execution_lib.take(stacked["params"], i),
                                 execution_lib.take(stacked["batch_stats"], i))["accuracy"]
          for i in range(num_copies)]
