"""The distillation methods as pure matching losses plus one generic outer step.

Every method is a `Method(loss, step, next_context)`:
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
GM_DISTANCES = ("dc", "mse")


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


# ---------------------------------------------------------------- gradient matching


def gradient_distance(g_real: PyTree, g_syn: PyTree, kind: str) -> jnp.ndarray:
  """DC's layer-wise distance (1 - cosine per output unit, kernels only) or MSE."""
  pairs = zip(jax.tree.leaves(g_real), jax.tree.leaves(g_syn))
  if kind == "mse":
    return sum(jnp.sum((a - b) ** 2) for a, b in pairs)
  total = 0.0
  for a, b in pairs:
    if a.ndim < 2:  # DC ignores biases and norm scales
      continue
    a, b = a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]).T  # rows: output units
    cos = jnp.sum(a * b, -1) / (_safe_norm(a) * _safe_norm(b) + 1e-6)
    total = total + jnp.sum(1.0 - cos)
  return total


def _safe_norm(a):
  # A dead unit has an all-zero gradient row; the plain norm's derivative there is NaN.
  return jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis=-1), 1e-24))


def gradient_matching(p: Problem, cfg, tx) -> Method:
  """DC/DSA (cfg.inner_data='synthetic') and IDC (factor > 1, 'real' inner data).

  ctx is the matching network's params; the driver draws a fresh one every
  cfg.net_reset_every iterations (DC's outer_loop) and the step trains it for
  cfg.inner_steps SGD steps between image updates.
  """
  model, C = p.model, p.num_classes

  def class_grad(net, x, c):
    y = jnp.full((x.shape[0],), c, jnp.int32)
    return jax.grad(core.logits_loss, argnums=1)(model, net, x, y, C)

  def loss(learn, key, net):
    syn = p.per_class(learn)

    def one_class(c, k):
      xr, xs = p.siamese_pair(k, c, syn, cfg.batch_real)
      g_real = jax.lax.stop_gradient(class_grad(net, xr, c))
      return gradient_distance(g_real, class_grad(net, xs, c), cfg.distance)

    return p.over_classes(one_class, key)

  def train_net(learn, key, net):
    if cfg.inner_steps == 0:
      return net
    if cfg.inner_data == "real":
      images, labels = p.x_real, p.y_real
    else:
      images, labels = core.training_images(jax.lax.stop_gradient(learn["images"]), p.labels,
                                            p.factor)
    k_idx, k_aug = jax.random.split(key)
    idx = core.random_batches(k_idx, images.shape[0], min(cfg.batch_inner, images.shape[0]),
                              cfg.inner_steps)
    net, _ = core.inner_sgd(model, net, images, labels, idx, cfg.lr_net, k_aug, C, p.aug,
                            unroll=p.unroll)
    return net

  def next_context(iteration, net, key):
    return p.init_net(key) if net is None or iteration % cfg.net_reset_every == 0 else net

  return Method(loss, make_step(loss, tx, train_net), next_context)


# ---------------------------------------------------------------- distribution matching


def distribution_matching(p: Problem, cfg, tx) -> Method:
  """DM: per-class mean penultimate embeddings of real vs synthetic batches
  under a network freshly initialised from the step's key."""
  model = p.model

  def loss(learn, key, ctx):
    del ctx
    k_net, k_cls = jax.random.split(key)
    net = p.init_net(k_net)
    syn = p.per_class(learn)

    def one_class(c, k):
      xr, xs = p.siamese_pair(k, c, syn, cfg.batch_real)
      e_real = jnp.mean(core.embed(model, net, xr), axis=0)
      e_syn = jnp.mean(core.embed(model, net, xs), axis=0)
      return jnp.sum((jax.lax.stop_gradient(e_real) - e_syn) ** 2)

    return p.over_classes(one_class, k_cls)

  return Method(loss, make_step(loss, tx), lambda iteration, ctx, key: {})


# ---------------------------------------------------------------- trajectory matching


def params_sq_distance(a: PyTree, b: PyTree) -> jnp.ndarray:
  return sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def trajectory_matching(p: Problem, cfg, tx, trajectory_sampler: Callable) -> Method:
  """MTT: from expert params at epoch t, cfg.syn_steps SGD steps on synthetic
  batches with the learnable lr; loss ||theta_N - theta*_{t+M}||^2 /
  ||theta*_t - theta*_{t+M}||^2. ctx = {'start', 'target'} from the sampler."""
  model, C = p.model, p.num_classes
  labels = p.labels

  def loss(learn, key, ctx):
    images = learn["images"]
    k_idx, k_aug = jax.random.split(key)
    batch = min(cfg.batch_syn, images.shape[0]) if cfg.batch_syn else images.shape[0]
    idx = core.random_batches(k_idx, images.shape[0], batch, cfg.syn_steps)
    end, _ = core.inner_sgd(model, ctx["start"], images, labels, idx, jnp.exp(learn["log_lr"]),
                            k_aug, C, p.aug, remat=cfg.remat, unroll=p.unroll)
    return (params_sq_distance(end, ctx["target"])
            / params_sq_distance(ctx["start"], ctx["target"]))

  return Method(loss, make_step(loss, tx), lambda iteration, ctx, key: trajectory_sampler(key))
