"""The analysis stage and its measures (lmcjax/analysis/measures.py).

  stage.py          the stage: copies per model, measures, summary.json;
  targets.py        which models it analyses, and from which dense-run step;
  measures.py       the Measure interface, its contexts and the registry;
  interpolation.py  pairwise interpolation barriers (per model; figures);
  landscapes.py     loss landscape planes (per model);
  hessian.py        the Hessian of each model's first copy (per model; figures);
  instability.py    the barrier against the rewind epoch (across models);
  successive_rounds.py  the barrier between IMP's solutions of successive
                    rounds (across models; its own report section);
  inits.py          nets from other init seeds, shared by the two below;
  paths.py          aligned paths between two nets, shared by the two below;
  cross_seed.py     barriers between nets of different inits, naive and
                    aligned (across models; its own report section);
  mask_transfer.py  IMP masks trained from new inits, as they are and aligned
                    (across models; its own report section);
  pooling.py        helpers for the measures' `pool` hooks, which pool their
                    results.json rows over a sweep's init seeds.

A new measure is one module that builds a measures.Measure and one line below
that registers it; the order below is the order the measures run in.
"""
from lmcjax.analysis import measures
from lmcjax.analysis import interpolation
from lmcjax.analysis import landscapes
from lmcjax.analysis import hessian
from lmcjax.analysis import instability
from lmcjax.analysis import successive_rounds
from lmcjax.analysis import cross_seed
from lmcjax.analysis import mask_transfer
from lmcjax.analysis import stage
from lmcjax.analysis import targets

for _measure in (interpolation.MEASURE, landscapes.MEASURE, hessian.MEASURE,
                 instability.MEASURE, successive_rounds.MEASURE, cross_seed.MEASURE,
                 mask_transfer.MEASURE):
  measures.register(_measure)
del _measure

STAGE = stage.STAGE
check_config = stage.check_config
run_stage = stage.run_stage

__all__ = ("STAGE", "check_config", "run_stage", "measures", "interpolation", "landscapes",
           "hessian", "instability", "successive_rounds", "cross_seed", "mask_transfer", "stage",
           "targets")
