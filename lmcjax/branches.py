"""SGD-noise branches: N copies trained from one point.

Copy i is exactly what `runtime.train_run(..., seed_path=prefix +
("branch", i), start_step=k)` would train: the same params, mask, optimizer
and steps; only the data order and the augmentation draws differ, through the
seed path. The execution is chosen per backend (train.resolve_execution):
  vmapped:    the copies' train states are stacked and `train.scan_steps` runs
              all steps of `chunk` copies as one jitted vmap(scan): one
              program that fills an accelerator;
  sequential: each copy is a train_run, the jitted step driven from Python:
              on XLA:CPU, where convolutions inside scan and vmapped (grouped)
              convolutions run ~10x slower, this trains at the train stage's
              speed, and it is train_run's code path bit for bit. 'auto'
              picks it for convnets on CPU (dense nets still gain from vmap).
"""
import dataclasses
import functools
import json
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmcjax import masks
from lmcjax import progress
from lmcjax import rng
from lmcjax import runtime
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


@functools.lru_cache(maxsize=16)
def _program(model, spec_json: str, num_classes: int, num_steps: int, start_step: int):
  """The optimizer and the jitted vmap over copies of scan_steps."""
  spec = ml_collections.ConfigDict(json.loads(spec_json))
  tx = train.make_optimizer(spec, num_steps, start_step)
  step = train.make_train_step(model, tx, spec.augment, num_classes)
  run = jax.vmap(functools.partial(train.scan_steps, step), in_axes=(0, None, None, None, 0))
  # The stacked states are built fresh for each call, so they are donated;
  # the mask, data and indices are shared read-only.
  return tx, jax.jit(run, donate_argnums=0)


def _stack(trees: List[PyTree]) -> PyTree:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _check_finite(losses: np.ndarray, paths) -> None:
  bad = np.argwhere(~np.isfinite(losses))
  if bad.size:
    copy, step = bad[0]
    raise train.NonFiniteLossError(
        f"non-finite loss {losses[copy, step]} in branch {paths[copy]} at step {step}")


def train_branches(s, spec, params: PyTree, batch_stats: PyTree, mask: Optional[PyTree], *,
                   prefix: Tuple[Any, ...], num_copies: int, chunk: int,
                   images=None, labels=None, start_step: int = 0,
                   execution: str = "auto") -> Branches:
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
  run = _sequential if execution == "sequential" else _vmapped
  states, losses = run(s, spec, params, batch_stats, mask, paths, chunk, images, labels,
                       start_step)
  cat = lambda *xs: jnp.concatenate(xs)
  return Branches(params=jax.tree.map(cat, *[st.params for st in states]),
                  batch_stats=jax.tree.map(cat, *[st.batch_stats for st in states]),
                  final_loss=np.asarray(losses), seed_paths=paths,
                  cost=train.data_cost(num_steps - start_step, batch, n))


def _sequential(s, spec, params, batch_stats, mask, paths, chunk, images, labels, start_step):
  """One train_run per copy (its NaN check included); states get a copy axis of 1."""
  del chunk  # one copy at a time
  states, losses = [], []
  shown = progress.Progress(f"branches {paths[0][:-2]}", len(paths), "copies")
  for path in paths:
    last = {}
    result = runtime.train_run(s, spec, params, batch_stats, mask, seed_path=path,
                                  stage=f"branch {path}", images=images, labels=labels,
                                  start_step=start_step, evaluate_test=False,
                                  on_step=lambda done, state, metrics: last.update(metrics))
    states.append(jax.tree.map(lambda a: a[None], result.state))
    losses.append(float(last["loss"]) if last else float("nan"))
    shown.update(len(states))
  return states, losses


def _vmapped(s, spec, params, batch_stats, mask, paths, chunk, images, labels, start_step):
  """`chunk` copies at a time as one jit(vmap(scan)) program."""
  n = int(images.shape[0])
  num_steps = train.total_steps(spec, n)
  batch = train.effective_batch(spec, n)
  tx, program = _program(s.model, spec.to_json_best_effort(sort_keys=True),
                         s.dataset.num_classes, num_steps, start_step)
  seeds = s.config.seeds
  done, losses = [], []
  shown = progress.Progress(f"branches {paths[0][:-2]}", len(paths), "copies")
  for start in range(0, len(paths), chunk):
    group = paths[start:start + chunk]
    states = _stack([train.create_state(params, batch_stats, tx,
                                        rng.named_key(seeds.augment, "augment", *p), start_step)
                     for p in group])
    indices = np.stack([train.BatchOrder(rng.named_key(seeds.data_order, "order", *p), n,
                                         batch).block(start_step, num_steps - start_step)
                        for p in group])
    states, metrics = program(states, mask, images, labels, jnp.asarray(indices))
    group_losses = np.asarray(metrics["loss"])
    _check_finite(group_losses, group)
    done.append(states)
    losses.extend(group_losses[:, -1].tolist())
    shown.update(len(losses))
  return done, losses
