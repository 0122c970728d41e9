"""Fully connected nets: MLP and LeNet-300-100."""
from typing import Sequence

import flax.linen as nn

from lmcjax import validate
from lmcjax.models import registry


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


def _check(cfg, section: str) -> None:
  for width in cfg.hidden:
    validate.positive(f"{section}.hidden entry", width)


_COMMON = dict(norm="none", piecewise_linear=True, permutation="sequential",
               classifier=lambda m: f"Dense_{len(m.hidden)}")
registry.register(MLP, registry.Registration(
    name="mlp", build=lambda num_classes, hidden: MLP(num_classes, tuple(hidden)),
    defaults=dict(hidden=(300, 100)), check=_check, **_COMMON))
registry.register(MLP, registry.Registration(
    name="lenet300", build=lambda num_classes: MLP(num_classes, (300, 100)), defaults={},
    **_COMMON))
