"""Trajectory matching: MTT (Cazenavette et al.), with its expert trajectories."""
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmcjax import validate
from lmcjax.distill import core
from lmcjax.distill import experts
from lmcjax.distill import methods
from lmcjax.distill import registry

PyTree = methods.PyTree


def params_sq_distance(a: PyTree, b: PyTree) -> jnp.ndarray:
  return sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def trajectory_matching(p: methods.Problem, cfg, tx, trajectory_sampler) -> methods.Method:
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

  return methods.Method(loss, methods.make_step(loss, tx),
                        lambda iteration, ctx, key: trajectory_sampler(key))


def expert_template(m, model, image_shape) -> PyTree:
  """Stacked param shapes of m.num_experts experts (no compute)."""
  init = lambda k: experts.init_experts(model, k, image_shape, m.num_experts)
  return jax.eval_shape(init, jax.random.PRNGKey(0))


def expert_settings(m, num_epochs: int, unroll: bool, num_experts: int = 0):
  """What experts.train_experts reads, from config.distill.mtt."""
  return types.SimpleNamespace(num_experts=num_experts or m.num_experts,
                               num_expert_epochs=num_epochs, lr_teacher=m.lr_teacher,
                               batch_teacher=m.batch_teacher, unroll=unroll)


def expert_trajectory(m, p: methods.Problem, key, directory: str, log):
  """Loads the experts' per-epoch params from `directory`, or trains and saves them."""
  num_epochs = m.max_start_epoch + m.expert_epochs + 1
  template = expert_template(m, p.model, p.image_shape)
  if directory:
    experts.check_experts(directory, template)
  like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  if directory and experts.saved_epochs(directory) > 0:
    return experts.load_experts(directory, like, num_epochs)
  cfg = expert_settings(m, num_epochs - 1, p.unroll)
  trajectory, seconds = experts.train_experts(p.model, p.x_real, p.y_real, p.num_classes, cfg,
                                              key, directory, execution=p.execution, aug=p.aug)
  if log is not None:
    log.write("distill_experts", num_epochs - 1, {"seconds": float(sum(seconds))})
  return trajectory


def section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      iterations=200, optimizer="sgd", lr_images=100.0, momentum=0.5,
      lr_lr=1e-2, lr_init=0.01,  # learnable inner lr, stored as log-lr
      syn_steps=20, expert_epochs=2, max_start_epoch=4,
      batch_syn=0,  # 0 = all synthetic images every inner step
      remat=False,
      num_experts=4, lr_teacher=0.01, batch_teacher=256,
      expert_dir="",  # '' = DIR/distill/experts (reused when present)
  ))


def check(m, name: str) -> None:
  for key in ("syn_steps", "expert_epochs", "max_start_epoch", "num_experts", "lr_teacher",
              "batch_teacher", "lr_lr", "lr_init"):
    validate.positive(f"{name}.{key}", m[key])
  validate.non_negative(f"{name}.batch_syn", m.batch_syn)


def build(problem, m, key_fn, files_dir: str, log):
  """The experts are trained (or reloaded from m.expert_dir, else
  FILES_DIR/experts) first; the learnable inner lr joins the images."""
  directory = m.expert_dir or (os.path.join(files_dir, "experts") if files_dir else "")
  tx = core.make_outer_optimizer(m.optimizer, m.lr_images, m.momentum, m.lr_lr)
  trajectory = expert_trajectory(m, problem, key_fn("experts"), directory, log)
  sampler = experts.make_sampler(trajectory, m.max_start_epoch, m.expert_epochs)
  learn = {"log_lr": jnp.log(jnp.asarray(m.lr_init, jnp.float32))}
  return trajectory_matching(problem, m, tx, sampler), tx, learn


def train_examples(m, num_classes: int, per_class: int, num_train: int) -> float:
  """The unrolled inner steps (differentiated through) plus the experts' training."""
  batch = m.batch_syn or num_classes * per_class
  expert_examples = m.num_experts * (m.max_start_epoch + m.expert_epochs) * num_train
  return m.iterations * m.syn_steps * batch * methods.OUTER_FACTOR + expert_examples


registry.register(registry.DistillMethod(
    name="mtt", section=section, check=check, build=build, factor=lambda m: 1,
    train_examples=train_examples))
