"""Seconds-long smoke run used by the tests: the default pipeline, tiny.

  python launch/main.py --config configs/smoke.py --workdir /tmp/lmcjax_smoke
"""
from lmcjax.configs import default
from lmcjax.configs.parts import model as model_part


def get_config():
  config = default.get_config()
  config.model = model_part.get("mlp", hidden=(32,))
  config.train.epochs = 2
  config.log_every_steps = 20
  config.stages = ("train",)
  return config
