"""Confidence intervals for every number in the report, with the count behind each.

lmcjax reports three kinds of number: test accuracies (a fraction of n test
examples), error barriers (one per pair of SGD-noise copies, grouped by init
seed) and paired differences between mask sources at matched sparsity. Each
function here returns a plain json-ready dict with the estimate, an interval,
the counts it rests on and a "method" string, so no table shows a number
without saying how sure it is and why.

Pure numpy; every random draw comes from the integer `seed` argument.
"""
import math
import statistics
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lmcjax import validate


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_level(level: float) -> None:
  validate.fraction_open("level", level)


def _sample(name: str, values: Any) -> np.ndarray:
  """A non-empty 1-D float array of finite values, or a one-line InputError."""
  try:
    array = np.asarray(values, dtype=float)
  except (TypeError, ValueError):
    array = np.asarray([np.nan])
  ok = array.ndim == 1 and array.size > 0 and bool(np.all(np.isfinite(array)))
  validate.require(ok, f"{name} must be a non-empty 1-D sequence of finite numbers, "
                       f"got {values!r:.80}")
  return array


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
  low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)


def _student_t_quantile(level: float, df: int) -> float:
  """Two-sided critical value t with P(|T| <= t) = level (numpy only: scipy is not in CORE).

  With x = sqrt(df) tan(u) the t density becomes proportional to cos(u)^(df-1)
  on [0, pi/2): smooth and bounded, so a cumulative trapezoid on a fine grid
  inverts it accurately for every df >= 1, including the heavy-tailed df=1.
  """
  u = np.linspace(0.0, np.pi / 2, 20001)
  density = np.cos(u) ** (df - 1)
  mass = np.concatenate([[0.0], np.cumsum(density[1:] + density[:-1])])
  return float(math.sqrt(df) * math.tan(np.interp(level, mass / mass[-1], u)))


def binomial_ci(successes: int, n: int, level: float = 0.95) -> dict:
  """Wilson score interval for a proportion of successes out of n.

  Wilson rather than the normal (Wald) interval because accuracies sit near 1,
  where Wald's interval shrinks to zero width and spills over 1.
  """
  validate.require(_is_int(n) and n > 0, f"n must be a positive integer, got {n!r}")
  validate.require(_is_int(successes) and 0 <= successes <= n,
                   f"successes must be an integer in [0, n={n}], got {successes!r}")
  _check_level(level)
  z = statistics.NormalDist().inv_cdf((1 + level) / 2)
  p = successes / n
  shrink = 1 + z * z / n
  center = (p + z * z / (2 * n)) / shrink
  half = z / shrink * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return {"estimate": p, "low": max(0.0, center - half), "high": min(1.0, center + half),
          "n": int(n), "level": float(level),
          "method": "Wilson score interval over n test examples"}


def accuracy_ci(accuracy: float, n: int, level: float = 0.95) -> dict:
  """binomial_ci from a fraction correct (successes = round(accuracy * n))."""
  is_number = isinstance(accuracy, (int, float, np.number)) and np.isfinite(accuracy)
  validate.require(is_number and 0 <= accuracy <= 1,
                   f"accuracy must be in [0, 1], got {accuracy!r}")
  validate.require(_is_int(n) and n > 0, f"n must be a positive integer, got {n!r}")
  return binomial_ci(int(round(accuracy * n)), n, level)


def mean_accuracy_ci(accuracies: Sequence[float], n: int, level: float = 0.95,
                     seed: int = 0) -> dict:
  """Mean accuracy of several nets trained alike, each tested on the same n examples.

  A t-interval over nets (with 2-5 nets a percentile bootstrap is far too
  narrow). It carries training noise but not the test-set sampling error all
  nets share, so it is never allowed to be narrower than the Wilson interval of
  the mean; nets that agree exactly would otherwise get a zero-width interval.
  `seed` is unused (nothing is drawn) and kept so every interval takes one.
  """
  del seed
  values = _sample("accuracies", accuracies)
  validate.require(bool(np.all((values >= 0) & (values <= 1))),
                   f"accuracies must be in [0, 1], got {accuracies!r:.80}")
  wilson = accuracy_ci(float(values.mean()), n, level)
  if len(values) == 1:
    return {**wilson, "count": 1,
            "method": "Wilson score interval over n test examples (one net: no spread over nets)"}
  mean = float(values.mean())
  half = (_student_t_quantile(level, len(values) - 1) * values.std(ddof=1)
          / math.sqrt(len(values)))
  return {"estimate": mean, "low": float(max(0.0, min(mean - half, wilson["low"]))),
          "high": float(min(1.0, max(mean + half, wilson["high"]))), "count": len(values),
          "n": int(n), "level": float(level),
          "method": f"t-interval over {len(values)} nets (same {n} test examples), "
                    "never narrower than the Wilson interval of the mean"}


def bootstrap_ci(values: Sequence[float], level: float = 0.95, num_resamples: int = 2000,
                 seed: int = 0, statistic: Callable[..., Any] = np.mean) -> dict:
  """Percentile bootstrap over a 1-D sample of independent values.

  `statistic` must accept `axis=` (np.mean, np.median): all resamples are
  reduced in one vectorized call.
  """
  sample = _sample("values", values)
  _check_level(level)
  validate.positive("num_resamples", num_resamples)
  estimate = float(statistic(sample))
  result = {"estimate": estimate, "count": len(sample), "level": float(level)}
  if len(sample) == 1:
    return {**result, "low": estimate, "high": estimate, "method": "single value: no interval"}
  rng = np.random.default_rng(seed)
  resampled = sample[rng.integers(0, len(sample), (num_resamples, len(sample)))]
  low, high = _percentiles(statistic(resampled, axis=1), level)
  return {**result, "low": low, "high": high,
          "method": f"percentile bootstrap over {len(sample)} values ({num_resamples} resamples)"}


def _groups(name: str, by_seed: Mapping[Any, Sequence[float]]) -> dict:
  """Seed -> finite 1-D array, in a fixed key order so draws do not depend on dict order."""
  validate.require(isinstance(by_seed, Mapping) and len(by_seed) > 0,
                   f"{name} must be a non-empty mapping seed -> values, got {by_seed!r:.80}")
  return {key: _sample(f"{name}[{key!r}]", by_seed[key]) for key in sorted(by_seed, key=str)}


def _hierarchical_draws(groups: list, seed_choice: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
  """Per resample and slot, the mean of the chosen seed's values resampled with replacement.

  seed_choice is (num_resamples, slots) indices into groups; it is an argument
  so that two sources compared by seed can share the same seed draw.
  """
  num_resamples, slots = seed_choice.shape
  means = np.stack([g[rng.integers(0, len(g), (num_resamples, slots, len(g)))].mean(axis=-1)
                    for g in groups])
  return means[seed_choice, np.arange(num_resamples)[:, None], np.arange(slots)[None, :]]


def _dependence(groups: list) -> dict:
  """The caveat that goes with an interval built from pairs of copies."""
  if len(groups) >= 2:
    return {"note": "pairs within a seed share copies and are not independent; the interval "
                    "rests on the spread between seeds, which are"}
  pairs = len(groups[0])
  if pairs == 1:
    return {"warning": "one pair from one seed: no interval can be drawn"}
  copies = (1 + math.sqrt(1 + 8 * pairs)) / 2
  count = f"{int(copies)} copies give {pairs} pairs" if copies == int(copies) else f"{pairs} pairs"
  return {"warning": f"pairs that share a copy are not independent ({count}); "
                     "the interval over pairs is too narrow"}


def barrier_ci(barriers_by_seed: Mapping[Any, Sequence[float]], level: float = 0.95,
               num_resamples: int = 2000, seed: int = 0) -> dict:
  """Mean error barrier over init seeds, each holding the barriers of its pairs of copies.

  Hierarchical because the N(N-1)/2 pairs of one seed share copies and an
  init: pooled as one sample they pass for many independent draws and the
  interval comes out far too narrow. Seeds are independent, so they are
  resampled first, then the pairs inside each chosen seed.
  """
  groups = list(_groups("barriers_by_seed", barriers_by_seed).items())
  _check_level(level)
  validate.positive("num_resamples", num_resamples)
  arrays = [values for _, values in groups]
  estimate = float(np.mean([values.mean() for values in arrays]))
  result = {"estimate": estimate, "num_seeds": len(arrays), "num_pairs": sum(map(len, arrays)),
            "pairs_per_seed": {str(key): len(values) for key, values in groups},
            "level": float(level), **_dependence(arrays)}
  if result["num_pairs"] == 1:
    return {**result, "low": estimate, "high": estimate,
            "method": "one seed and one pair: no interval"}
  rng = np.random.default_rng(seed)
  choice = rng.integers(0, len(arrays), (num_resamples, len(arrays)))
  low, high = _percentiles(_hierarchical_draws(arrays, choice, rng).mean(axis=1), level)
  method = (f"hierarchical bootstrap over {len(arrays)} seeds and the pairs within each"
            if len(arrays) >= 2 else f"bootstrap over {len(arrays[0])} pairs within one seed")
  return {**result, "low": low, "high": high, "method": f"{method} ({num_resamples} resamples)"}


def _decimals(values: Sequence[float], digits: int) -> int:
  """Decimals that give the interval's width `digits` significant digits.

  That is the precision the data support.
  """
  reference = (max(values) - min(values)) or max(map(abs, values)) or 1.0
  return min(6, max(0, digits - 1 - math.floor(math.log10(reference))))


def _format_numbers(values: Sequence[float], scale: float, digits: int) -> list:
  scaled = [v * scale for v in values]
  decimals = _decimals(scaled, digits)
  return [f"{round(v, decimals) + 0.0:.{decimals}f}" for v in scaled]  # + 0.0 turns -0.0 into 0.0


def _points(formatted: str) -> str:
  return "point" if formatted == "1" else "points"


def _difference_sentence(result: dict) -> str:
  a, b, quantity = result["a"], result["b"], result["quantity"]
  seeds = "1 seed" if result["num_seeds"] == 1 else f"{result['num_seeds']} seeds"
  ci = f"{result['level'] * 100:g}% CI"
  diff, low, high = result["difference"], result["low"], result["high"]
  if not result["separated"]:
    d, lo, hi = _format_numbers([diff, low, high], 100.0, 2)
    return (f"The data do not separate {a} from {b}: the difference in {quantity} ({a} minus {b}) "
            f"is {d} {_points(d)} ({ci} {lo} to {hi}, {seeds}).")
  direction = "lower" if diff < 0 else "higher"
  d, lo, hi = _format_numbers([abs(diff), -high, -low] if diff < 0 else [diff, low, high], 100.0, 2)
  sentence = (f"{_possessive(a)} {quantity} is {direction} than {_possessive(b)} by {d} "
              f"{_points(d)} ({ci} {lo} to {hi}, {seeds}): the data separate them.")
  return sentence[0].upper() + sentence[1:]


def _possessive(name: str) -> str:
  return name + ("'" if name.endswith("s") else "'s")


def paired_difference(a_by_seed: Mapping[Any, Sequence[float]],
                      b_by_seed: Mapping[Any, Sequence[float]], name_a: str, name_b: str,
                      quantity: str = "error barrier", level: float = 0.95,
                      num_resamples: int = 2000, seed: int = 0) -> dict:
  """Difference of means (a - b) between two sources, paired by init seed.

  Pairing by seed compares the sources on the same inits, so what an init adds
  to both cancels. With >= 2 shared seeds both sources share one draw of seeds
  (that is the pairing) and each resamples its own pairs within them; with one
  seed only pairs can be resampled, and they are not independent.
  """
  a, b = _groups("a_by_seed", a_by_seed), _groups("b_by_seed", b_by_seed)
  shared = [key for key in a if key in b]
  validate.require(bool(shared), f"{name_a} and {name_b} share no seed: {list(a)} vs {list(b)}")
  _check_level(level)
  validate.positive("num_resamples", num_resamples)
  groups_a, groups_b = [a[k] for k in shared], [b[k] for k in shared]
  difference = float(np.mean([ga.mean() - gb.mean() for ga, gb in zip(groups_a, groups_b)]))
  result = {"a": name_a, "b": name_b, "quantity": quantity, "difference": difference,
            "num_seeds": len(shared), "level": float(level),
            **_dependence(groups_a if len(groups_a[0]) <= len(groups_b[0]) else groups_b)}
  if len(shared) == 1 and min(len(groups_a[0]), len(groups_b[0])) == 1:
    return {**result, "low": difference, "high": difference, "separated": False,
            "method": "one seed with a single pair: no interval",
            "sentence": f"The {quantity} of {name_a} and {name_b} cannot be compared "
                        "from one pair in one seed."}
  rng = np.random.default_rng(seed)
  choice = rng.integers(0, len(shared), (num_resamples, len(shared)))
  draws = (_hierarchical_draws(groups_a, choice, rng)
           - _hierarchical_draws(groups_b, choice, rng)).mean(axis=1)
  low, high = _percentiles(draws, level)
  method = (f"bootstrap over {len(shared)} shared seeds and the pairs within each"
            if len(shared) >= 2
            else "bootstrap over pairs within one seed, independently for each source")
  result.update(low=low, high=high, separated=bool(low > 0 or high < 0),
                method=f"{method} ({num_resamples} resamples)")
  return {**result, "sentence": _difference_sentence(result)}


def _count_text(ci: dict) -> str:
  plural = lambda count, noun: f"{count} {noun}" + ("" if count == 1 else "s")
  if "num_seeds" in ci:
    pairs = [plural(ci["num_pairs"], "pair")] if "num_pairs" in ci else []
    return "n=" + ", ".join([plural(ci["num_seeds"], "seed")] + pairs)
  if "n" in ci and "count" in ci:
    return f"n={plural(ci['count'], ci.get('unit', 'net'))} x {ci['n']} test examples"
  return f"n={ci['n'] if 'n' in ci else ci['count']}"


def format_ci(ci: dict, scale: float = 100.0, digits: int = 2) -> str:
  """'6.4 [5.8, 7.1] (n=3 seeds, 9 pairs)': a table cell that always carries its count.

  Without an interval (one value, one pair) it says so rather than print a zero
  width, which would read as certainty.
  """
  estimate = ci["estimate"] if "estimate" in ci else ci["difference"]
  est, low, high = _format_numbers([estimate, ci["low"], ci["high"]], scale, digits)
  body = f"{est}, no interval" if ci["low"] == ci["high"] else f"{est} [{low}, {high}]"
  return f"{body} ({_count_text(ci)})"
