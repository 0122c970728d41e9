"""ConvNet-D of dataset distillation (DC, DSA, DM, IDC, MTT)."""
import flax.linen as nn

from lmcjax import validate
from lmcjax.models import layers
from lmcjax.models import registry

POOLS = ("avg", "max")


class ConvNet(nn.Module):
  """depth x [conv3x3, norm, relu, pool 2], then one linear classifier."""
  num_classes: int
  depth: int = 3
  width: int = 128
  norm: str = "instance"
  pooling: str = "avg"

  @nn.compact
  def __call__(self, x, train: bool = False):
    pool = nn.avg_pool if self.pooling == "avg" else nn.max_pool
    for i in range(self.depth):
      x = nn.Conv(self.width, (3, 3), padding=1)(x)
      x = nn.relu(layers.make_norm(self.norm, train, i)(x))
      x = pool(x, (2, 2), strides=(2, 2))
    return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


def _check(cfg, section: str) -> None:
  validate.choice(f"{section}.norm", cfg.norm, registry.NORMS)
  validate.choice(f"{section}.pooling", cfg.pooling, POOLS)
  validate.positive(f"{section}.depth", cfg.depth)
  validate.positive(f"{section}.width", cfg.width)


registry.register(ConvNet, registry.Registration(
    name="convnet", build=ConvNet,
    # ConvNet-3 of the distillation papers: 128 wide, instance norm, avg pool.
    defaults=dict(depth=3, width=128, norm="instance", pooling="avg"),
    norm=lambda m: m.norm, piecewise_linear=True, classifier="Dense_0",
    permutation="sequential", check=_check))
