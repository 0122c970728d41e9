"""CIFAR ResNets: ResNet-20 (Frankle et al.) and IDC's ResNet-10/18."""
from typing import Sequence

import flax.linen as nn

from lmcjax import validate
from lmcjax.models import layers
from lmcjax.models import registry


class BasicBlock(nn.Module):
  width: int
  stride: int = 1
  norm: str = "batch"

  def has_shortcut(self, in_width: int) -> bool:
    """Whether the block projects its input (a 1x1 conv and norm) before the addition."""
    return self.stride != 1 or in_width != self.width

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Conv(self.width, (3, 3), self.stride, padding=1, use_bias=False)(x)
    y = nn.relu(layers.make_norm(self.norm, train, 0)(y))
    y = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(y)
    y = layers.make_norm(self.norm, train, 1)(y)
    if self.has_shortcut(x.shape[-1]):
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
        x = BasicBlock(width, _stride(stage, block), self.norm)(x, train)
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def _stride(stage: int, block: int) -> int:
  return 2 if stage > 0 and block == 0 else 1


def residual_permutation(module: ResNet, variables):
  """The permutation structure of a ResNet (lmcjax.connectivity.structure).

  A block adds its input to its output, so the stem, every block's second
  conv and every shortcut of a stage write one residual stream: its channels
  share one permutation ('stream_<stage>'), read by every block's first conv
  and shortcut and by the classifier. Each block's inner channels (its first
  conv's outputs) are a permutation of their own, named after that conv.
  Declared, not derived: the module tree does not show the additions.
  """
  # Imported here: the models package must not import the connectivity tools
  # (which import the model registry) when it registers its models.
  from lmcjax.connectivity import structure  # pylint: disable=g-import-not-at-top
  stream, width = "stream_0", module.stage_widths[0]
  wiring = {"Conv_0": (None, stream)}
  activations = {stream: ["Conv_0"]}  # the stem's output after its norm and ReLU
  index = 0
  for stage, (stage_width, blocks) in enumerate(zip(module.stage_widths,
                                                     module.blocks_per_stage)):
    out = f"stream_{stage}"
    for block in range(blocks):
      name = f"BasicBlock_{index}"
      wiring[f"{name}/Conv_0"] = (stream, f"{name}/Conv_0")
      wiring[f"{name}/Conv_1"] = (f"{name}/Conv_0", out)
      if BasicBlock(stage_width, _stride(stage, block)).has_shortcut(width):
        wiring[f"{name}/Conv_2"] = (stream, out)
      activations[f"{name}/Conv_0"] = [f"{name}/Conv_0"]
      activations.setdefault(out, []).append(name)  # after the addition and ReLU
      stream, width, index = out, stage_width, index + 1
  wiring["Dense_0"] = (stream, None)
  return structure.from_wiring(module, variables, wiring, activations)


def _check(cfg, section: str) -> None:
  validate.require(isinstance(cfg.width_multiplier, int) and cfg.width_multiplier > 0,
                   f"{section}.width_multiplier must be an integer > 0, "
                   f"got {cfg.width_multiplier!r}")


def _resnet(name: str, stage_widths, blocks_per_stage, **fields) -> None:
  """Registers a ResNet; `fields` are its config fields beyond the name."""

  def build(num_classes, width_multiplier=1):
    widths = tuple(width_multiplier * width for width in stage_widths)
    return ResNet(num_classes, widths, blocks_per_stage)

  registry.register(ResNet, registry.Registration(
      name=name, build=build, defaults=fields, check=_check if fields else None,
      norm=lambda m: m.norm, piecewise_linear=True, classifier="Dense_0",
      permutation=residual_permutation))


# Frankle et al.: 3 blocks per stage. width_multiplier widens every stage (4:
# the 4x-wide ResNet-20 of the Git Re-Basin experiments).
_resnet("resnet20", (16, 32, 64), (3, 3, 3), width_multiplier=1)
_resnet("resnet10", (32, 64, 128, 256), (1, 1, 1, 1))  # IDC's CIFAR variant
_resnet("resnet18", (32, 64, 128, 256), (2, 2, 2, 2))
