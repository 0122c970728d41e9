"""What every distillation method shares: the problem, the method record and one outer step.

The methods themselves are registered in their own modules
(gradient_matching.py, distribution_matching.py, trajectory_matching.py; see
registry.py). Every method is a `Method(loss, step, next_context)`:
  loss(learn, key, ctx) -> scalar matching loss (pure; fixed key => deterministic),
  step(learn, opt_state, key, ctx) -> (learn, opt_state, ctx, loss): one outer
    iteration, jitted once by the driver, with every inner loop a lax.scan/map,
  next_context(iteration, ctx) -> ctx: host-side per-iteration context (DC's
    matching network, MTT's expert segment; DM needs none).
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from lmcjax.distill import core
from lmcjax import train

PyTree = Any
# Train-step equivalents per synthetic example of one outer step (cost
# estimates): the loss is a function of a gradient (GM) or of an unrolled SGD
# path (MTT), so its image gradient costs about a forward, a backward and a
# backward of the backward.
OUTER_FACTOR = 3.0


@dataclasses.dataclass(frozen=True)
class Problem:
  """What every method needs about the real data and the network."""
  model: Any
  num_classes: int
  image_shape: tuple
  x_real: jnp.ndarray
  y_real: jnp.ndarray
  table: jnp.ndarray  # (C, max_count) class index table
  counts: jnp.ndarray  # (C,)
  ipc: int
  factor: int = 1
  aug: Optional[Callable] = None
  unroll: bool = False  # unroll class loops and inner scans (fast on XLA:CPU, see inner_sgd)
  execution: str = "auto"  # independent nets (MTT's experts): lmcjax.execution

  @property
  def labels(self) -> jnp.ndarray:
    return core.synthetic_labels(self.num_classes, self.ipc)

  def per_class(self, learn) -> jnp.ndarray:
    """Training images (decoded) as (C, ipc * factor^2, H, W, C)."""
    images, _ = core.training_images(learn["images"], self.labels, self.factor)
    return images.reshape((self.num_classes, -1) + tuple(self.image_shape))

  def init_net(self, key) -> PyTree:
    return train.init_variables(self.model, key, self.image_shape)[0]

  def over_classes(self, fn: Callable, key) -> jnp.ndarray:
    """Sum over classes of fn(c, key_c), one class at a time with lax.scan: a DSA
    op stays one real switch branch (under vmap every branch would run) and
    memory holds one class's batch."""
    keys = jax.random.split(key, self.num_classes)
    body = lambda total, a: (total + fn(*a), None)
    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (jnp.arange(self.num_classes), keys),
                            unroll=self.unroll)
    return total

  def siamese_pair(self, key, c, syn_images, batch_real):
    """A real batch of class c and class c's synthetic images, same DSA transform."""
    k_real, k_aug = jax.random.split(key)
    xr = self.x_real[core.real_class_batch(k_real, self.table, self.counts, c, batch_real)]
    xs = syn_images[c]
    if self.aug is not None:
      xr, xs = self.aug(k_aug, xr), self.aug(k_aug, xs)
    return xr, xs


@dataclasses.dataclass(frozen=True)
class Method:
  loss: Callable
  step: Callable
  next_context: Callable


def make_step(loss_fn: Callable, tx: optax.GradientTransformation,
              after: Optional[Callable] = None) -> Callable:
  """The one outer step: grad of the matching loss, optax update, then `after`
  (DC trains its network on the new synthetic set)."""

  def step(learn, opt_state, key, ctx):
    loss, grads = jax.value_and_grad(loss_fn)(learn, key, ctx)
    updates, opt_state = tx.update(grads, opt_state, learn)
    learn = optax.apply_updates(learn, updates)
    if after is not None:
      ctx = after(learn, jax.random.fold_in(key, 1), ctx)
    return learn, opt_state, ctx, loss

  return step
