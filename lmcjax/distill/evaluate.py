"""Evaluation of a distilled set: K fresh networks trained on it, vmapped over seeds."""
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import train

_COMPILED = {}


def _compiled(model, spec, num_classes: int, num_steps: int, vmapped: bool):
  """(init, train_step), jitted (and vmapped over seeds) once per (model, spec, length).

  Steps are a Python loop over one jitted step rather than a lax.scan
  (train.scan_steps): XLA:CPU runs convolutions inside a while loop ~15x
  slower (jax issue #12868), and evaluation is never differentiated.
  """
  key = (model, spec.to_json_best_effort(sort_keys=True), num_classes, num_steps, vmapped)
  if key not in _COMPILED:
    tx = train.make_optimizer(spec, num_steps)
    step = train.make_train_step(model, tx, spec.augment, num_classes)

    def init(init_key, aug_key, image):
      params, stats = train.init_variables(model, init_key, image.shape)
      return train.create_state(params, stats, tx, aug_key)

    if vmapped:
      init, step = jax.vmap(init, in_axes=(0, 0, None)), jax.vmap(step, in_axes=(0, 0, None))
    _COMPILED[key] = (jax.jit(init), jax.jit(step, donate_argnums=0))
  return _COMPILED[key]


def _train(init, step, orders, init_keys, aug_keys, images, labels, steps: int):
  """Trains from init(init_keys, aug_keys) along `orders` (one BatchOrder per net)."""
  states = init(init_keys, aug_keys, images[0])
  for t in range(steps):
    idx = np.stack([o.indices(t) for o in orders])
    if len(orders) == 1 and init_keys.ndim == 1:
      idx = idx[0]
    states, _ = step(states, {"image": images[idx], "label": labels[idx]}, None)
  return states


def train_and_test(model, spec, images, labels, x_test, y_test, num_classes: int,
                   num_seeds: int, key, vmapped: bool = True) -> Dict[str, object]:
  """Test accuracy of num_seeds fresh nets trained on (images, labels) with spec.

  Seed s uses init/order/augment keys folded from `key` with s, so the
  distilled set and its random-subset baseline see the same seeds. vmapped
  trains all seeds as one batched program; on XLA:CPU a vmapped conv becomes
  a grouped convolution that runs ~7x slower than the seeds one by one, so
  CPU configs set it False (same results, same keys).
  """
  n = int(images.shape[0])
  batch, steps = train.effective_batch(spec, n), train.total_steps(spec, n)
  k_init, k_order, k_aug = (jax.random.fold_in(key, i) for i in range(3))
  seeds = jnp.arange(num_seeds)
  fold = lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(seeds)
  orders = [train.BatchOrder(jax.random.fold_in(k_order, s), n, batch) for s in range(num_seeds)]
  init, step = _compiled(model, spec, num_classes, steps, vmapped)
  if vmapped:
    states = _train(init, step, orders, fold(k_init), fold(k_aug), images, labels, steps)
  else:
    per_seed = [_train(init, step, [o], ki, ka, images, labels, steps)
                for o, ki, ka in zip(orders, fold(k_init), fold(k_aug))]
    states = jax.tree.map(lambda *a: jnp.stack(a), *per_seed)
  evaluate = jax.jit(jax.vmap(train.make_eval_fn(model), in_axes=(0, 0, None, None)))
  acc = np.asarray(evaluate(states.params, states.batch_stats, x_test, y_test)["accuracy"])
  return {"mean": float(acc.mean()), "std": float(acc.std()), "accuracies": acc.tolist(),
          "num_images": n, "steps": steps}
