"""lmcjax entry point.

  python launch/main.py --config configs/default.py --workdir runs/default [--config.train.epochs=3]
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from lmcjax import cpu_runtime
from lmcjax import logs
from lmcjax import parallel
from lmcjax import pipeline
from lmcjax import train
from lmcjax import validate

config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl flag parsing; a bad config file, key or value is one line, not a traceback."""
  try:
    argv = flags.FLAGS(argv)
    flags.FLAGS.config.keys()  # config files load lazily: fail here, not mid-run
    return argv
  except Exception as e:  # pylint: disable=broad-except
    cause = e.__cause__ or e
    lines = [line.strip() for line in str(cause).replace("\\n", "\n").splitlines()
             if line.strip()]
    detail = " ".join(lines[-2:]) if lines else type(cause).__name__
    sys.exit(f"lmcjax: error: bad --config file or override: {type(cause).__name__}: {detail}")


def main(argv):
  del argv
  logs.quiet_library_logs()
  try:
    parallel.maybe_initialize_distributed(flags.FLAGS.config)
    pipeline.run(flags.FLAGS.config, flags.FLAGS.workdir)
  except (validate.InputError, train.NonFiniteLossError) as e:
    sys.exit(f"lmcjax: error: {e}")
  except OSError as e:  # a full disk or lost permissions mid-run
    sys.exit(f"lmcjax: error: cannot write {e.filename or flags.FLAGS.workdir!r}: "
             f"{e.strerror or e}; results written so far are complete, the rest is not")


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  app.run(main, flags_parser=parse_flags)
