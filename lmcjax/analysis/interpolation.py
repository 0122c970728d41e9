"""The interpolation measure: every pairwise path between a model's copies.

Per model, on every eval split and BN mode (conditions): interpolation_SPLIT_BN.json
(each pair's path and barriers); records 'barriers' (mean/max/std over pairs
of interpolate.BARRIERS: error and loss, each in both definitions) and
'barrier_stats' (per-pair error barriers in both definitions and the copies'
test accuracy, with 95% CIs), both keyed by `where(split, bn_mode)`. Across
models: the interpolation curves and the barrier (endpoint mean) against
sparsity, of the first split and BN mode.
Its fields are config.analysis' own (num_alphas, eval_splits, bn_modes, ...).
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

from lmcjax import interpolate
from lmcjax import logs
from lmcjax import models
from lmcjax import plots
from lmcjax import rng
from lmcjax import stats
from lmcjax import validate
from lmcjax.analysis import measures
from lmcjax.connectivity import repair


def check(config) -> None:
  a = config.analysis
  validate.require(a.num_alphas >= 2, f"analysis.num_alphas must be >= 2, got {a.num_alphas!r}")
  validate.require(a.alpha_min <= 0.0 and a.alpha_max >= 1.0,
                   f"analysis alphas [{a.alpha_min}, {a.alpha_max}] must cover [0, 1]")
  validate.positive("analysis.chunk_alphas", a.chunk_alphas)
  validate.require(len(a.eval_splits) > 0, "analysis.eval_splits is empty")
  for split in a.eval_splits:
    validate.choice("analysis.eval_splits entry", split, measures.SPLITS)
  validate.require(len(a.bn_modes) > 0, "analysis.bn_modes is empty")
  for mode in a.bn_modes:
    validate.choice("analysis.bn_modes entry", mode, interpolate.BN_MODES)
  if "repair" in a.bn_modes:  # a model REPAIR does not apply to is refused with the reason
    check_repair(config, "analysis.bn_modes entry 'repair'")
  validate.positive("analysis.bn_reset_batches", a.bn_reset_batches)
  validate.positive("analysis.bn_reset_batch_size", a.bn_reset_batch_size)


def check_repair(config, what: str) -> None:
  """One line, before any compute, where REPAIR does not apply to config.model."""
  try:
    repair.check_applies(models.create(config.model, num_classes=10))
  except validate.InputError as e:
    raise validate.InputError(f"{what}: {e}") from None


def alphas(a) -> np.ndarray:
  """num_alphas evenly spaced from alpha_min to alpha_max, plus 0 and 1 (barriers)."""
  grid = interpolate.default_alphas(a.num_alphas, a.alpha_min, a.alpha_max)
  return np.union1d(grid, np.asarray([0.0, 1.0], np.float32)).astype(np.float32)


def where(split: str, bn_mode: str) -> str:
  """The key of one split and BN mode in the 'barriers' and 'barrier_stats' records."""
  return f"{split}/{bn_mode}"


def conditions(s, a) -> List[Tuple[str, str]]:
  """(split, BN mode) of every path, in the order measured; the first is the
  figures'. A BatchNorm net has its modes of analysis.bn_modes (check refuses
  'repair' for it); a net without BatchNorm has 'interpolate', and 'repair'
  where bn_modes lists it."""
  modes = bn_modes(bool(jax.tree.leaves(s.init_batch_stats)), a)
  return [(split, mode) for split in a.eval_splits for mode in modes]


def bn_modes(keeps_running_stats: bool, a) -> Tuple[str, ...]:
  """A BatchNorm net's modes are analysis.bn_modes; other nets' 'interpolate',
  and 'repair' where bn_modes lists it (`conditions`)."""
  if keeps_running_stats:
    return tuple(a.bn_modes)
  return ("interpolate",) + (("repair",) if "repair" in a.bn_modes else ())


def statistics_examples(num_train: int, batch_size: int, num_batches: int) -> int:
  """Examples in the statistics batches interpolate.bn_batches draws."""
  count, batch = interpolate.bn_batch_shape(num_train, batch_size, num_batches)
  return count * batch


def path_cost(sizes: measures.Sizes, num_alphas: int, split: str, mode: str,
              statistics: int) -> int:
  """Forward examples of one path: every alpha on `split`, and what its BN mode
  measures on `statistics` training examples: 'reset' the running statistics
  at every alpha (a BatchNorm net; others run it as 'interpolate'), 'repair'
  both endpoints once and each repaired layer at every alpha, one layer at
  a time (lmcjax.connectivity.repair.repair_path)."""
  per_alpha = once = 0
  if mode == "reset" and models.info(sizes.module).keeps_running_stats:
    per_alpha = statistics
  elif mode == "repair":
    layers = repair.repaired_layers(sizes.module, sizes.variables, sizes.image_shape)
    per_alpha, once = len(layers) * statistics, 2 * statistics
  return num_alphas * (sizes.examples[split] + per_alpha) + once


def num_pairs(count: int) -> int:
  return count * (count - 1) // 2


def cost(config, a, sizes: measures.Sizes) -> measures.Cost:
  """Per model: every pair of copies, on each split and BN mode (`conditions`)."""
  del config
  modes = bn_modes(models.info(sizes.module).keeps_running_stats, a)
  statistics = statistics_examples(sizes.examples["train"], a.bn_reset_batch_size,
                                   a.bn_reset_batches)
  per_pair = sum(path_cost(sizes, alphas(a).size, split, mode, statistics)
                 for split in a.eval_splits for mode in modes)
  return measures.Cost(forward_examples={"paths": num_pairs(a.num_branches) * per_pair})


def statistics_batches(s, a, modes) -> Optional[Any]:
  """The training batches the 'reset' and 'repair' modes measure statistics
  on (the same for both, from the data-order seed); None where no mode does."""
  if not any(mode in ("reset", "repair") for mode in modes):
    return None
  return interpolate.bn_batches(s.x_train, a.bn_reset_batch_size, a.bn_reset_batches,
                                rng.named_key(s.config.seeds.data_order, "analysis", "bn"))


def run(ctx: measures.ModelContext, a) -> Dict[str, Any]:
  """Pairwise interpolation on every split and BN mode; writes one JSON each."""
  s = ctx.setup
  todo = conditions(s, a)
  bn_images = statistics_batches(s, a, [mode for _, mode in todo])
  out = {}
  for split, mode in todo:
    result = interpolate.pairwise(s.model, ctx.stacked, alphas(a), *ctx.splits[split],
                                  mask=ctx.mask, bn_mode=mode, bn_images=bn_images,
                                  eval_batch_size=s.config.eval_batch_size,
                                  chunk_alphas=a.chunk_alphas, execution=a.execution)
    logs.write_json(os.path.join(ctx.out_dir, f"interpolation_{split}_{mode}.json"), result)
    out[where(split, mode)] = result
  return out


def barrier_statistics(s, pairs: List[Dict[str, Any]], test_errors: List[float]) -> Dict[str, Any]:
  """Per-pair error barriers, in both definitions (interpolate.BARRIERS), and
  the copies' test accuracy, each with a 95% CI and the count behind it. One
  workdir is one init seed: the barrier CI is over pairs within it, which
  share copies (stats.barrier_ci warns)."""
  seed = s.config.seeds.init
  barriers = [p["error_barrier"] for p in pairs]
  chord = [p["error_barrier_chord"] for p in pairs]
  accuracy = [1.0 - e for e in test_errors]
  return {"error_barriers": barriers, "error_barrier_ci": stats.barrier_ci({seed: barriers}),
          "error_barriers_chord": chord,
          "error_barrier_chord_ci": stats.barrier_ci({seed: chord}),
          "test_accuracy": accuracy,
          "test_accuracy_ci": stats.mean_accuracy_ci(accuracy, int(s.x_test.shape[0]))}


def record(ctx: measures.ModelContext, a, paths: Dict[str, Any]) -> Dict[str, Any]:
  del a
  return {"barriers": {k: v["summary"] for k, v in paths.items()},
          "barrier_stats": {k: barrier_statistics(ctx.setup, v["pairs"], ctx.test_errors)
                            for k, v in paths.items()}}


def scalars(ctx: measures.ModelContext, rec: Dict[str, Any]) -> Dict[str, float]:
  del ctx
  return {f"{k}/error_barrier_mean": v["error_barrier_mean"] for k, v in rec["barriers"].items()}


def _ci_row(model: measures.Analysed, headline: str) -> Dict[str, float]:
  ci = model.summary["barrier_stats"][headline]["error_barrier_ci"]
  return {"x": 100 * model.summary["sparsity"], "estimate": ci["estimate"], "low": ci["low"],
          "high": ci["high"]}


def figures(ctx: measures.StageContext, a) -> Dict[str, str]:
  """The interpolation curves and the barrier against sparsity (one series per
  mask source, from the dense net), each with its numbers beside it."""
  split, mode = conditions(ctx.setup, a)[0]
  headline = where(split, mode)
  curves = [{"label": plots.curve_label(m.model.name, (p["i"], p["j"]), split, mode),
             "alphas": p["alphas"], "error": p["error"], "loss": p["loss"]}
            for m in ctx.analysed for p in m.outputs["interpolation"][headline]["pairs"]]
  files = {"interpolation": plots.plot_interpolation(os.path.join(ctx.out_dir, "interpolation"),
                                                     curves)}
  dense = [m for m in ctx.analysed if m.model.round is None]
  series: Dict[str, List[Dict[str, float]]] = {}
  for m in ctx.analysed:
    if m.model.round is not None:
      series.setdefault(m.model.source, [_ci_row(d, headline) for d in dense]).append(
          _ci_row(m, headline))
  if series:
    files["barrier_vs_sparsity"] = plots.plot_ci_lines(
        os.path.join(ctx.out_dir, "barrier_vs_sparsity"), series, "sparsity (%)",
        f"{headline} error barrier (%), 95% CI", "one seed: CI over pairs, which share copies")
  return files


MEASURE = measures.Measure(
    name="interpolation", section="", check=check, records=("barriers", "barrier_stats"),
    run=run, record=record, figures=figures, splits=lambda a: tuple(a.eval_splits),
    scalars=scalars, cost=cost)
