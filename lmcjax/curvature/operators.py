"""The loss and residual-loss operators, Hessian-vector products, probes.

Hessian-vector products are forward-over-reverse: jax.jvp of jax.grad.
"""
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from lmcjax import execution as execution_lib
from lmcjax import masks
from lmcjax import train
from lmcjax.curvature.problem import LossProblem

PyTree = Any


def make_loss(problem: LossProblem, execution: str = "auto") -> Callable:
  """params -> mean cross-entropy over the problem's examples, batch_size_examples at a time.

  problem.params is not read: the loss is a function of the params passed.
  execution: how the example chunks run (train.sum_over_chunks); 'auto' keeps
  a convolutional net's differentiated chunks out of loops on CPU.
  """
  evaluate = train.make_eval_fn(problem.model, problem.batch_size_examples, execution)
  return lambda params: evaluate(params, problem.batch_stats, problem.images,
                                 problem.labels)["loss"]


def make_residual_loss(problem: LossProblem, execution: str = "auto") -> Callable:
  """params -> mean over examples of <stop_gradient(dL/df), f(params)>.

  Its Hessian is the residual sum_c (dL/df_c) d2f_c in H = GGN + residual:
  holding dL/df = softmax(f) - onehot(y) fixed leaves only the logits' own
  curvature to be differentiated. Examples go batch_size_examples at a time,
  run as make_loss's chunks.
  """
  model, batch_stats = problem.model, problem.batch_stats
  blocks = train.example_chunks((problem.images, problem.labels), problem.batch_size_examples)

  @jax.jit
  def block_sum(params, block):
    x, y, ok = block
    logits, _ = train.forward(model, params, batch_stats, x, train=False)
    dloss = jax.nn.softmax(logits) - jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(jax.lax.stop_gradient(dloss * ok[:, None]) * logits)

  def loss(params):
    chosen = execution_lib.resolve(execution, params)
    return train.sum_over_chunks(block_sum, params, blocks, chosen) / problem.num_examples

  return loss


OPERATORS = {"hessian": make_loss, "residual": make_residual_loss}


def hvp(loss: Callable, params: PyTree, vector: PyTree) -> PyTree:
  """H v by forward-over-reverse differentiation."""
  return jax.jvp(jax.grad(loss), (params,), (vector,))[1]


def rademacher(key, params: PyTree, mask: Optional[PyTree] = None) -> PyTree:
  """A +-1 tree like params (zero at pruned entries)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  z = [jax.random.rademacher(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
  z = jax.tree.unflatten(tree, z)
  return z if mask is None else masks.apply(z, mask)
