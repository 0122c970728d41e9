"""Gradient matching: DC/DSA (Zhao et al.) and IDC (Kim et al.)."""
import jax
import jax.numpy as jnp
import ml_collections

from lmcjax import validate
from lmcjax.distill import core
from lmcjax.distill import methods
from lmcjax.distill import registry

PyTree = methods.PyTree
GM_DISTANCES = ("dc", "mse")


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


def gradient_matching(p: methods.Problem, cfg, tx) -> methods.Method:
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

  return methods.Method(loss, methods.make_step(loss, tx, train_net), next_context)


def section(**overrides) -> ml_collections.ConfigDict:
  """DC/DSA values (Zhao et al.): SGD lr 0.1 momentum 0.5 on images, real
  batches of 256 per class, a fresh net every outer_loop=10 updates, trained
  for 50 SGD steps (lr 0.01) on the synthetic set between updates (ipc 10)."""
  cfg = ml_collections.ConfigDict(dict(
      iterations=200, optimizer="sgd", lr_images=0.1, momentum=0.5,
      batch_real=256,
      distance="dc",  # dc (layer-wise 1 - cosine) | mse
      net_reset_every=10,
      inner_steps=50, inner_data="synthetic",  # synthetic (DC) | real (IDC)
      batch_inner=256, lr_net=0.01,
      factor=1,
  ))
  cfg.update(overrides)
  return cfg


def check(m, name: str) -> None:
  validate.choice(f"{name}.distance", m.distance, GM_DISTANCES)
  validate.choice(f"{name}.inner_data", m.inner_data, ("synthetic", "real"))
  for key in ("batch_real", "net_reset_every", "batch_inner", "lr_net", "factor"):
    validate.positive(f"{name}.{key}", m[key])
  validate.non_negative(f"{name}.inner_steps", m.inner_steps)


def build(problem, m, key_fn, files_dir, log):
  del key_fn, files_dir, log  # no experts, no extra draws
  tx = core.make_outer_optimizer(m.optimizer, m.lr_images, m.momentum)
  return gradient_matching(problem, m, tx), tx, {}


def train_examples(m, num_classes: int, per_class: int, num_train: int) -> float:
  """Per iteration: a real batch and the synthetic images (differentiated
  through their gradient) per class, then the inner training steps."""
  inner_pool = num_train if m.inner_data == "real" else num_classes * per_class
  return m.iterations * (num_classes * (m.batch_real + methods.OUTER_FACTOR * per_class)
                         + m.inner_steps * min(m.batch_inner, inner_pool))


registry.register(registry.DistillMethod(
    name="dc", section=section, check=check, build=build, factor=lambda m: 1,
    train_examples=train_examples))
# IDC (Kim et al.): multi-formation factor 2, MSE gradient matching, the
# network trained on real data between updates.
registry.register(registry.DistillMethod(
    name="idc",
    section=lambda: section(distance="mse", inner_data="real", factor=2, lr_images=0.005,
                            optimizer="adam", inner_steps=10, batch_inner=128),
    check=check, build=build, factor=lambda m: int(m.factor), train_examples=train_examples))
