"""SGD-noise branches: N copies trained from one point.

Copy i is exactly what `runtime.train_run(..., seed_path=prefix +
("branch", i), start_step=k)` would train: the same params, mask, optimizer
and steps; only the data order and the augmentation draws differ, through the
seed path. The engine trains them (lmcjax.engine.run_copies), with the
execution chosen per backend (train.resolve_execution):
  vmapped:    `chunk` copies at a time as one batched program, which fills
              an accelerator: jit(vmap(scan)), or on XLA:CPU for a convnet a
              jit(vmap(step)) call per step (engine._vmapped_steps);
  sequential: one copy after another, the jitted step driven from Python: on
              XLA:CPU, where a vmapped conv step costs ~1.3x K single steps,
              this trains at the train stage's speed, and it is train_run's
              code path bit for bit. 'auto' picks it for convnets on CPU
              (dense nets still gain from vmap).
"""
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from lmcjax import engine
from lmcjax import masks
from lmcjax import parallel
from lmcjax import train
from lmcjax import validate

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
    execution: 'auto' | 'vmapped' | 'sequential' (train.resolve_execution).
    checkpoint_dir: where the copies save their state every
      config.checkpoint_every_steps (if > 0); a killed run resumes from it.
  """
  validate.positive("num_branches", num_copies)
  validate.positive("branch chunk", chunk)
  execution = train.resolve_execution(execution, params)
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
