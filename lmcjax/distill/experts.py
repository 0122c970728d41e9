"""MTT experts: networks trained on real data, parameters saved every epoch.

Experts take MTT's inner step (core.sgd_step: plain SGD, as MTT's buffer.py:
no momentum, no weight decay), trained by the engine (engine.run_copies),
vmapped over experts. Expert i draws its data order and augmentation from
keys folded with i; step t augments with fold_in(its key, t), as every
engine run does. Epoch e of all experts is one orbax tree
DIR/distill/experts/epoch_EEE holding the params stacked on a leading expert
axis.
"""
import os
import time
from typing import Any, Callable, List, Tuple

import jax
import jax.numpy as jnp

from lmcjax import checkpoints
from lmcjax.distill import core
from lmcjax import engine
from lmcjax import execution as execution_lib
from lmcjax import train
from lmcjax import validate

PyTree = Any


def epoch_path(directory: str, epoch: int) -> str:
  return os.path.join(directory, f"epoch_{epoch:03d}")


def expert_program(model, num_classes: int, lr: float, aug, unroll: bool = False) -> engine.Program:
  """The engine Program of one expert: a params-only state (no optimizer, no
  batch stats) and core.sgd_step."""

  def init(init_key, aug_key, image):
    params = train.init_variables(model, init_key, image.shape)[0]
    return train.TrainState(step=jnp.asarray(0, jnp.int32), params=params, batch_stats={},
                            opt_state=(), rng=aug_key)

  def step(state, batch, mask):
    del mask  # experts are dense
    key = jax.random.fold_in(state.rng, state.step)
    params, loss = core.sgd_step(model, state.params, batch["image"], batch["label"], lr, key,
                                 num_classes, aug)
    return state.replace(step=state.step + 1, params=params), {"loss": loss}

  return engine.Program(step, jax.jit(init), unroll=unroll)


def init_experts(model, key, image_shape, num_experts: int) -> PyTree:
  """Stacked fresh inits, one per expert."""
  keys = jax.random.split(key, num_experts)
  return jax.vmap(lambda k: train.init_variables(model, k, image_shape)[0])(keys)


def train_experts(model, x, y, num_classes: int, cfg, key, directory: str = "",
                  execution: str = "auto", aug=None) -> Tuple[List[PyTree], List[float]]:
  """Trains cfg.num_experts experts for cfg.num_expert_epochs epochs.

  Returns the trajectory [epoch 0 .. E] of stacked params (host numpy) and the
  seconds of each epoch (the first includes compilation; saving excluded).
  With `directory`, every epoch is saved. An epoch is n // batch steps.
  execution (lmcjax.execution): 'auto' vmaps the experts on accelerators and
  for dense nets, and trains a conv net's one after another with the
  Python-driven step on XLA:CPU (1.34x faster there, bench/bench_distill.py).
  A NaN/inf loss raises NonFiniteLossError.
  """
  k_init, k_order, k_aug = jax.random.split(key, 3)
  program = expert_program(model, num_classes, cfg.lr_teacher, aug, cfg.unroll)
  batch = min(cfg.batch_teacher, x.shape[0])
  steps = max(1, x.shape[0] // batch)
  copies = [engine.fresh_copy(program, k, jax.random.fold_in(k_aug, i),
                              jax.random.fold_in(k_order, i),
                              x, y, batch, f"distill expert {i}")
            for i, k in enumerate(jax.random.split(k_init, cfg.num_experts))]
  params = execution_lib.stack([c.state.params for c in copies])
  trajectory, seconds = [jax.device_get(params)], []
  _save(directory, 0, params)
  for e in range(cfg.num_expert_epochs):
    tick = time.perf_counter()
    states, _ = engine.run_copies(program, copies, None, (e + 1) * steps, execution=execution)
    states = jax.block_until_ready(states)
    copies = engine.resume(copies, states)
    seconds.append(time.perf_counter() - tick)
    trajectory.append(jax.device_get(states.params))
    _save(directory, e + 1, states.params)
  return trajectory, seconds


def _save(directory: str, epoch: int, params: PyTree) -> None:
  if directory:
    checkpoints.save_tree(epoch_path(directory, epoch), params)


def saved_epochs(directory: str) -> int:
  """Number of consecutive epoch trees saved from epoch 0."""
  n = 0
  while checkpoints.exists(epoch_path(directory, n)):
    n += 1
  return n


def load_experts(directory: str, like: PyTree, num_epochs: int) -> List[PyTree]:
  """Loads epochs 0..num_epochs-1, each checked against `like` (stacked params);
  a checkpoint of another model or expert count is a one-line InputError."""
  have = saved_epochs(directory)
  validate.require(have >= num_epochs, (
      f"expert checkpoints in {directory} hold {have} epochs; MTT needs {num_epochs} "
      "(max_start_epoch + expert_epochs + 1)"))
  return [jax.device_get(checkpoints.load_tree(epoch_path(directory, e), like,
                                               what="expert checkpoint"))
          for e in range(num_epochs)]


def check_experts(directory: str, like: PyTree) -> None:
  """Cheap pre-compute check: epoch 0 matches the model (shapes and names)."""
  if checkpoints.exists(epoch_path(directory, 0)):
    checkpoints.load_tree(epoch_path(directory, 0), like, what="expert checkpoint")


def make_sampler(trajectory: List[PyTree], max_start_epoch: int, expert_epochs: int) -> Callable:
  """sampler(key) -> {'start': theta*_t, 'target': theta*_{t+M}} of a random expert,
  t uniform in [0, max_start_epoch). Host-side indexing keeps the (possibly
  large) buffer off the device; only one segment is transferred."""
  num_experts = jax.tree.leaves(trajectory[0])[0].shape[0]

  def sampler(key):
    k_exp, k_start = jax.random.split(key)
    i = int(jax.random.randint(k_exp, (), 0, num_experts))
    t = int(jax.random.randint(k_start, (), 0, max_start_epoch))
    pick = lambda tree: jax.tree.map(lambda a: jnp.asarray(a[i]), tree)
    return {"start": pick(trajectory[t]), "target": pick(trajectory[t + expert_epochs])}

  return sampler
