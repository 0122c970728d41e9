"""Dose-response of distilled IMP: configs/cifar10_small.py with DM at 200, 1,000, 4,000 iterations.

  python launch/sweep.py --config configs/cifar10_dose_response.py --workdir runs/c10dose --list
  python launch/sweep.py --config configs/cifar10_dose_response.py --workdir runs/c10dose \
      --job_index I --config.data.name=npz --config.data.npz_path=../shared/data/cifar10_5k.npz \
      --config.data.train_subset=0 --config.data.test_subset=0
  python launch/aggregate.py --workdir runs/c10dose --reference_root runs/c10s
      # -> dose_response.md and its figures

Distilled IMP differs from real IMP in two ways at once: 100 images instead
of 5,170, and images that were optimised. The 'subset' source (IMP with the
distilled source's recipe on the real images DM started from) is DM at 0
iterations. This sweep runs DM at 200, 1,000 (the study's value) and 4,000
iterations, so the distilled set's test accuracy rises and the barrier of
distilled-IMP masks can be read against it; every job also measures the
starting images' accuracy (DM at 0). Each job runs IMP and barriers
for the distilled source only: real, subset and random IMP do not depend on
the iteration count, so aggregate.py takes them, as reference lines, from the
study's sweep root (--reference_root: configs/cifar10_small.py, same seeds),
and pools the seeds within each iteration count.

9 jobs (3 seeds x 3 iteration counts). A job costs its distillation (~0.7 s
an iteration on 2 CPU cores: 2.5, 12 and 47 min) plus ~15 min of IMP and
barriers; a 1,000-iteration job whose workdir holds the study seed's distill
and train stages (copied with DIR/stages/{distill,train}.*.json) skips them.
"""
from lmcjax.configs import cifar10_small

DM_ITERATIONS = (200, 1000, 4000)


def get_config():
  config = cifar10_small.get_config()
  # Each seed distils its own set (distill.seed follows seeds.init unless set
  # on the command line): with one set for every seed, the set's accuracy
  # and its starting images would not vary between seeds, and the intervals
  # over seeds would leave out the set's own randomness.
  config.distill.seed = config.seeds.get_ref("init") + 0
  config.sweep.axes = (("seeds.init", (0, 1, 2)), ("distill.dm.iterations", DM_ITERATIONS))
  # DM at 0 iterations: the test accuracy of nets trained on the starting
  # images (the subset source's set), beside the distilled set's, in every
  # job: the 'subset' column of the set-accuracy table (3 more 300-epoch
  # trainings on 100 images, under a minute on 2 cores).
  config.distill.eval.initial = True
  # The dose-response reads the SGD-noise barriers only: the study's
  # connectivity measures (and the real-data retraining of every round that
  # successive rounds needs) would double each job's time.
  a = config.analysis
  a.successive_rounds.enabled = a.cross_seed.enabled = a.mask_transfer.enabled = False
  config.imp.retrain_rounds = "none"
  # Only the distilled source depends on distill.dm.iterations: real, subset
  # and random IMP (and their barriers) are the same in every job of a seed,
  # so the jobs leave them out and launch/aggregate.py --reference_root
  # draws them from the study's sweep root (same seeds, same recipe). The
  # landscape planes answer another question and cost 81 points a model.
  config.imp.sources = ("distilled",)
  a.landscape.kinds = ()
  return config
