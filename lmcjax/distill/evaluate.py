"""Evaluation of a distilled set: K fresh networks trained on it, vmapped over seeds."""
from typing import Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import train


def _train(init, step, orders, init_keys, aug_keys, sets, steps: int, vmapped: bool):
  """Trains net s on sets[s] along orders[s]; vmapped nets share one program."""
  states = init(init_keys, aug_keys, sets[0][0][0])
  for t in range(steps):
    batches = [(x[o.indices(t)], y[o.indices(t)]) for (x, y), o in zip(sets, orders)]
    if vmapped:
      batch = {"image": jnp.stack([b[0] for b in batches]), "label": jnp.stack([b[1] for b in batches])}
    else:
      batch = {"image": batches[0][0], "label": batches[0][1]}
    states, _ = step(states, batch, None)
  return states


def train_and_test(model, spec, images, labels, x_test, y_test, num_classes: int,
                   num_seeds: int, key, vmapped: bool = True,
                   per_seed_sets: Sequence[Tuple[np.ndarray, np.ndarray]] = ()) -> Dict[str, object]:
  """Test accuracy of num_seeds fresh nets trained on (images, labels) with spec.

  Seed s uses init/order/augment keys folded from `key` with s, so the
  distilled set and its random-subset baseline see the same seeds.
  per_seed_sets (one (images, labels) per seed, all the size of `images`)
  gives each net its own training set: the random-subset baseline draws a new
  subset per seed, so its spread includes the choice of subset. vmapped
  trains all seeds as one batched program; on XLA:CPU a vmapped conv becomes
  a grouped convolution that runs ~7x slower than the seeds one by one, so
  CPU configs set it False (same results, same keys).
  """
  sets = list(per_seed_sets) or [(images, labels)] * num_seeds
  assert len(sets) == num_seeds and all(len(x) == len(images) for x, _ in sets), "one set per seed"
  n = int(images.shape[0])
  batch, steps = train.effective_batch(spec, n), train.total_steps(spec, n)
  k_init, k_order, k_aug = (jax.random.fold_in(key, i) for i in range(3))
  seeds = jnp.arange(num_seeds)
  fold = lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(seeds)
  orders = [train.BatchOrder(jax.random.fold_in(k_order, s), n, batch) for s in range(num_seeds)]
  # A Python loop over one jitted step rather than a lax.scan (train.scan_steps):
  # XLA:CPU runs convolutions inside a while loop ~15x slower (jax issue #12868),
  # and evaluation is never differentiated.
  _, init, step = train.compiled_run(model, train.spec_key(spec), num_classes, steps, vmapped)
  if vmapped:
    states = _train(init, step, orders, fold(k_init), fold(k_aug), sets, steps, True)
  else:
    per_seed = [_train(init, step, [o], ki, ka, [xy], steps, False)
                for o, ki, ka, xy in zip(orders, fold(k_init), fold(k_aug), sets)]
    states = jax.tree.map(lambda *a: jnp.stack(a), *per_seed)
  evaluate = jax.jit(jax.vmap(train.make_eval_fn(model), in_axes=(0, 0, None, None)))
  acc = np.asarray(evaluate(states.params, states.batch_stats, x_test, y_test)["accuracy"])
  return {"mean": float(acc.mean()), "std": float(acc.std()), "accuracies": acc.tolist(),
          "num_images": n, "steps": steps, "lr": float(spec.lr)}
