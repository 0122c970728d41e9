"""Merges the job workdirs of a sweep into ROOT/aggregate.json and ROOT/aggregate.md.

  python launch/aggregate.py --workdir ROOT [--columns=test_accuracy,barrier]
                             [--reference_root=ROOT2]

Unfinished and missing jobs are listed with their status. The finished jobs
are then pooled: over seeds (ROOT/pooled.md) when they differ only in seeds.*,
or per value of the one other axis they differ in (ROOT/dose_response.md: the
barrier and the distilled set's accuracy against that axis, and the barrier
against the set's accuracy; --reference_root ROOT2 adds the sources that
ROOT's jobs leave out from ROOT2's jobs of the same seeds). The command fails
when ROOT holds no job at all, and, after writing aggregate.md, when the jobs
differ in two non-seed axes.
"""
import os
import sys

from absl import app
from absl import flags

from lmcjax import aggregate
from lmcjax import validate

flags.DEFINE_string("workdir", None, "Sweep root: the directory holding the job workdirs.")
flags.DEFINE_list("columns", [], "Show only metric columns containing one of these substrings "
                  "in aggregate.md (aggregate.json keeps every column).")
flags.DEFINE_string("reference_root", "", "For a dose-response: a sweep root with the same "
                    "seeds whose jobs supply the sources the dose jobs leave out (real, "
                    "subset, random), as reference lines and paired comparisons.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  root = flags.FLAGS.workdir
  try:
    records = aggregate.aggregate(root, flags.FLAGS.columns, flags.FLAGS.reference_root)
  except validate.InputError as e:
    sys.exit(f"lmcjax: error: {e}")
  except OSError as e:
    sys.exit(f"lmcjax: error: cannot write {e.filename or root!r}: {e.strerror or e}")
  statuses = [r["status"] for r in records]
  counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
  print(f"{len(records)} jobs ({counts}) -> {os.path.join(root, 'aggregate.md')}")


if __name__ == "__main__":
  app.run(main)
