"""Flax linen models, chosen by name in config.model.

Every model is called as `model.apply(variables, x, train=...)`; models with
BatchNorm keep running statistics in the 'batch_stats' collection.
"""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmcjax import validate

NORMS = ("instance", "batch", "layer", "none")
# Running statistics update as m * old + (1 - m) * batch (PyTorch's 0.1).
BN_MOMENTUM = 0.9
POOLS = ("avg", "max")


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


# flax names a submodule after its class. Instance norm was nn.GroupNorm, so
# keeping that name keeps parameter trees (GroupNorm_0/scale, ...) and saved
# checkpoints unchanged.
InstanceNorm.__name__ = "GroupNorm"


def make_norm(kind: str, train: bool) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Normalisation layer by name. Instance norm is GroupNorm with one group per
  channel and layer norm GroupNorm with a single group, as in the DC code."""
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)
  if kind == "instance":
    return InstanceNorm(epsilon=1e-5)
  if kind == "layer":
    return lambda x: nn.GroupNorm(num_groups=1, epsilon=1e-5)(x)
  return lambda x: x


class MLP(nn.Module):
  """Fully connected net; hidden=(300, 100) is LeNet-300-100."""
  num_classes: int
  hidden: Sequence[int] = (300, 100)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


class ConvNet(nn.Module):
  """ConvNet-D of dataset distillation: depth x [conv3x3, norm, relu, pool 2]."""
  num_classes: int
  depth: int = 3
  width: int = 128
  norm: str = "instance"
  pooling: str = "avg"

  @nn.compact
  def __call__(self, x, train: bool = False):
    pool = nn.avg_pool if self.pooling == "avg" else nn.max_pool
    for _ in range(self.depth):
      x = nn.Conv(self.width, (3, 3), padding=1)(x)
      x = nn.relu(make_norm(self.norm, train)(x))
      x = pool(x, (2, 2), strides=(2, 2))
    return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))



class BasicBlock(nn.Module):
  width: int
  stride: int = 1
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Conv(self.width, (3, 3), self.stride, padding=1, use_bias=False)(x)
    y = nn.relu(make_norm(self.norm, train)(y))
    y = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(y)
    y = make_norm(self.norm, train)(y)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = nn.Conv(self.width, (1, 1), self.stride, use_bias=False)(x)
      x = make_norm(self.norm, train)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR ResNet: 3x3 stem, no max-pool, stages of basic blocks, global avg pool."""
  num_classes: int
  stage_widths: Sequence[int] = (32, 64, 128, 256)
  blocks_per_stage: Sequence[int] = (2, 2, 2, 2)
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.stage_widths[0], (3, 3), padding=1, use_bias=False)(x)
    x = nn.relu(make_norm(self.norm, train)(x))
    for stage, (width, blocks) in enumerate(zip(self.stage_widths, self.blocks_per_stage)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(width, stride, self.norm)(x, train)
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
  """VGG-16 for CIFAR: BatchNorm after every conv, one linear classifier."""
  num_classes: int
  layers: Sequence[Any] = VGG16_LAYERS
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool = False):
    for layer in self.layers:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2)) if x.shape[1] > 1 else x
      else:
        x = nn.relu(make_norm(self.norm, train)(nn.Conv(layer, (3, 3), padding=1)(x)))
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


class AlexNet(nn.Module):
  """The AlexNet of the MTT code base (no norm, small classifier)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    pool = lambda z: nn.max_pool(z, (2, 2), strides=(2, 2))
    first_pad = 4 if x.shape[-1] == 1 else 2  # MTT pads MNIST-sized input more
    x = pool(nn.relu(nn.Conv(128, (5, 5), padding=first_pad)(x)))
    x = pool(nn.relu(nn.Conv(192, (5, 5), padding=2)(x)))
    x = nn.relu(nn.Conv(256, (3, 3), padding=1)(x))
    x = nn.relu(nn.Conv(192, (3, 3), padding=1)(x))
    x = pool(nn.relu(nn.Conv(192, (3, 3), padding=1)(x)))
    return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


# Each model's config fields beyond `name`. config.model holds exactly these
# (defaults in configs/parts/model.py), so a field that only another model
# reads cannot be set by mistake and silently ignored.
FIELDS = {
    "mlp": ("hidden",),
    "lenet300": (),
    "convnet": ("depth", "width", "norm", "pooling"),
    "resnet20": (),
    "resnet10": (),
    "resnet18": (),
    "vgg16": (),
    "alexnet": (),
}
MODELS = tuple(FIELDS)
BATCHNORM_MODELS = ("resnet20", "resnet10", "resnet18", "vgg16")


def uses_batchnorm(cfg) -> bool:
  """Whether the model keeps running statistics (BatchNorm's batch_stats)."""
  return cfg.name in BATCHNORM_MODELS or cfg.get("norm") == "batch"


def check_config(cfg, section: str = "model") -> None:
  """One line naming the bad field or value, before any compute."""
  validate.choice(f"{section}.name", cfg.name, MODELS)
  expected, given = set(FIELDS[cfg.name]), set(cfg.keys()) - {"name"}
  if given - expected:
    raise validate.InputError(f"{section}.{sorted(given - expected)[0]} is not a field of model "
                              f"{cfg.name!r} (its fields: {', '.join(FIELDS[cfg.name]) or 'none'})")
  if expected - given:
    raise validate.InputError(
        f"{section} for {cfg.name!r} lacks {', '.join(sorted(expected - given))}: build it with "
        f"configs/parts/model.py get({cfg.name!r}), e.g. --config=configs/default.py:{cfg.name}")
  if cfg.name == "convnet":
    validate.choice(f"{section}.norm", cfg.norm, NORMS)
    validate.choice(f"{section}.pooling", cfg.pooling, POOLS)
    validate.positive(f"{section}.depth", cfg.depth)
    validate.positive(f"{section}.width", cfg.width)
  for w in cfg.get("hidden", ()):
    validate.positive(f"{section}.hidden entry", w)


def create(cfg, num_classes: int) -> nn.Module:
  """Builds the model named by config.model."""
  check_config(cfg)
  name = cfg.name
  if name == "mlp":
    return MLP(num_classes, tuple(cfg.hidden))
  if name == "lenet300":
    return MLP(num_classes, (300, 100))
  if name == "convnet":
    return ConvNet(num_classes, cfg.depth, cfg.width, cfg.norm, cfg.pooling)
  if name == "resnet20":  # Frankle et al.: 16-32-64, 3 blocks per stage
    return ResNet(num_classes, (16, 32, 64), (3, 3, 3), "batch")
  if name == "resnet10":  # IDC's CIFAR variant
    return ResNet(num_classes, (32, 64, 128, 256), (1, 1, 1, 1), "batch")
  if name == "resnet18":
    return ResNet(num_classes, (32, 64, 128, 256), (2, 2, 2, 2), "batch")
  if name == "vgg16":
    return VGG(num_classes)
  return AlexNet(num_classes)
