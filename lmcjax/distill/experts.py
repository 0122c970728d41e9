"""MTT experts: networks trained on real data, parameters saved every epoch.

Experts are trained with the shared inner primitive (plain SGD, as MTT's
buffer.py: no momentum, no weight decay), vmapped over experts. Epoch e of all
experts is one orbax tree DIR/distill/experts/epoch_EEE holding the params
stacked on a leading expert axis.
"""
import os
import time
from typing import Any, Callable, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import checkpoints
from lmcjax.distill import core
from lmcjax import train
from lmcjax import validate

PyTree = Any


def epoch_path(directory: str, epoch: int) -> str:
  return os.path.join(directory, f"epoch_{epoch:03d}")


def make_epoch_fn(model, x, y, num_classes: int, lr: float, aug, unroll: bool = False) -> Callable:
  """One expert epoch: `epoch(params, indices (T, B), key) -> params` (pure)."""

  def epoch(params, indices, key):
    return core.inner_sgd(model, params, x, y, indices, lr, key, num_classes, aug,
                          unroll=unroll)[0]

  return epoch


def init_experts(model, key, image_shape, num_experts: int) -> PyTree:
  """Stacked fresh inits, one per expert."""
  keys = jax.random.split(key, num_experts)
  return jax.vmap(lambda k: train.init_variables(model, k, image_shape)[0])(keys)


def epoch_indices(order_key, n: int, batch: int, num_experts: int, epoch: int) -> np.ndarray:
  """(experts, steps, batch) data order for one epoch; each expert its own order."""
  steps = max(1, n // batch)
  return np.stack([train.BatchOrder(jax.random.fold_in(order_key, i), n, batch)
                   .block(epoch * steps, steps) for i in range(num_experts)])


def train_experts(model, x, y, num_classes: int, cfg, key, directory: str = "",
                  vmapped: bool = True, aug=None) -> Tuple[List[PyTree], List[float]]:
  """Trains cfg.num_experts experts for cfg.num_expert_epochs epochs.

  Returns the trajectory [epoch 0 .. E] of stacked params (host numpy) and the
  seconds of each epoch (the first includes compilation; saving excluded). With `directory`, every epoch is saved.
  vmapped=False trains the experts one after another with the same jitted
  epoch (the bench's comparison).
  """
  k_init, k_order, k_aug = jax.random.split(key, 3)
  params = init_experts(model, k_init, x.shape[1:], cfg.num_experts)
  epoch = make_epoch_fn(model, x, y, num_classes, cfg.lr_teacher, aug, cfg.unroll)
  run = jax.jit(jax.vmap(epoch)) if vmapped else jax.jit(epoch)
  batch = min(cfg.batch_teacher, x.shape[0])
  trajectory, seconds = [jax.device_get(params)], []
  _save(directory, 0, params)
  for e in range(cfg.num_expert_epochs):
    idx = jnp.asarray(epoch_indices(k_order, x.shape[0], batch, cfg.num_experts, e))
    keys = jax.random.split(jax.random.fold_in(k_aug, e), cfg.num_experts)
    tick = time.perf_counter()
    if vmapped:
      params = run(params, idx, keys)
    else:
      params = jax.tree.map(lambda *a: jnp.stack(a), *[
          run(jax.tree.map(lambda a, i=i: a[i], params), idx[i], keys[i])
          for i in range(cfg.num_experts)])
    params = jax.block_until_ready(params)
    seconds.append(time.perf_counter() - tick)
    trajectory.append(jax.device_get(params))
    _save(directory, e + 1, params)
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
