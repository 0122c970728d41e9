"""Seconds-long smoke run used by the tests: the default pipeline, tiny.

  python launch/main.py --config configs/smoke.py --workdir /tmp/lmcjax_smoke
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "mlp"
  config.model.hidden = (32,)
  config.train.epochs = 2
  config.log_every_steps = 20
  config.stages = ("train",)
  return config
