"""Helpers for a measure's `pool` hook: its results.json rows of several init
seeds (one job each) grouped, with intervals over the seeds.

A row of one seed's results.json table is one measurement (a model, a path,
a transfer); the same measurement in another seed's job has the same key
(model name, source, round, alignment...). Values a job measured several
times (the pairs of nets, the new inits) stay grouped by seed, so the
intervals come from the hierarchical bootstrap of lmcjax.stats, seeds first:
pairs within a seed share nets, and only the seeds are independent.
"""
from typing import Any, Callable, Dict, Hashable, List, Mapping, Sequence

import numpy as np

from lmcjax import stats

Row = Dict[str, Any]
PerSeed = Mapping[Any, Mapping[str, Any]]  # {seed: that seed's results.json}


def rows_by_key(per_seed: PerSeed, table: str,
                key: Callable[[Row], Hashable]) -> Dict[Hashable, Dict[Any, Row]]:
  """{key(row): {seed: row}} over every seed's results[table] rows, in the order
  the keys first appear."""
  out: Dict[Hashable, Dict[Any, Row]] = {}
  for seed, results in per_seed.items():
    for row in results.get(table, []):
      out.setdefault(key(row), {})[seed] = row
  return out


def values_by_seed(by_seed: Mapping[Any, Row], value: Callable[[Row], Any]) -> Dict[Any, List]:
  """{seed: [values]}: value(row) is a number or a list of them (pairs, inits)."""
  out = {}
  for seed, row in by_seed.items():
    v = value(row)
    out[seed] = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
  return out


def ci_over_seeds(by_seed: Mapping[Any, Row], value: Callable[[Row], Any]) -> Dict[str, Any]:
  """Mean and hierarchical bootstrap CI of value(row) over seeds (and its values within)."""
  return stats.barrier_ci(values_by_seed(by_seed, value))


def accuracy_over_seeds(by_seed: Mapping[Any, Row], value: Callable[[Row], Any],
                        num_test: int) -> Dict[str, Any]:
  """The t-interval of the per-seed mean accuracies (lmcjax.stats.mean_accuracy_ci)."""
  means = [float(np.mean(v)) for v in values_by_seed(by_seed, value).values()]
  return {**stats.mean_accuracy_ci(means, num_test), "unit": "seed mean"}


def paired_by_seed(a: Mapping[Any, Row], b: Mapping[Any, Row], value: Callable[[Row], Any],
                   name_a: str, name_b: str, quantity: str) -> Dict[str, Any]:
  """stats.paired_difference of value over the seeds a and b share."""
  return stats.paired_difference(values_by_seed(a, value), values_by_seed(b, value),
                                 name_a, name_b, quantity)


def matched_pairs(groups: Mapping[Hashable, Mapping[Any, Row]],
                  match: Callable[[Row], Hashable]) -> List[Sequence[Hashable]]:
  """(key_a, key_b) of every two groups whose rows agree on match(row) (e.g. the
  same sparsity and alignment, different sources), in key order."""
  keys = list(groups)
  first = {k: first_row(groups[k]) for k in keys}
  return [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]
          if match(first[a]) == match(first[b])]


def seeds_text(groups: Mapping[Hashable, Mapping[Any, Row]]) -> str:
  """'N init seeds (a, b, ...)': the seeds that recorded the measure (a sweep's
  jobs may leave a measure off some seeds)."""
  seeds = list(dict.fromkeys(seed for by_seed in groups.values() for seed in by_seed))
  plural = "s" if len(seeds) != 1 else ""
  return f"{len(seeds)} init seed{plural} ({', '.join(map(str, seeds))})"


def first_row(by_seed: Mapping[Any, Row]) -> Row:
  return next(iter(by_seed.values()))


def comparison_lines(comparisons: Sequence[Mapping[str, Any]]) -> str:
  return "\n".join(f"- {c['sentence']}" for c in comparisons)
