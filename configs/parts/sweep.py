"""config.sweep: a grid of config overrides, one job per point (lmcjax/sweep.py).

Empty by default: a config without axes is a single job. A sweep config sets
the axes on top of a normal config, for instance seeds x mask sources:

  config.sweep.axes = (
      ("seeds.init", (0, 1, 2)),
      ("imp.sources", (("real",), ("distilled",))),
  )

Each axis is (dotted config path, values); the jobs are the cartesian product
in the order written, the last axis varying fastest, so job indices are stable
as long as the axes are. Run and merge with:

  python launch/sweep.py --config configs/X.py --workdir ROOT --list
  python launch/sweep.py --config configs/X.py --workdir ROOT --job_index 3
  sbatch --array=0-$((N-1)) launch/slurm.sh configs/X.py ROOT
  python launch/aggregate.py --workdir ROOT
"""
import ml_collections


def get_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      # Pairs (path, values), not a dict: ConfigDict keys cannot hold dots,
      # and the order of the axes fixes the job numbering.
      axes=(),
  ))
