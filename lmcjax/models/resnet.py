"""CIFAR ResNets: ResNet-20 (Frankle et al.) and IDC's ResNet-10/18."""
from typing import Sequence

import flax.linen as nn

from lmcjax.models import layers
from lmcjax.models import registry


class BasicBlock(nn.Module):
  width: int
  stride: int = 1
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Conv(self.width, (3, 3), self.stride, padding=1, use_bias=False)(x)
    y = nn.relu(layers.make_norm(self.norm, train, 0)(y))
    y = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(y)
    y = layers.make_norm(self.norm, train, 1)(y)
    if self.stride != 1 or x.shape[-1] != self.width:
      x = nn.Conv(self.width, (1, 1), self.stride, use_bias=False)(x)
      x = layers.make_norm(self.norm, train, 2)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """3x3 stem, no max-pool, stages of basic blocks, global avg pool."""
  num_classes: int
  stage_widths: Sequence[int] = (32, 64, 128, 256)
  blocks_per_stage: Sequence[int] = (2, 2, 2, 2)
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.stage_widths[0], (3, 3), padding=1, use_bias=False)(x)
    x = nn.relu(layers.make_norm(self.norm, train, 0)(x))
    for stage, (width, blocks) in enumerate(zip(self.stage_widths, self.blocks_per_stage)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(width, stride, self.norm)(x, train)
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def residual_permutation(module: ResNet):
  """Residual blocks add their input to their output, so every block of a
  stage (and the stem, for the first stage) shares one channel permutation.
  Declared, not derived: the module tree does not show the additions. The
  structure itself is built by the connectivity tools."""
  return {"residual_streams": tuple(module.stage_widths)}


def _resnet(name: str, stage_widths, blocks_per_stage) -> None:
  registry.register(ResNet, registry.Registration(
      name=name, build=lambda num_classes: ResNet(num_classes, stage_widths, blocks_per_stage),
      defaults={}, norm=lambda m: m.norm, piecewise_linear=True, classifier="Dense_0",
      permutation=residual_permutation))


_resnet("resnet20", (16, 32, 64), (3, 3, 3))  # Frankle et al.: 3 blocks per stage
_resnet("resnet10", (32, 64, 128, 256), (1, 1, 1, 1))  # IDC's CIFAR variant
_resnet("resnet18", (32, 64, 128, 256), (2, 2, 2, 2))
