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
import dataclasses
import itertools
import os
from typing import Any, Dict, List, Optional, Tuple

import ml_collections
import numpy as np

from lmcjax import interpolate
from lmcjax import logs
from lmcjax import models
from lmcjax import plots
from lmcjax import progress
from lmcjax import rng
from lmcjax import stats
from lmcjax import validate
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import measures
from lmcjax.analysis import pooling
from lmcjax.connectivity import permute
from lmcjax.connectivity import repair

PyTree = Any
NAME = "cross_seed"
ALIGNMENTS = ("naive", "weight_matching", "activation_matching")
# The error barrier in both definitions (lmcjax.interpolate), each with a CI.
ERROR_BARRIERS = ("error_barrier", "error_barrier_chord")

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


def bn_modes(module, requested) -> Tuple[str, ...]:
  """The running-statistics modes of every path: `requested`, or by default
  'interpolate' and the correction the model's norm admits."""
  if requested:
    return tuple(requested)
  if models.info(module).keeps_running_stats:
    return ("interpolate", "reset")
  try:
    repair.check_applies(module)
  except validate.InputError:
    return ("interpolate",)  # instance norm: nothing to correct
  return ("interpolate", "repair")


def check_bn_modes(module, requested, what: str) -> None:
  """One line for a mode that does not apply to the model."""
  for mode in requested:
    validate.choice(f"{what} entry", mode, interpolate.BN_MODES)
    if mode == "repair":
      try:
        repair.check_applies(module)
      except validate.InputError as e:
        raise validate.InputError(f"{what} entry 'repair': {e}") from None
    if mode == "reset":
      validate.require(models.info(module).keeps_running_stats, f"{what} entry 'reset': "
                       "the model keeps no BatchNorm statistics to reset (use 'repair')")


def check_paths(config, name: str) -> None:
  """The fields both measures share: inits, split, alphas, BN modes, chunks."""
  c = config.analysis[name]
  inits_lib.check_section(config, name)
  validate.choice(f"analysis.{name}.split", c.split, measures.SPLITS)
  validate.require(c.num_alphas >= 2, f"analysis.{name}.num_alphas must be >= 2, "
                   f"got {c.num_alphas!r}")
  check_bn_modes(inits_lib.built_model(config)[0], c.bn_modes, f"analysis.{name}.bn_modes")
  for field in ("correction_batches", "correction_batch_size_examples", "chunk_alphas"):
    validate.positive(f"analysis.{name}.{field}", c[field])


def check(config) -> None:
  c = config.analysis[NAME]
  if not c.enabled:
    return
  check_paths(config, NAME)
  validate.positive(f"analysis.{NAME}.weight_matching_iterations", c.weight_matching_iterations)


def path_examples(c, sizes: measures.Sizes, alignments: Tuple[str, ...]) -> int:
  """Forward examples of one pair's paths (`Paths.measure`): per alignment,
  activation matching's statistics where it aligns (both nets over the
  training split) and, per BN mode, every alpha on c.split plus the
  statistics batches a correcting mode measures. Weight matching's
  contractions see no examples."""
  statistics = c.correction_batches * c.correction_batch_size_examples
  per_path = sum(c.num_alphas * (sizes.examples[c.split]
                                 + (statistics if mode != "interpolate" else 0))
                 for mode in bn_modes(sizes.module, c.bn_modes))
  matching = 2 * sizes.examples["train"] * alignments.count("activation_matching")
  return len(alignments) * per_path + matching


def cost(config, c, sizes: measures.Sizes) -> measures.Cost:
  """num_inits nets of the dense net and of each mask, every pair's paths, each
  net's test accuracy, and with align_masks the activation matching of the
  dense nets that permutes each mask (lmcjax.analysis.inits)."""
  n = sizes.examples["train"]
  planned = inits_lib.planned_models(config, c)
  nets = inits_lib.planned_nets(config, n, c.num_inits, planned, aligned=c.align_masks,
                                with_dense=c.include_dense or c.align_masks)
  num_models = len(planned) + int(c.include_dense)
  pairs = c.num_inits * (c.num_inits - 1) // 2
  forward = num_models * (pairs * path_examples(c, sizes, ALIGNMENTS)
                          + c.num_inits * sizes.examples["test"])
  if c.align_masks:
    forward += len(planned) * (c.num_inits - 1) * 2 * n
  return measures.Cost(nets, forward)


# ---------------------------------------------------------------- paths


@dataclasses.dataclass
class Paths:
  """Aligns and interpolates pairs of nets of one model, for one measure."""
  ctx: measures.StageContext
  c: ml_collections.ConfigDict
  inits: inits_lib.Inits
  name: str

  def __post_init__(self):
    s = self.ctx.setup
    self.modes = bn_modes(s.model, self.c.bn_modes)
    self.alphas = interpolate.default_alphas(self.c.num_alphas)
    self.bn_images = None
    if any(mode != "interpolate" for mode in self.modes):
      self.bn_images = interpolate.bn_batches(
          s.x_train, self.c.correction_batch_size_examples, self.c.correction_batches,
          rng.named_key(s.config.seeds.data_order, "analysis", self.name, "bn"))

  def align(self, alignment: str, a, b, mask_a, mask_b, key_path) -> Tuple[PyTree, Any]:
    """(b with its units aligned to a's, the matching's objective)."""
    if alignment == "naive":
      return b, None
    # Imported when used: they import scipy.optimize (see inits.mask_into_basin).
    from lmcjax.connectivity import activation_matching  # pylint: disable=g-import-not-at-top
    from lmcjax.connectivity import weight_matching  # pylint: disable=g-import-not-at-top
    structure = self.inits.structure
    if alignment == "weight_matching":
      key = rng.named_key(self.ctx.setup.config.seeds.init, "analysis", self.name, *key_path)
      perm, objective = weight_matching.weight_matching(
          structure, a, b, mask_a=mask_a, mask_b=mask_b, key=key,
          max_iterations=self.c.weight_matching_iterations)
      objective = objective["inner_product"]
    else:
      perm, objective = activation_matching.activation_matching(
          self.ctx.setup.model, structure, a, b, self.inits.matching_images(), mask_a=mask_a,
          mask_b=mask_b, chunk_examples=self.c.chunk_examples)
      objective = float(np.mean(list(objective.values())))
    params, batch_stats, _ = permute.permute(structure, perm, b["params"], b["batch_stats"])
    return {"params": params, "batch_stats": batch_stats}, objective

  def measure(self, a, b, mask_a, mask_b, alignments, key_path) -> List[Dict[str, Any]]:
    """One record per alignment and BN mode: the path from a to aligned b.

    The endpoints are masked already; the path is not (an aligned b's mask
    is a permuted one, so the path runs over the union of the supports)."""
    s, a_cfg = self.ctx.setup, self.ctx.analysis
    out = []
    for alignment in alignments:
      aligned, objective = self.align(alignment, a, b, mask_a, mask_b, key_path)
      for mode in self.modes:
        path = interpolate.evaluate_path(
            s.model, a, aligned, self.alphas, *self.ctx.splits[self.c.split], bn_mode=mode,
            bn_images=self.bn_images, eval_batch_size=s.config.eval_batch_size,
            chunk_alphas=self.c.chunk_alphas, execution=a_cfg.execution)
        out.append({"alignment": alignment, "bn_mode": mode, "objective": objective, **path})
    return out


def barrier_cis(s, pairs: List[Dict[str, Any]]) -> Dict[str, Any]:
  """Per (alignment/bn_mode): each pair's barriers and a CI over the pairs,
  which share nets (stats.barrier_ci says so)."""
  out = {}
  for key in dict.fromkeys(f"{p['alignment']}/{p['bn_mode']}" for p in pairs):
    mine = [p for p in pairs if f"{p['alignment']}/{p['bn_mode']}" == key]
    entry = {"loss_barrier_mean": float(np.mean([p["loss_barrier"] for p in mine]))}
    for barrier in ERROR_BARRIERS:
      values = [p[barrier] for p in mine]
      entry[f"{barrier}s"] = values
      entry[f"{barrier}_ci"] = stats.barrier_ci({s.config.seeds.init: values})
    out[key] = entry
  return out


def without_curves(pairs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  drop = ("alphas", "loss", "error", "accuracy")
  return [{k: v for k, v in p.items() if k not in drop} for p in pairs]


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


def _measure_model(paths: Paths, c, name, model, mask) -> Dict[str, Any]:
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
          "barriers": barrier_cis(s, pairs), "pairs": pairs}


def run_across(ctx: measures.StageContext, c) -> Dict[str, Any]:
  """Barriers between nets of different inits, per model, alignment and BN mode."""
  s = ctx.setup
  inits = inits_lib.Inits(s, ctx.workdir, ctx.log, c.chunk_examples)
  paths = Paths(ctx, c, inits, NAME)
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
         "models": {n: dict(m, pairs=without_curves(m["pairs"])) for n, m in out_models.items()}}
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
