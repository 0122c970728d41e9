"""config.model: a network's name and only that network's fields.

Each model's fields and their defaults are declared where it is registered
(lmcjax/models/). Switch the model of a config file with its argument, e.g.
--config=configs/default.py:convnet, rather than --config.model.name (which
would leave the old model's fields behind and is refused).
"""
from lmcjax import models

get = models.config
