"""CIFAR-100 with ConvNet-3 (width 128, instance norm), otherwise the CIFAR-10 settings.

  python launch/prepare_data.py --dataset=cifar100
  python launch/main.py --config configs/cifar100_convnet.py --workdir runs/c100_convnet
"""
from lmcjax.configs import cifar10_convnet


def get_config():
  config = cifar10_convnet.get_config()
  config.data.name = "cifar100"
  return config
