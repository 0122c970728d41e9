"""Layers the registered models share: normalisation by kind."""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# Running statistics update as m * old + (1 - m) * batch (PyTorch's 0.1).
BN_MOMENTUM = 0.9


class InstanceNorm(nn.Module):
  """GroupNorm with one group per channel: each channel of each example is
  standardised over its spatial axes, then scaled and shifted per channel.

  The same function and parameters as nn.GroupNorm(num_groups=channels)
  (tests/test_models.py), from direct per-channel moments: flax reshapes to
  (..., groups, 1) and reduces a 5-D array, whose backward pass XLA:CPU runs
  ~15% slower in a ConvNet-3 train step.
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    spatial = tuple(range(1, x.ndim - 1))
    mean = jnp.mean(x, axis=spatial, keepdims=True)
    centred = x - mean
    var = jnp.mean(jnp.square(centred), axis=spatial, keepdims=True)
    return centred * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias


def make_norm(kind: str, train: bool, index: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Normalisation layer by name; `index` is its place among its parent's norms.

  Instance norm is GroupNorm with one group per channel and layer norm GroupNorm
  with a single group, as in the DC code. Instance norm was nn.GroupNorm, so it
  is named GroupNorm_<index> explicitly: parameter trees and saved checkpoints
  keep their names (GroupNorm_0/scale, ...), and flax derives each submodule's
  init key from its name, so initial weights stay the same too.
  """
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)
  if kind == "instance":
    return InstanceNorm(epsilon=1e-5, name=f"GroupNorm_{index}")
  if kind == "layer":
    return lambda x: nn.GroupNorm(num_groups=1, epsilon=1e-5)(x)
  return lambda x: x
