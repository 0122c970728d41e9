"""Pure masked training: optimizer, train state, train_step, eval and data order.

A train spec (a ConfigDict: epochs, batch_size, optimizer, lr, schedule,
augment, ...) describes one training run; IMP rounds, distilled-set training
and SGD-noise branches all use it with their own values. lmcjax.engine
compiles the step and runs the loop.
"""
import math
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmcjax import augment
from lmcjax import execution as execution_lib
from lmcjax import validate

PyTree = Any
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "multistep", "cosine")


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jnp.ndarray  # base key of the augmentation draws; folded with step


def check_spec(spec, name: str = "train") -> None:
  """Validates a train spec before any compute."""
  validate.positive(f"{name}.epochs", spec.epochs)
  validate.positive(f"{name}.batch_size", spec.batch_size)
  validate.positive(f"{name}.lr", spec.lr)
  validate.choice(f"{name}.optimizer", spec.optimizer, OPTIMIZERS)
  validate.choice(f"{name}.schedule", spec.schedule, SCHEDULES)
  validate.non_negative(f"{name}.weight_decay", spec.weight_decay)
  validate.non_negative(f"{name}.warmup_epochs", spec.warmup_epochs)
  validate.require(0.0 <= spec.momentum < 1.0,
                   f"{name}.momentum must be in [0, 1), got {spec.momentum!r}")
  validate.require(all(0.0 < m < 1.0 for m in spec.milestones),
                   f"{name}.milestones must be fractions of training in (0, 1), "
                   f"got {tuple(spec.milestones)}")
  validate.positive(f"{name}.gamma", spec.gamma)
  augment.check_config(spec.augment)


def total_steps(spec, num_examples: int) -> int:
  """Steps for spec.epochs passes over the data (the last batch may straddle epochs)."""
  return max(1, math.ceil(spec.epochs * num_examples / effective_batch(spec, num_examples)))


def effective_batch(spec, num_examples: int) -> int:
  # A distilled set can hold fewer images than one batch.
  return min(spec.batch_size, num_examples)


def make_schedule(spec, num_steps: int, start_step: int = 0) -> optax.Schedule:
  """The learning rate at each step of a num_steps run.

  start_step > 0 gives the schedule of a run resumed at that step (Frankle et
  al.'s rewinding, open_lth's branches): a fresh optimizer counts from 0, so
  the schedule is shifted to read the full run's value at start_step + count.
  """
  if start_step:
    full = make_schedule(spec, num_steps)
    return lambda count: full(count + start_step)
  warmup = int(round(spec.warmup_epochs / spec.epochs * num_steps))
  if spec.schedule == "multistep":
    main = optax.piecewise_constant_schedule(
        spec.lr, {int(m * num_steps) - warmup: spec.gamma for m in spec.milestones})
  elif spec.schedule == "cosine":
    main = optax.cosine_decay_schedule(spec.lr, max(1, num_steps - warmup))
  else:
    main = optax.constant_schedule(spec.lr)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, spec.lr, warmup), main], [warmup])


def make_optimizer(spec, num_steps: int, start_step: int = 0) -> optax.GradientTransformation:
  """SGD/Adam with coupled L2 weight decay (as PyTorch's weight_decay), or AdamW.

  start_step: see make_schedule; momentum and Adam moments start fresh, as in
  open_lth, which saves only the weights at a rewind point.
  """
  lr = make_schedule(spec, num_steps, start_step)
  if spec.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=spec.weight_decay)
  base = (optax.sgd(lr, momentum=spec.momentum or None, nesterov=spec.nesterov)
          if spec.optimizer == "sgd" else optax.adam(lr))
  return optax.chain(optax.add_decayed_weights(spec.weight_decay), base)


def init_variables(model, init_key, image_shape) -> Tuple[PyTree, PyTree]:
  variables = model.init(init_key, jnp.zeros((1,) + tuple(image_shape), jnp.float32))
  return variables["params"], variables.get("batch_stats", {})


def create_state(params, batch_stats, tx, aug_key, step: int = 0) -> TrainState:
  """A fresh optimizer state at `step` (> 0 for a run resumed at a rewind point)."""
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=aug_key)


def cross_entropy(logits, soft_labels):
  return -jnp.mean(jnp.sum(soft_labels * jax.nn.log_softmax(logits), axis=-1))


def forward(model, params, batch_stats, images, train: bool):
  """Logits, and updated BatchNorm statistics when training a BN model."""
  variables = {"params": params, "batch_stats": batch_stats}
  if train and batch_stats:
    logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return model.apply(variables, images, train=train), batch_stats


def make_train_step(model, tx, augment_cfg, num_classes: int) -> Callable:
  """Returns the pure `train_step(state, batch, mask) -> (state, metrics)`.

  `mask` may be None (dense). Gradients are masked before the optimizer and
  params re-masked after it, so neither momentum nor weight decay can move a
  pruned weight off zero. Not jitted here: callers jit it (with the state
  donated) or vmap/scan it.
  """

  def train_step(state: TrainState, batch: Dict[str, jnp.ndarray], mask: Optional[PyTree]):
    key = jax.random.fold_in(state.rng, state.step)
    aug_key, mix_key = jax.random.split(key)
    images = augment.augment_images(aug_key, batch["image"], augment_cfg)
    labels = jax.nn.one_hot(batch["label"], num_classes)
    if augment_cfg.cutmix_prob > 0:
      images, labels = augment.cutmix(mix_key, images, labels, augment_cfg.cutmix_prob,
                                      augment_cfg.cutmix_beta)

    def loss_fn(params):
      logits, new_stats = forward(model, params, state.batch_stats, images, train=True)
      return cross_entropy(logits, labels), (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if mask is not None:
      grads = jax.tree.map(jnp.multiply, grads, mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if mask is not None:
      params = jax.tree.map(jnp.multiply, params, mask)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                              opt_state=opt_state)
    return new_state, {"loss": loss, "accuracy": accuracy}

  return train_step


def example_chunks(arrays: Tuple[jnp.ndarray, ...], batch_size: int) -> Tuple[jnp.ndarray, ...]:
  """arrays (n leading rows each) padded to whole chunks of min(batch_size, n)
  rows and reshaped to (num_chunks, chunk, ...), plus the chunks' 0/1 mask of
  real (not padding) rows, last."""
  n = arrays[0].shape[0]
  validate.require(n > 0, "cannot evaluate on an empty split")
  chunk = min(batch_size, n)
  pad = (-n) % chunk
  valid = jnp.arange(n + pad) < n
  padded = tuple(jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in arrays) + (valid,)
  return tuple(a.reshape((-1, chunk) + a.shape[1:]) for a in padded)


def sum_over_chunks(chunk_fn: Callable, args: PyTree, blocks: Tuple[jnp.ndarray, ...],
                    execution: str) -> PyTree:
  """The sum over chunks i of chunk_fn(args, block i) (a tree of arrays).

  blocks: example_chunks' output. 'vmapped' scans the chunks with lax.map (one
  loop in the program); 'sequential' loops over them in Python, so under an
  outer jit the chunks are unrolled into the entry computation, where XLA:CPU
  runs differentiated convolutions fast (see execution_lib.EXECUTIONS). A single chunk
  skips the loop either way. Both sum the stacked per-chunk values in order.
  """
  num = blocks[0].shape[0]
  if num == 1 or execution == "sequential":
    parts = [chunk_fn(args, tuple(b[i] for b in blocks)) for i in range(num)]
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *parts)
  else:
    stacked = jax.lax.map(lambda block: chunk_fn(args, block), blocks)
  return jax.tree.map(lambda s: jnp.sum(s, axis=0), stacked)


def make_eval_fn(model, batch_size: int = 1000, execution: str = "vmapped") -> Callable:
  """Returns pure `evaluate(params, batch_stats, images, labels) -> {loss, accuracy}`.

  The split is padded to whole chunks of batch_size, so memory is one chunk
  of activations, and the function vmaps over params (interpolation) and
  differentiates (Hessian-vector products). execution says how the chunks
  run (sum_over_chunks). The default, lax.map, is the fused program an
  accelerator wants and also the fastest forward pass on XLA:CPU (4 chunks
  of 250 in lax.map evaluate 1,000 ConvNet-3 images 1.4x faster than one
  chunk and 1.7x faster than the chunks unrolled). A loss that is
  differentiated should pass 'auto' (hessian.make_loss): on CPU it unrolls a
  ConvNet's chunks, whose gradient convolutions are slow inside a loop.
  """
  validate.choice("execution", execution, execution_lib.EXECUTIONS)

  @jax.jit
  def chunk_sums(variables, block):
    params, batch_stats = variables
    x, y, ok = block
    logits, _ = forward(model, params, batch_stats, x, train=False)
    losses = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], -1)[:, 0]
    return jnp.sum(losses * ok), jnp.sum((jnp.argmax(logits, -1) == y) * ok)

  def evaluate(params, batch_stats, images, labels):
    n = images.shape[0]
    blocks = example_chunks((images, labels), batch_size)
    loss_sum, correct = sum_over_chunks(chunk_sums, (params, batch_stats), blocks,
                                        execution_lib.resolve(execution, params))
    return {"loss": loss_sum / n, "accuracy": correct / n}

  return evaluate


class BatchOrder:
  """The data order: an endless stream of per-epoch permutations.

  Step s takes stream positions [s*b, (s+1)*b). Every example appears exactly
  once per epoch, batches have a fixed shape, and the batch of any step is a
  pure function of (key, step), so a resumed run sees the same data.
  """

  def __init__(self, order_key, num_examples: int, batch_size: int):
    self.key, self.n, self.b = order_key, num_examples, batch_size
    self._cache: Dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      if len(self._cache) > 2:
        self._cache.pop(min(self._cache))
      self._cache[epoch] = np.asarray(
          jax.random.permutation(jax.random.fold_in(self.key, epoch), self.n))
    return self._cache[epoch]

  def block(self, start: int, count: int) -> np.ndarray:
    """Indices of steps [start, start + count) as a (count, batch) array."""
    return np.stack([self.indices(s) for s in range(start, start + count)])

  def indices(self, step: int) -> np.ndarray:
    start, stop = step * self.b, (step + 1) * self.b
    epochs = range(start // self.n, (stop - 1) // self.n + 1)
    stream = np.concatenate([self._perm(e) for e in epochs])
    offset = start - epochs[0] * self.n
    return stream[offset:offset + self.b]


def scan_steps(step_fn: Callable, state: TrainState, mask, images, labels,
               indices: jnp.ndarray,
               unroll: bool = False) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
  """Runs step_fn over the rows of `indices` (T, B) with lax.scan: one program.

  Use it under jit, and vmap it over states/indices to train copies at once
  (SGD-noise branches, evaluating a distilled set over seeds). unroll=True
  helps convnets on XLA:CPU, which runs convolutions inside a while loop far
  slower (jax issue #12868); the engine does not scan a convnet's copies on
  CPU at all (engine._vmapped_steps), so there unroll changes nothing.
  """

  def body(st, idx):
    return indexed_step(step_fn, st, mask, images, labels, idx)

  return jax.lax.scan(body, state, indices, unroll=unroll)


def indexed_step(step_fn: Callable, state: TrainState, mask, images, labels,
                 idx: jnp.ndarray) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
  """step_fn on the batch of rows `idx` (B,) of (images, labels)."""
  return step_fn(state, {"image": images[idx], "label": labels[idx]}, mask)


def data_cost(num_steps: int, batch_size: int, num_examples: int) -> Dict[str, int]:
  """Examples processed and distinct training points used by a run."""
  seen = num_steps * batch_size
  return {"examples_seen": int(seen), "distinct_examples": int(min(seen, num_examples))}


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or inf loss."""
