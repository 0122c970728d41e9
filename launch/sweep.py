"""Runs one job of a config's sweep (config.sweep.axes) into ROOT/<job name>.

  python launch/sweep.py --config configs/X.py --workdir ROOT --list
  python launch/sweep.py --config configs/X.py --workdir ROOT --job_index 3 \\
      [--config.train.epochs=3]
  python launch/aggregate.py --workdir ROOT

--list prints the jobs and their count; --count prints only the count (for
`sbatch --array=0-$((N-1))`, see launch/slurm.sh). Command-line overrides
apply to every job, then the job's own sweep values on top.
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Reuses launch/main.py's --config/--workdir flags and its one-line flag errors.
import main as main_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

from lmcjax import cpu_runtime  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from lmcjax import validate  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("job_index", None, "Which job of the sweep to run (0-based).")
flags.DEFINE_bool("list", False, "Print the jobs and their count, run nothing.")
flags.DEFINE_bool("count", False, "Print only the number of jobs, run nothing.")


def list_jobs(config) -> None:
  jobs = sweep.expand(config)
  for j in jobs:
    print(f"{j.index}\t{j.name}")
  print(f"{len(jobs)} jobs")


def main(argv):
  del argv
  config, root = flags.FLAGS.config, flags.FLAGS.workdir
  try:
    if flags.FLAGS.list or flags.FLAGS.count:
      list_jobs(config) if flags.FLAGS.list else print(sweep.num_jobs(config))
      return
    validate.require(flags.FLAGS.job_index is not None, "--job_index is required (or --list)")
    # A multi-host job (TPU pod, multi-node SLURM step) joins its peers first.
    if "parallel" in config:
      parallel.maybe_initialize_distributed(config)
    sweep.run_job(config, root, flags.FLAGS.job_index)
  except (validate.InputError, train.NonFiniteLossError) as e:
    sys.exit(f"lmcjax: error: {e}")
  except OSError as e:
    sys.exit(f"lmcjax: error: cannot write {e.filename or root!r}: {e.strerror or e}")


if __name__ == "__main__":
  cpu_runtime.configure()  # before JAX starts its CPU client
  app.run(main, flags_parser=main_lib.parse_flags)
