"""Seconds-long IMP run (tests, debugging): a 32-unit MLP on sklearn digits.

  python launch/main.py --config configs/imp_smoke.py --workdir /tmp/lmcjax_imp_smoke

Only real and random sources: 'distilled' needs a distilled set, e.g.
--config.imp.distilled_path=/path/synthetic.npz --config.imp.sources="('real','distilled')".
"""
from lmcjax.configs import smoke


def get_config():
  config = smoke.get_config()
  config.stages = ("imp",)
  config.data.name = "digits"  # 1.4k 8x8 images: a round takes well under a second
  config.imp.sources = ("real", "random")
  config.imp.rounds = 2
  config.imp.distilled_train.epochs = 10
  config.checkpoint_every_steps = 10
  config.log_every_steps = 0
  return config
