"""Shared pieces of every distillation method.

The synthetic set's learnable pytree, its initialisation from real data, the
per-class index table used to draw real batches inside jit, the one inner
training primitive (`inner_sgd`), the siamese DSA hook and the penultimate
embedding used by distribution matching.
"""
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmcjax import augment
from lmcjax import models
from lmcjax import synthetic
from lmcjax import train
from lmcjax import validate

PyTree = Any
Learnable = Dict[str, jnp.ndarray]  # {"images": (C*ipc, H, W, C), ["log_lr": ()]}


def synthetic_labels(num_classes: int, ipc: int) -> jnp.ndarray:
  """Class-sorted labels: image k belongs to class k // ipc (so a reshape gives classes)."""
  return jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), ipc)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.bincount(np.asarray(labels), minlength=num_classes)


def check_ipc(ipc: int, factor: int, labels: np.ndarray, num_classes: int) -> None:
  """ipc >= 1 and enough real examples of every class to initialise from."""
  validate.require(isinstance(ipc, int) and ipc >= 1,
                   f"distill.ipc must be an integer >= 1, got {ipc!r}")
  counts = class_counts(labels, num_classes)
  need = ipc * factor * factor
  short = np.flatnonzero(counts < need)
  validate.require(short.size == 0, (
      f"distill.ipc={ipc} (x factor^2={factor * factor}) needs {need} real examples per class, "
      f"but class {int(short[0]) if short.size else -1} has only "
      f"{int(counts[short[0]]) if short.size else 0}"))


def class_table(labels: np.ndarray, num_classes: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(C, max_count) indices of each class's examples (rows padded by wrapping) and counts.

  Lets a jitted step draw a real batch of class c with one randint, whatever
  the class sizes.
  """
  labels = np.asarray(labels)
  counts = class_counts(labels, num_classes)
  width = int(counts.max())
  rows = [np.resize(np.flatnonzero(labels == c), width) for c in range(num_classes)]
  return jnp.asarray(np.stack(rows), jnp.int32), jnp.asarray(counts, jnp.int32)


def real_class_batch(key, table, counts, c, size: int) -> jnp.ndarray:
  """Indices of `size` real examples of class c drawn with replacement (jittable)."""
  pos = jax.random.randint(key, (size,), 0, counts[c])
  return table[c, pos]


def _tile_crops(crops: np.ndarray, factor: int, h: int, w: int) -> np.ndarray:
  """IDC 'mix' init: factor^2 real images, downsampled, tiled into one image."""
  ch, cw = h // factor, w // factor
  small = np.asarray(jax.image.resize(crops, (crops.shape[0], ch, cw, crops.shape[-1]), "bilinear"))
  grid = small.reshape(factor, factor, ch, cw, -1).transpose(0, 2, 1, 3, 4)
  out = np.zeros((h, w, crops.shape[-1]), np.float32)
  out[:ch * factor, :cw * factor] = grid.reshape(ch * factor, cw * factor, -1)
  return out


def init_images(key, x_real, y_real, num_classes: int, ipc: int, init: str = "real",
                factor: int = 1) -> jnp.ndarray:
  """Class-sorted initial synthetic images (num_classes * ipc, H, W, C).

  'real': ipc distinct real images of each class drawn with a seeded
  permutation (factor > 1: factor^2 of them tiled per stored image, as IDC).
  'noise': standard normal, i.e. noise in normalised pixel space.
  """
  validate.choice("distill.init", init, ("real", "noise"))
  y_real = np.asarray(y_real)
  check_ipc(ipc, factor, y_real, num_classes)
  shape = tuple(x_real.shape[1:])
  if init == "noise":
    return jax.random.normal(key, (num_classes * ipc,) + shape, jnp.float32)
  chosen = np.asarray(x_real)[random_real_subset(key, y_real, num_classes, ipc * factor * factor)]
  if factor > 1:  # class-sorted, so consecutive groups of factor^2 share a class
    groups = chosen.reshape((num_classes * ipc, factor * factor) + shape)
    chosen = np.stack([_tile_crops(g, factor, *shape[:2]) for g in groups])
  return jnp.asarray(chosen, jnp.float32)


def random_real_subset(key, y_real, num_classes: int, ipc: int) -> np.ndarray:
  """Class-sorted indices of ipc distinct random real examples per class, each
  class drawn with its own seeded permutation: the real init and the baseline."""
  y_real = np.asarray(y_real)
  out = []
  for c in range(num_classes):
    idx = np.flatnonzero(y_real == c)
    out.append(idx[np.asarray(jax.random.permutation(jax.random.fold_in(key, c), idx.size))[:ipc]])
  return np.concatenate(out)


def training_images(images, labels, factor: int):
  """What a network trains on: the stored images, decoded when factor > 1."""
  return synthetic.decode_multiformation(images, labels, factor)


def make_outer_optimizer(optimizer: str, lr_images: float, momentum: float,
                         lr_lr: Optional[float] = None) -> optax.GradientTransformation:
  """Optimizer of the learnable pytree; the log-lr (MTT) gets Adam, whose step
  size does not depend on the scale of the gradient, so one lr_lr fits all."""
  validate.choice("distill optimizer", optimizer, ("sgd", "adam"))
  validate.positive("distill lr_images", lr_images)
  img = (optax.sgd(lr_images, momentum=momentum or None) if optimizer == "sgd"
         else optax.adam(lr_images))
  if lr_lr is None:
    return optax.multi_transform({"images": img}, {"images": "images"})
  validate.positive("distill lr_lr", lr_lr)
  return optax.multi_transform({"images": img, "log_lr": optax.adam(lr_lr)},
                               {"images": "images", "log_lr": "log_lr"})


def make_augment(cfg) -> Optional[Callable]:
  """Siamese DSA as `aug(key, x)`, or None: the same key gives the same transform
  on a real and a synthetic batch, so matching compares like with like."""
  if cfg.kind == "none":
    return None
  return lambda key, x: augment.augment_images(key, x, cfg, siamese=True)


def logits_loss(model, params, images, labels, num_classes: int):
  """Cross entropy of a norm-free-of-running-stats model (instance/layer norm)."""
  logits, _ = train.forward(model, params, {}, images, train=True)
  return train.cross_entropy(logits, jax.nn.one_hot(labels, num_classes))


def sgd_step(model, params, images, labels, lr, key, num_classes: int,
             aug: Optional[Callable] = None):
  """One plain SGD step on a batch: (params - lr * grad, loss). aug, if given,
  transforms the batch with `key` first."""
  if aug is not None:
    images = aug(key, images)
  loss, g = jax.value_and_grad(logits_loss, argnums=1)(model, params, images, labels, num_classes)
  return jax.tree.map(lambda a, b: a - lr * b, params, g), loss


def inner_sgd(model, params, images, labels, indices, lr, key, num_classes: int,
              aug: Optional[Callable] = None, remat: bool = False, unroll: bool = False):
  """THE inner-training primitive: sgd_step on rows of `indices` (T, B) with lax.scan.

  Pure and differentiable in params, images and lr, so MTT can backpropagate
  through the unroll; DC trains its matching net with it, and MTT's experts
  take the same sgd_step (experts.py). Step i augments with fold_in(key, i).
  With remat each step is rematerialised in the backward pass, so activation
  memory stays flat in T (parameters are still kept per step). unroll=True
  unrolls the scan: XLA:CPU runs convolutions inside a while loop ~15x slower
  than unrolled (measured on ConvNet-3), so CPU runs unroll; accelerator runs
  keep the rolled loop (compile time and memory flat in T). Returns (params,
  per-step losses).
  """

  def step(p, inp):
    i, idx = inp
    return sgd_step(model, p, images[idx], labels[idx], lr, jax.random.fold_in(key, i),
                    num_classes, aug)

  body = jax.checkpoint(step) if remat else step
  steps = jnp.arange(indices.shape[0])
  return jax.lax.scan(body, params, (steps, indices), unroll=unroll)


def random_batches(key, n: int, batch: int, num_steps: int) -> jnp.ndarray:
  """(num_steps, batch) rows, each a fresh permutation prefix of range(n) (jittable)."""
  keys = jax.random.split(key, num_steps)
  return jax.vmap(lambda k: jax.random.permutation(k, n)[:batch])(keys)


def embed(model, params, images) -> jnp.ndarray:
  """Penultimate features: the input of the model's top-level output Dense.

  Intercepts the call of the classifier head its registration names (flax
  method interception) and skips it, so any registered model works.
  """
  output = models.info(model).classifier
  validate.require(output in params,
                   f"distribution matching needs the classifier head {output!r} in the params")
  captured = []

  def interceptor(next_fn, args, kwargs, context):
    mod = context.module
    if (context.method_name == "__call__" and isinstance(mod, nn.Dense)
        and mod.scope is not None and tuple(mod.scope.path) == (output,)):
      captured.append(args[0])
      return jnp.zeros(args[0].shape[:-1] + (mod.features,), args[0].dtype)
    return next_fn(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    train.forward(model, params, {}, images, train=True)
  return captured[-1]
