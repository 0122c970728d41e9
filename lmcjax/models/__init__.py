"""Flax linen models, chosen by name in config.model, each registered once.

Every model is called as `model.apply(variables, x, train=...)`; models with
BatchNorm keep running statistics in the 'batch_stats' collection. A new model
is one module that calls `register` (see registry.py and docs/design.md).
"""
# Importing the built-in models registers them (in this order: config help
# lists them so).
from lmcjax.models import mlp as _mlp
from lmcjax.models import convnet as _convnet
from lmcjax.models import resnet as _resnet
from lmcjax.models import vgg as _vgg
from lmcjax.models import alexnet as _alexnet
from lmcjax.models.alexnet import AlexNet
from lmcjax.models.convnet import ConvNet
from lmcjax.models.layers import BN_MOMENTUM, InstanceNorm
from lmcjax.models.mlp import MLP
from lmcjax.models.registry import (NORMS, ModelInfo, Registration, check_config, config, create,
                                    defaults, get, info, info_for_config, names, register,
                                    registration_of, unregister)
from lmcjax.models.resnet import ResNet
from lmcjax.models.vgg import VGG

del _mlp, _convnet, _resnet, _vgg, _alexnet

__all__ = [
    "AlexNet", "BN_MOMENTUM", "ConvNet", "InstanceNorm", "MLP", "ModelInfo", "NORMS",
    "Registration", "ResNet", "VGG", "check_config", "config", "create", "defaults", "get",
    "info", "info_for_config", "names", "register", "registration_of", "unregister",
]
