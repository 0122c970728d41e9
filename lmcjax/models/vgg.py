"""VGG-16 for CIFAR."""
from typing import Any, Sequence

import flax.linen as nn

from lmcjax.models import layers
from lmcjax.models import registry

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
  """BatchNorm after every conv, one linear classifier."""
  num_classes: int
  layers: Sequence[Any] = VGG16_LAYERS
  norm: str = "batch"

  @nn.compact
  def __call__(self, x, train: bool = False):
    convs = 0
    for layer in self.layers:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2)) if x.shape[1] > 1 else x
      else:
        x = nn.Conv(layer, (3, 3), padding=1)(x)
        x = nn.relu(layers.make_norm(self.norm, train, convs)(x))
        convs += 1
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


registry.register(VGG, registry.Registration(
    name="vgg16", build=VGG, defaults={}, norm=lambda m: m.norm, piecewise_linear=True,
    classifier="Dense_0", permutation="sequential"))
