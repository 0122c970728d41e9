"""The successive-rounds measure (config.analysis.successive_rounds): for each
IMP mask source, the barrier between IMP's solutions of rounds k and k+1
(Paul et al., ICLR 2023, "Unmasking the Lottery Ticket Hypothesis": at higher
sparsities, successive solutions are linearly connected iff they are matching).

The solutions are IMP's real-data retrained nets (workdir.final_params; round
0 is the dense run), which IMP keeps for every round with
imp.retrain_rounds='all', and always for a source declared always_retrains
(lmcjax/mask_sources.py). Every round trains from IMP's one rewind point; the
record names its step, and the analysis copies' start step where it differs.

The mask along the path is m_k, round k's. IMP prunes round k's solution to
m_{k+1}, a subset of m_k, so both solutions, and every point of the segment
between them, are zero outside m_k: the path lies in m_k's axial subspace,
Paul et al.'s picture of IMP moving through nested subspaces, and m_k only
guards that. m_{k+1} would instead zero weights of round k's solution, making
the path start at its pruned projection, which no training produced. The
random source draws each mask afresh, so its masks need not nest: its paths
run under m_k | m_{k+1}, which is m_k where they do ('nested' in the record).

Across models: summary.json['successive_rounds'] (each path's barriers in
both definitions, interpolate.BARRIERS) and DIR/analysis/successive_rounds.png
with its curves in successive_rounds.json; results.json['successive_rounds']
and a report section (the `report` hook).
"""
import os
from typing import Any, Dict, List

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from lmcjax import checkpoints
from lmcjax import execution as execution_lib
from lmcjax import imp
from lmcjax import interpolate
from lmcjax import logs
from lmcjax import mask_sources
from lmcjax import masks
from lmcjax import plots
from lmcjax import progress
from lmcjax import stats
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import interpolation
from lmcjax.analysis import measures
from lmcjax.analysis import pooling
from lmcjax.analysis import targets

PyTree = Any
NAME = "successive_rounds"
DEFAULTS = ml_collections.ConfigDict(dict(
    enabled=False,
    num_alphas=11,  # evenly spaced over [0, 1], the endpoints included
    split="test",  # train | test | distilled
    # Running statistics along the path (interpolate.BN_MODES); 'reset' and
    # 'repair' measure them on the interpolation measure's bn_reset batches.
    bn_mode="interpolate",
))


def _keeps_every_round(config, source: str) -> bool:
  """Whether IMP keeps `source`'s retrained net at every round (imp.retrains)."""
  return config.imp.retrain_rounds == "all" or mask_sources.get(source).always_retrains


def check(config) -> None:
  c, what = config.analysis.successive_rounds, "analysis.successive_rounds"
  if not c.enabled:
    return
  validate.require(c.num_alphas >= 2, f"{what}.num_alphas must be >= 2, got {c.num_alphas!r}")
  validate.choice(f"{what}.split", c.split, measures.SPLITS)
  validate.choice(f"{what}.bn_mode", c.bn_mode, interpolate.BN_MODES)
  if c.bn_mode == "repair":
    interpolation.check_repair(config, f"{what}.bn_mode 'repair'")
  validate.require(config.imp.rounds >= 1, f"{what} needs IMP rounds 0 and 1 at least, "
                   f"got imp.rounds={config.imp.rounds}")
  unkept = [s for s in config.imp.sources if not _keeps_every_round(config, s)]
  validate.require(not unkept, f"{what} needs every round's retrained net, which IMP keeps for "
                   f"{', '.join(unkept)} only with imp.retrain_rounds='all' "
                   f"(got {config.imp.retrain_rounds!r})")


def _require_kept(wd: str, sources, rounds: int) -> None:
  """One line, before this measure's compute, naming the first missing net or mask."""
  for source in sources:
    for k in range(rounds + 1):
      for path, what in ((layout.final_params(wd, source, k), "retrained net"),
                         (layout.mask(wd, source, k), "mask")):
        validate.require(checkpoints.exists(path), f"analysis.successive_rounds: IMP kept no "
                         f"{what} of {source} round {k} ({path}); run the IMP stage here with "
                         "imp.retrain_rounds='all'")


def _solution(s, wd: str, source: str, k: int) -> PyTree:
  like = {"params": s.init_params, "batch_stats": s.init_batch_stats}
  return checkpoints.load_tree(layout.final_params(wd, source, k), like,
                               what=f"{source} round {k} retrained net")


def _path(ctx: measures.StageContext, c, source: str, k: int, bn_images) -> Dict[str, Any]:
  """The path from round k's solution to round k+1's, under m_k (module doc)."""
  s, a, wd = ctx.setup, ctx.analysis, ctx.workdir
  mask, next_mask = (imp.load_mask(s, wd, source, r) for r in (k, k + 1))
  nested = all(bool(jnp.all(n <= m)) for n, m in zip(jax.tree.leaves(next_mask),
                                                     jax.tree.leaves(mask)))
  path_mask = jax.tree.map(jnp.maximum, mask, next_mask)  # m_k where the masks nest
  stacked = execution_lib.stack([_solution(s, wd, source, r) for r in (k, k + 1)])
  result = interpolate.pairwise(s.model, stacked, interpolate.default_alphas(c.num_alphas),
                                *ctx.splits[c.split], mask=path_mask,
                                bn_mode=c.bn_mode, bn_images=bn_images,
                                eval_batch_size=s.config.eval_batch_size,
                                chunk_alphas=a.chunk_alphas, execution=a.execution)
  (path,) = result["pairs"]
  return {"source": source, "round": k, "next_round": k + 1,
          "sparsity": masks.sparsity(mask, s.prunable),
          "next_sparsity": masks.sparsity(next_mask, s.prunable), "nested": nested,
          "bn_mode": path["bn_mode"], "error_start": path["error"][0],
          "error_end": path["error"][-1], **{b: path[b] for b in interpolate.BARRIERS},
          "curve": {key: path[key] for key in ("alphas", "error", "loss")}}


def _figure(ctx: measures.StageContext, c, paths: List[Dict[str, Any]]) -> str:
  """One panel per path, named by its later round (SOURCE_rKK: round KK-1 to KK)
  so that it keeps its source's colour."""
  curves = [{"label": f"{p['source']}_r{p['next_round']:02d}", "split": c.split, **p["curve"]}
            for p in paths]
  return plots.plot_interpolation(os.path.join(ctx.out_dir, NAME), curves)


def run_across(ctx: measures.StageContext, c) -> Dict[str, Any]:
  """Every source's path between the solutions of each two successive rounds."""
  s, wd = ctx.setup, ctx.workdir
  sources, rounds = mask_sources.ordered(s.config.imp.sources), s.config.imp.rounds
  _require_kept(wd, sources, rounds)
  bn_images = interpolation.statistics_batches(s, ctx.analysis, (c.bn_mode,))
  shown = progress.Progress("successive rounds", len(sources) * rounds, "paths", every_s=0)
  paths = []
  for source in sources:
    for k in range(rounds):
      paths.append(_path(ctx, c, source, k, bn_images))
      shown.update(len(paths), f"{source} round {k} to {k + 1}: error barrier "
                   f"{paths[-1]['error_barrier']:.4f}")
  num_train = int(s.x_train.shape[0])
  rewind = imp.rewind_step(s.config, num_train)
  # The copies' start and the instability curve's epochs are rewind points too;
  # IMP's rounds, and so these paths, come from its one rewind point only.
  others = sorted({ctx.start_step, *targets.rewind_steps(s.config, num_train)} - {rewind})
  png = _figure(ctx, c, paths)
  logging.info("successive rounds: %d paths, rounds trained from step %d", len(paths), rewind)
  return {"split": c.split, "num_alphas": c.num_alphas, "imp_rewind_step": rewind,
          "rewind_schedule": s.config.imp.rewind_schedule, "other_analysed_steps": others,
          "analysis_start_step": ctx.start_step, "evaluated_under": "mask of round k",
          "png": png, "paths": [{k: v for k, v in p.items() if k != "curve"} for p in paths]}


def records(analysis: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Flat records, one per path (results.json['successive_rounds'])."""
  rec = analysis.get(NAME) or {}
  shared = {key: rec.get(key) for key in ("split", "imp_rewind_step", "rewind_schedule",
                                          "evaluated_under")}
  return [{**p, **shared, "seed": analysis.get("seed")} for p in rec.get("paths", [])]


def table(rows: List[Dict[str, Any]]) -> str:
  """Rows: paths; both barrier definitions of the error (%) and of the loss."""
  def row(r):
    return [r["source"], f"{r['round']} to {r['next_round']}",
            f"{100 * r['sparsity']:.1f}% to {100 * r['next_sparsity']:.1f}%",
            f"{100 * r['error_start']:.2f} / {100 * r['error_end']:.2f}",
            f"{100 * r['error_barrier']:.2f}", f"{100 * r['error_barrier_chord']:.2f}",
            f"{r['loss_barrier']:.3g}", f"{r['loss_barrier_chord']:.3g}"]
  return logs.markdown_table(
      ["source", "rounds", "sparsity", "endpoint errors %", "error barrier % (endpoint mean)",
       "error barrier % (chord)", "loss barrier (endpoint mean)", "loss barrier (chord)"],
      [row(r) for r in rows])


def _where_from(rec: Dict[str, Any]) -> str:
  text = (f"Every round trains from IMP's one rewind point, step {rec['imp_rewind_step']} of "
          f"the dense run ({rec['rewind_schedule']} schedule)")
  if rec.get("other_analysed_steps"):
    steps = ", ".join(map(str, rec["other_analysed_steps"]))
    text += (f"; the analysis also starts copies from step(s) {steps} of the dense run, which "
             "no IMP round trains from")
  return text + "."


def report(workdir: str, analysis: Dict[str, Any]) -> measures.Report:
  """results.json['successive_rounds'] and the '## Successive IMP rounds' section."""
  rows = records(analysis)
  if not rows:
    return measures.Report(tables={}, lines=[])
  rec = analysis[NAME]
  lines = ["## Successive IMP rounds",
           f"The {rec['split']} error and loss along the straight path between IMP's retrained "
           "solutions of rounds k and k+1 (Paul et al. 2023), under round k's mask: round k+1's "
           "mask is a subset of it, so the whole path lies in round k's subspace (the random "
           "source's masks need not nest: its paths run under both masks' union). Barrier "
           "(endpoint mean): max over alpha minus the endpoints' mean (Frankle et al. 2020); "
           "(chord): max over alpha of the gap above the straight line between the endpoints "
           "(Entezari et al. 2022), which, unlike the first, is 0 on a straight path between "
           "unequal endpoints. One path per row: no interval. " + _where_from(rec),
           table(rows)]
  png = os.path.join(layout.analysis_dir(workdir), NAME + ".png")
  if os.path.exists(png):
    lines.append(f"![successive IMP rounds: panel SOURCE_rKK is the path from round KK-1 "
                 f"to KK]({os.path.relpath(png, workdir)})")
  return measures.Report(tables={NAME: rows}, lines=lines)


# ---------------------------------------------------------------- pooled over seeds


def _pooled_row(by_seed: Dict[Any, Dict[str, Any]]) -> Dict[str, Any]:
  first = pooling.first_row(by_seed)
  out = {k: first[k] for k in ("source", "round", "next_round", "sparsity", "next_sparsity",
                               "split", "evaluated_under")}
  out["error_barrier_by_seed"] = {str(k): r["error_barrier"] for k, r in by_seed.items()}
  for barrier in ("error_barrier", "error_barrier_chord", "error_start", "error_end"):
    out[f"{barrier}_ci"] = pooling.ci_over_seeds(by_seed, lambda r, b=barrier: r[b])
  return out


def pool(root: str, per_seed: pooling.PerSeed) -> measures.Report:
  """results.json['successive_rounds'] of every seed pooled: each path's
  barriers with CIs over the seeds, and the sources compared per round pair."""
  groups = pooling.rows_by_key(per_seed, NAME, lambda r: (r["source"], r["round"]))
  if not groups:
    return measures.Report(tables={}, lines=[])
  rows = [_pooled_row(by_seed) for by_seed in groups.values()]
  barrier = lambda r: r["error_barrier"]
  comparisons = [pooling.paired_by_seed(groups[a], groups[b], barrier, a[0], b[0],
                                        f"error barrier of rounds {a[1]} to {a[1] + 1}")
                 for a, b in pooling.matched_pairs(groups, lambda r: r["round"])]
  table = logs.markdown_table(
      ["source", "rounds", "sparsity", "endpoint errors %", "error barrier % [95% CI] "
       "(endpoint mean)", "error barrier % [95% CI] (chord)"],
      [[r["source"], f"{r['round']} to {r['next_round']}",
        f"{100 * r['sparsity']:.1f}% to {100 * r['next_sparsity']:.1f}%",
        f"{100 * r['error_start_ci']['estimate']:.2f} / {100 * r['error_end_ci']['estimate']:.2f}",
        stats.format_ci(r["error_barrier_ci"]), stats.format_ci(r["error_barrier_chord_ci"])]
       for r in rows])
  series = {src: [{"x": r["next_round"], **{q: r["error_barrier_ci"][q]
                                             for q in ("estimate", "low", "high")}}
                  for r in rows if r["source"] == src]
            for src in dict.fromkeys(r["source"] for r in rows)}
  png = plots.plot_ci_lines(os.path.join(root, f"pooled_{NAME}"), series, "round k + 1",
                            f"{rows[0]['split']} error barrier, round k to k + 1 (%), 95% CI",
                            f"successive IMP rounds, {pooling.seeds_text(groups)}")
  lines = ["## Successive IMP rounds, pooled",
           f"The barrier between IMP's solutions of rounds k and k + 1 under round k's mask "
           f"(Paul et al. 2023), per source, over {pooling.seeds_text(groups)}: one path per "
           "seed, so each interval is a bootstrap over the seeds. Endpoint errors are the "
           "seeds' means.", table, "Paired by seed:\n" + pooling.comparison_lines(comparisons),
           f"![successive IMP rounds]({os.path.relpath(png, root)})"]
  return measures.Report(tables={NAME: rows, f"{NAME}_comparisons": comparisons}, lines=lines)


def cost(config, c, sizes: measures.Sizes) -> measures.Cost:
  """Every source's path from round k to k + 1 (k < imp.rounds) on c.split,
  with the statistics batches of the interpolation measure. The nets are
  IMP's: nothing trains."""
  a = config.analysis
  statistics = interpolation.statistics_examples(sizes.examples["train"], a.bn_reset_batch_size,
                                                 a.bn_reset_batches)
  paths = len(config.imp.sources) * config.imp.rounds
  per_path = interpolation.path_cost(sizes, c.num_alphas, c.split, c.bn_mode, statistics)
  return measures.Cost(forward_examples={(NAME, "paths"): paths * per_path})


MEASURE = measures.Measure(name=NAME, section=NAME, check=check, run_across=run_across,
                           splits=lambda c: (c.split,), defaults=DEFAULTS, report=report,
                           pool=pool, cost=cost)
