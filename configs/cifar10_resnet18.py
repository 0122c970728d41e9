"""The paper's CIFAR-10 setting with IDC's ResNet-18 (widths 32-64-128-256, BatchNorm).

  python launch/main.py --config configs/cifar10_resnet18.py --workdir runs/c10_resnet18
"""
from lmcjax.configs import cifar10_convnet
from lmcjax.configs.parts import model as model_part


def get_config():
  config = cifar10_convnet.get_config()
  config.model = model_part.get("resnet18")
  return config
