"""Evaluation of a distilled set: K fresh networks trained on it by the engine."""
import functools
from typing import Dict, Sequence, Tuple

import jax
import numpy as np

from lmcjax import engine
from lmcjax import train
from lmcjax import validate

TrainingSet = Tuple[np.ndarray, np.ndarray]  # (images, labels)


@functools.lru_cache(maxsize=8)
def _vmapped_eval(model):
  return jax.jit(jax.vmap(train.make_eval_fn(model), in_axes=(0, 0, None, None)))


def train_and_test_sets(model, spec, sets: Sequence[TrainingSet], x_test, y_test, num_classes: int,
                        key, execution: str = "auto") -> Dict[str, object]:
  """Test accuracy of len(sets) fresh nets, net s trained on sets[s] with spec.

  Net s uses init/order/augment keys folded from `key` with s, so two calls
  with the same key (a distilled set, its baseline) see the same seeds.
  execution (lmcjax.execution): 'auto' trains all nets as one batched program
  on accelerators and for dense nets, and a conv net's one by one on XLA:CPU
  (the jitted step driven from Python, same keys), where a vmapped conv step
  is slower. A NaN/inf training loss raises train.NonFiniteLossError naming
  the net and step.
  """
  n = int(sets[0][0].shape[0])
  validate.require(all(int(x.shape[0]) == n for x, _ in sets),
                   f"every evaluation set must hold {n} images, "
                   f"got {[int(x.shape[0]) for x, _ in sets]}")
  batch, steps = train.effective_batch(spec, n), train.total_steps(spec, n)
  k_init, k_order, k_aug = (jax.random.fold_in(key, i) for i in range(3))
  program = engine.train_program(model, spec, num_classes, steps)
  copies = [engine.fresh_copy(program,
                              *(jax.random.fold_in(k, s) for k in (k_init, k_aug, k_order)),
                              images, labels, batch, f"distill eval net {s}")
            for s, (images, labels) in enumerate(sets)]
  states, _ = engine.run_copies(program, copies, None, steps, execution=execution)
  metrics = _vmapped_eval(model)(states.params, states.batch_stats, x_test, y_test)
  acc = np.asarray(metrics["accuracy"])
  return {"mean": float(acc.mean()), "std": float(acc.std()), "accuracies": acc.tolist(),
          "num_images": n, "steps": steps, "lr": float(spec.lr)}


def train_and_test(model, spec, images, labels, x_test, y_test, num_classes: int,
                   num_seeds: int, key, execution: str = "auto") -> Dict[str, object]:
  """train_and_test_sets with num_seeds nets all trained on (images, labels)."""
  return train_and_test_sets(model, spec, [(images, labels)] * num_seeds, x_test, y_test,
                             num_classes, key, execution)
