"""config.model: a network's name and only that network's fields.

The fields each model reads are lmcjax.models.FIELDS; their defaults live here.
Switch the model of a config file with its argument, e.g.
--config=configs/default.py:convnet, rather than --config.model.name (which
would leave the old model's fields behind and is refused).
"""
import ml_collections

DEFAULTS = {
    "mlp": dict(hidden=(300, 100)),
    "lenet300": {},
    # ConvNet-3 of the distillation papers: 128 wide, instance norm, avg pool.
    "convnet": dict(depth=3, width=128, norm="instance", pooling="avg"),
    "resnet20": {},
    "resnet10": {},
    "resnet18": {},
    "vgg16": {},
    "alexnet": {},
}


def get(name: str, **overrides) -> ml_collections.ConfigDict:
  """config.model for `name` with its defaults, updated by overrides."""
  if name not in DEFAULTS:  # models.check_config gives the one-line error
    return ml_collections.ConfigDict(dict(name=name, **overrides))
  fields = dict(DEFAULTS[name], **overrides)
  return ml_collections.ConfigDict(dict(name=name, **fields))
