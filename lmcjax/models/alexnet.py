"""The AlexNet of the MTT code base."""
import flax.linen as nn

from lmcjax.models import registry


class AlexNet(nn.Module):
  """No norm, small classifier."""
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


registry.register(AlexNet, registry.Registration(
    name="alexnet", build=AlexNet, defaults={}, norm="none", piecewise_linear=True,
    classifier="Dense_0", permutation="sequential"))
