"""Evaluation of a distilled set: K fresh networks trained on it, vmapped over seeds."""
import functools
from typing import Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import train
from lmcjax import validate

TrainingSet = Tuple[np.ndarray, np.ndarray]  # (images, labels)


@functools.lru_cache(maxsize=8)
def _vmapped_eval(model):
  return jax.jit(jax.vmap(train.make_eval_fn(model), in_axes=(0, 0, None, None)))


def _train_vmapped(init, step, orders, init_keys, aug_keys, sets: Sequence[TrainingSet], steps: int):
  """All nets as one program; net s trains on sets[s] (one shared set: one gather)."""
  shared = all(x is sets[0][0] for x, _ in sets)
  images = sets[0][0] if shared else jnp.stack([x for x, _ in sets])
  labels = sets[0][1] if shared else jnp.stack([y for _, y in sets])
  rows = np.arange(len(sets))[:, None]
  states = init(init_keys, aug_keys, sets[0][0][0])
  for t in range(steps):
    idx = np.stack([o.indices(t) for o in orders])
    where = idx if shared else (rows, idx)
    states, _ = step(states, {"image": images[where], "label": labels[where]}, None)
  return states


def _train_one(init, step, order, init_key, aug_key, training_set: TrainingSet, steps: int):
  images, labels = training_set
  state = init(init_key, aug_key, images[0])
  for t in range(steps):
    idx = order.indices(t)
    state, _ = step(state, {"image": images[idx], "label": labels[idx]}, None)
  return state


def train_and_test_sets(model, spec, sets: Sequence[TrainingSet], x_test, y_test, num_classes: int,
                        key, vmapped: bool = True) -> Dict[str, object]:
  """Test accuracy of len(sets) fresh nets, net s trained on sets[s] with spec.

  Net s uses init/order/augment keys folded from `key` with s, so two calls
  with the same key (a distilled set, its baseline) see the same seeds.
  vmapped trains all nets as one batched program; on XLA:CPU a vmapped conv
  becomes a grouped convolution that runs ~7x slower than the nets one by
  one, so CPU configs set it False (same results, same keys). Steps are a
  Python loop over one jitted step rather than a lax.scan: XLA:CPU runs
  convolutions inside a while loop ~15x slower (jax issue #12868), and
  evaluation is never differentiated.
  """
  n = int(sets[0][0].shape[0])
  validate.require(all(int(x.shape[0]) == n for x, _ in sets),
                   f"every evaluation set must hold {n} images, got {[int(x.shape[0]) for x, _ in sets]}")
  num_nets = len(sets)
  batch, steps = train.effective_batch(spec, n), train.total_steps(spec, n)
  k_init, k_order, k_aug = (jax.random.fold_in(key, i) for i in range(3))
  fold = lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(jnp.arange(num_nets))
  orders = [train.BatchOrder(jax.random.fold_in(k_order, s), n, batch) for s in range(num_nets)]
  _, init, step = train.compiled_run(model, spec, num_classes, steps, vmapped)
  if vmapped:
    states = _train_vmapped(init, step, orders, fold(k_init), fold(k_aug), sets, steps)
  else:
    per_net = [_train_one(init, step, o, ki, ka, xy, steps)
               for o, ki, ka, xy in zip(orders, fold(k_init), fold(k_aug), sets)]
    states = jax.tree.map(lambda *a: jnp.stack(a), *per_net)
  acc = np.asarray(_vmapped_eval(model)(states.params, states.batch_stats, x_test, y_test)["accuracy"])
  return {"mean": float(acc.mean()), "std": float(acc.std()), "accuracies": acc.tolist(),
          "num_images": n, "steps": steps, "lr": float(spec.lr)}


def train_and_test(model, spec, images, labels, x_test, y_test, num_classes: int,
                   num_seeds: int, key, vmapped: bool = True) -> Dict[str, object]:
  """train_and_test_sets with num_seeds nets all trained on (images, labels)."""
  return train_and_test_sets(model, spec, [(images, labels)] * num_seeds, x_test, y_test,
                             num_classes, key, vmapped)
