"""Distribution matching: DM (Zhao & Bilen)."""
import jax
import jax.numpy as jnp
import ml_collections

from lmcjax import validate
from lmcjax.distill import core
from lmcjax.distill import methods
from lmcjax.distill import registry


def distribution_matching(p: methods.Problem, cfg, tx) -> methods.Method:
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

  return methods.Method(loss, methods.make_step(loss, tx), lambda iteration, ctx, key: {})


def section() -> ml_collections.ConfigDict:
  """DM (Zhao & Bilen): SGD lr 1 momentum 0.5, real batches of 256 per class."""
  return ml_collections.ConfigDict(dict(
      iterations=200, optimizer="sgd", lr_images=1.0, momentum=0.5, batch_real=256))


def check(m, name: str) -> None:
  validate.positive(f"{name}.batch_real", m.batch_real)


def build(problem, m, key_fn, files_dir, log):
  del key_fn, files_dir, log  # the step's key draws each network
  tx = core.make_outer_optimizer(m.optimizer, m.lr_images, m.momentum)
  return distribution_matching(problem, m, tx), tx, {}


def train_examples(m, num_classes: int, per_class: int, num_train: int) -> float:
  del num_train
  return m.iterations * num_classes * (m.batch_real / 3 + per_class)  # real side: forward only


registry.register(registry.DistillMethod(
    name="dm", section=section, check=check, build=build, factor=lambda m: 1,
    train_examples=train_examples))
