"""The cross-seed measure (config.analysis.cross_seed): linear mode connectivity
between nets from different init seeds (Entezari et al. 2022; Ainsworth et al. 2023).

For the dense net and each analysed mask (by default each source's sparsest
analysed round), num_inits nets from different inits (lmcjax.analysis.inits:
init 0 is the config's own) are trained alike: dense, or under the run's IMP
mask, the same for every init (with align_masks, init i trains the mask
permuted into its basin instead). Every pair of them is interpolated naively,
after weight matching and after activation matching (net j's units aligned to
net i's), each with the running statistics interpolated and with the
correction that applies: REPAIR for nets without BatchNorm, BN reset for BN
nets. Barriers carry 95% CIs over the pairs (lmcjax.stats).

Across models: DIR/analysis/cross_seed.json (every path), the figures
cross_seed_BNMODE.png and the record summary.json['cross_seed'].
"""
import itertools
import os
from typing import Any, Dict, List, Optional, Tuple

import ml_collections

from lmcjax import logs
from lmcjax import plots
from lmcjax import progress
from lmcjax import stats
from lmcjax import validate
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import interpolation
from lmcjax.analysis import measures
from lmcjax.analysis import paths as paths_lib
from lmcjax.analysis import pooling

PyTree = Any
NAME = "cross_seed"
ALIGNMENTS = ("naive", "weight_matching", "activation_matching")

DEFAULTS = ml_collections.ConfigDict(dict(
    enabled=False,
    num_inits=3,  # init 0 is the config's own; pairs: num_inits * (num_inits - 1) / 2
    include_dense=True,
    sources=(),  # () = every analysed source
    rounds=(),  # () = each source's sparsest analysed round
    # True: init i >= 1 trains the mask permuted into its basin by activation
    # matching of the dense nets (as mask_transfer's aligned masks), not the mask itself.
    align_masks=False,
    split="test",  # the split the paths are evaluated on
    num_alphas=11,
    # () = 'interpolate' and the correction that applies: 'repair' (REPAIR)
    # for nets without BatchNorm, 'reset' for BatchNorm nets.
    bn_modes=(),
    correction_batches=8,  # training batches REPAIR and BN reset measure on
    correction_batch_size_examples=256,
    weight_matching_iterations=100,
    chunk_examples=256,  # examples per step of activation matching
    chunk_alphas=8,  # alphas per vmapped evaluation (execution 'vmapped')
))


# ---------------------------------------------------------------- config


def check(config) -> None:
  c = config.analysis[NAME]
  if not c.enabled:
    return
  paths_lib.check_paths(config, NAME)
  validate.positive(f"analysis.{NAME}.weight_matching_iterations", c.weight_matching_iterations)


def cost(config, c, sizes: measures.Sizes) -> measures.Cost:
  """num_inits nets of the dense net and of each mask (lmcjax.analysis.inits),
  each net's test accuracy and every pair's paths."""
  planned = inits_lib.planned_models(config, c)
  nets, moves = inits_lib.planned_nets(config, sizes, c.num_inits, planned, c.align_masks,
                                       with_dense=c.include_dense or c.align_masks)
  models_measured = len(planned) + int(c.include_dense)
  pairs = interpolation.num_pairs(c.num_inits) * paths_lib.pair_cost(c, sizes, ALIGNMENTS)
  own = models_measured * (pairs + c.num_inits * sizes.examples["test"])
  return measures.Cost(nets, {**moves, (NAME, "paths"): own})


# ---------------------------------------------------------------- the measure


def _models(c, analysed) -> List[Tuple[str, Optional[Any], Optional[PyTree]]]:
  """(name, ModelId or None for dense, mask) of every model measured."""
  out = [("dense", None, None)] if c.include_dense else []
  return out + [(model.name, model, mask)
                for model, mask in inits_lib.selected(c, analysed, NAME)]


def _nets(inits, c, model, mask) -> List[Tuple[PyTree, Optional[PyTree]]]:
  """(variables, mask) of each init's net of one model."""
  if model is None:
    return [(inits.dense(i), None) for i in range(c.num_inits)]
  return [inits.sparse(i, model, mask, aligned=c.align_masks) for i in range(c.num_inits)]


def _measure_model(paths: paths_lib.Paths, c, name, model, mask) -> Dict[str, Any]:
  s = paths.ctx.setup
  nets = _nets(paths.inits, c, model, mask)
  accuracy = [paths.inits.accuracy(v) for v, _ in nets]
  pairs = []
  for i, j in itertools.combinations(range(len(nets)), 2):
    for record in paths.measure(nets[i][0], nets[j][0], nets[i][1], nets[j][1], ALIGNMENTS,
                                (name, i, j)):
      pairs.append({"i": i, "j": j, **record})
  return {"source": "dense" if model is None else model.source,
          "round": None if model is None else model.round,
          "sparsity": inits_lib.sparsity(s, mask), "test_accuracy": accuracy,
          "test_accuracy_ci": stats.mean_accuracy_ci(accuracy, int(s.x_test.shape[0])),
          "barriers": paths_lib.barrier_cis(s, pairs), "pairs": pairs}


def run_across(ctx: measures.StageContext, c) -> Dict[str, Any]:
  """Barriers between nets of different inits, per model, alignment and BN mode."""
  s = ctx.setup
  inits = inits_lib.Inits(s, ctx.workdir, ctx.log, c.chunk_examples)
  paths = paths_lib.Paths(ctx, c, inits, NAME)
  todo = _models(c, ctx.analysed)
  shown = progress.Progress(NAME, len(todo), "models", every_s=0)
  out_models = {}
  for name, model, mask in todo:
    out_models[name] = _measure_model(paths, c, name, model, mask)
    shown.update(len(out_models), name)
  stem = os.path.join(ctx.out_dir, NAME)
  logs.write_json(stem + ".json", {"models": out_models})
  out = {"split": c.split, "num_inits": c.num_inits, "align_masks": bool(c.align_masks),
         "seed": s.config.seeds.init, "bn_modes": list(paths.modes),
         "start": inits_lib.start_text(s), "paths": stem + ".json",
         "models": {n: dict(m, pairs=paths_lib.without_curves(m["pairs"]))
                    for n, m in out_models.items()}}
  out["figures"] = {mode: plot(f"{stem}_{mode}", out, mode) for mode in paths.modes}
  return out


def plot(stem: str, record: Dict[str, Any], mode: str) -> str:
  """Error barrier % [95% CI] against the alignment, one line per model."""
  series = {name: [{"x": k, **{q: m["barriers"][f"{alignment}/{mode}"]["error_barrier_ci"][q]
                               for q in ("estimate", "low", "high")}}
                   for k, alignment in enumerate(ALIGNMENTS)]
            for name, m in record["models"].items()}
  return plots.plot_ci_lines(
      stem, series, "alignment", f"{record['split']} error barrier (%), 95% CI",
      f"nets of {record['num_inits']} inits, BN {mode}",
      xticklabels=("naive", "weight matching", "activation matching"))


# ---------------------------------------------------------------- report


def records(record: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One flat row per model, alignment and BN mode."""
  rows = []
  for name, m in record.get("models", {}).items():
    for alignment, mode in itertools.product(ALIGNMENTS, record["bn_modes"]):
      b = m["barriers"][f"{alignment}/{mode}"]
      rows.append({"model": name, "source": m["source"], "round": m["round"],
                   "sparsity": m["sparsity"], "alignment": alignment, "bn_mode": mode,
                   "split": record["split"], "num_inits": record["num_inits"],
                   "align_masks": record["align_masks"], "seed": record["seed"],
                   "test_accuracy_ci": m["test_accuracy_ci"], **b})
  return rows


def report(workdir: str, analysis: Dict[str, Any]) -> measures.Report:
  record = analysis.get(NAME)
  if not record:
    return measures.Report({}, [])
  rows = records(record)
  table = logs.markdown_table(
      ["model", "sparsity", "alignment", "BN", "error barrier % [95% CI]",
       "chord error barrier % [95% CI]", "nets' test acc % [95% CI]"],
      [[r["model"], f"{100 * r['sparsity']:.1f}%", r["alignment"], r["bn_mode"],
        stats.format_ci(r["error_barrier_ci"]), stats.format_ci(r["error_barrier_chord_ci"]),
        stats.format_ci(r["test_accuracy_ci"])] for r in rows])
  masks_text = ("init i >= 1 trains the mask permuted into its basin (activation matching of "
                "the dense nets)" if record["align_masks"] else "every init trains the same mask")
  lines = ["## Connectivity across init seeds",
           f"Nets from {record['num_inits']} init seeds (init 0 is the config's own) per model; "
           f"for a sparse model the run's IMP mask of that round ({masks_text}). "
           f"{record['start']} Every pair is interpolated naively, after weight matching and "
           "after activation matching (Ainsworth et al. 2023), with the statistics interpolated "
           "and corrected (BN 'repair': REPAIR, Jordan et al. 2023; 'reset': BatchNorm "
           f"statistics recomputed), on the {record['split']} split. The CI is a bootstrap over "
           "the pairs, which share nets, so it is too narrow.", table]
  for mode, png in record.get("figures", {}).items():
    lines.append(f"![cross-seed barriers, BN {mode}]({os.path.relpath(png, workdir)})")
  return measures.Report({NAME: rows}, lines)


# ---------------------------------------------------------------- pooled over seeds


def _pooled_row(by_seed: Dict[Any, Dict[str, Any]]) -> Dict[str, Any]:
  first = pooling.first_row(by_seed)
  return {**{k: first[k] for k in ("model", "source", "round", "sparsity", "alignment",
                                    "bn_mode", "split", "num_inits", "align_masks")},
          "pairs_by_seed": {str(s): r["error_barriers"] for s, r in by_seed.items()},
          "error_barrier_ci": pooling.ci_over_seeds(by_seed, lambda r: r["error_barriers"]),
          "error_barrier_chord_ci": pooling.ci_over_seeds(
              by_seed, lambda r: r["error_barrier_chords"]),
          "test_accuracy_ci": pooling.accuracy_over_seeds(
              by_seed, lambda r: r["test_accuracy_ci"]["estimate"],
              first["test_accuracy_ci"]["n"])}


def _pooled_comparisons(groups) -> List[Dict[str, Any]]:
  """Per model: naive against activation matching; per alignment: sparse
  sources against each other at matched sparsity. All paired by seed."""
  barriers = lambda r: r["error_barriers"]
  out = []
  for (model, alignment, mode), by_seed in groups.items():
    if alignment == "activation_matching" and (model, "naive", mode) in groups:
      out.append(pooling.paired_by_seed(groups[model, "naive", mode], by_seed, barriers,
                                        f"{model} naive", f"{model} activation-matched",
                                        "error barrier"))
  sparse = {k: v for k, v in groups.items() if pooling.first_row(v)["source"] != "dense"}
  match = lambda r: (round(r["sparsity"], 4), r["alignment"], r["bn_mode"])
  for a, b in pooling.matched_pairs(sparse, match):
    out.append(pooling.paired_by_seed(sparse[a], sparse[b], barriers, f"{a[0]} ({a[1]})",
                                      f"{b[0]} ({b[1]})", "error barrier"))
  return out


def pool(root: str, per_seed: pooling.PerSeed) -> measures.Report:
  """results.json['cross_seed'] of every seed pooled: barrier CIs over seeds
  and the pairs within each, per model, alignment and BN mode."""
  groups = pooling.rows_by_key(per_seed, NAME,
                               lambda r: (r["model"], r["alignment"], r["bn_mode"]))
  if not groups:
    return measures.Report({}, [])
  rows = [_pooled_row(by_seed) for by_seed in groups.values()]
  comparisons = _pooled_comparisons(groups)
  cell = {(r["model"], r["alignment"], r["bn_mode"]): r for r in rows}
  models_modes = list(dict.fromkeys((r["model"], r["bn_mode"]) for r in rows))
  table = logs.markdown_table(
      ["model", "sparsity", "BN"] + [f"{a.replace('_', ' ')} % [95% CI]" for a in ALIGNMENTS]
      + ["activation matching, chord % [95% CI]", "nets' test acc % [95% CI over seed means]"],
      [[m, f"{100 * cell[m, ALIGNMENTS[0], mode]['sparsity']:.1f}%", mode]
       + [stats.format_ci(cell[m, a, mode]["error_barrier_ci"]) if (m, a, mode) in cell else ""
          for a in ALIGNMENTS]
       + [stats.format_ci(cell[m, ALIGNMENTS[-1], mode]["error_barrier_chord_ci"]),
          stats.format_ci(cell[m, ALIGNMENTS[0], mode]["test_accuracy_ci"])]
       for m, mode in models_modes])
  first = rows[0]
  lines = ["## Connectivity across init seeds, pooled",
           f"Per job, nets from {first['num_inits']} inits of one model (init 0 is the job's "
           f"own), every pair interpolated naively and after alignment, pooled over "
           f"{pooling.seeds_text(groups)}: {first['split']} error barrier (endpoint mean, "
           "and the chord definition after activation matching), hierarchical bootstrap over "
           "the seeds and the pairs within each.", table,
           "Paired by seed:\n" + pooling.comparison_lines(comparisons)]
  for mode in dict.fromkeys(r["bn_mode"] for r in rows):
    record = {"split": first["split"], "num_inits": first["num_inits"],
              "models": {m: {"barriers": {f"{a}/{mode}": cell[m, a, mode] for a in ALIGNMENTS}}
                         for m, md in models_modes if md == mode}}
    png = plot(os.path.join(root, f"pooled_{NAME}_{mode}"), record, mode)
    lines.append(f"![cross-seed barriers, BN {mode}]({os.path.relpath(png, root)})")
  return measures.Report({NAME: rows, f"{NAME}_comparisons": comparisons}, lines)


MEASURE = measures.Measure(
    name=NAME, section=NAME, check=check, run_across=run_across,
    splits=lambda c: (c.split,) if c.enabled else (), defaults=DEFAULTS, report=report,
    pool=pool, cost=cost)
