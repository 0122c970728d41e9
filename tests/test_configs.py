"""Every config file builds, validates, and gives its command line in its docstring."""
import glob
import importlib
import os

import pytest

from conftest import REPO
from lmcjax import pipeline

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not p.endswith("__init__.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_and_documents_its_command(name):
  module = importlib.import_module(f"lmcjax.configs.{name}")
  assert f"configs/{name}.py" in module.__doc__, "the docstring must give the command line"
  config = module.get_config()
  pipeline.check_config(config)  # raises InputError on any bad value
  assert config.stages


def test_default_runs_the_whole_pipeline():
  config = importlib.import_module("lmcjax.configs.default").get_config()
  assert config.stages == ("distill", "train", "imp", "analysis", "report")
  assert config.data.name == "mnist5k"  # offline
