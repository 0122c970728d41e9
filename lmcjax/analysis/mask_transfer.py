"""The mask-transfer measure (config.analysis.mask_transfer): does an IMP mask
train from a new init, as it is and aligned to the new init's basin?
(Adnan et al., ICML 2025, "Sparse Training from Random Initialization:
Aligning Lottery Ticket Masks using Weight Symmetry".)

For each analysed mask (by default each source's sparsest analysed round) and
each new init i = 1..num_inits-1 (lmcjax.analysis.inits), a net trains from
init i's rewind point under
  (a) 'as_is':   the mask as it is;
  (b) 'aligned': the mask permuted from the original init's basin into init
                 i's: activation matching between the original dense net and
                 init i's dense net, both trained to the end, maps the
                 original's units onto init i's, and the mask follows them;
and the original ticket (the mask on init 0, trained alike) is the reference.
Recorded: the test accuracy of (a), (b) and the ticket with 95% CIs; the
barrier between the ticket and (a), (b) after activation matching, with the
statistics interpolated and corrected (REPAIR or BN reset); paired
comparisons, by init, of (b) against (a) and of each source's accuracy drop
against every other source's (does a distilled mask transfer better or worse
than a real one?).

Across models: DIR/analysis/mask_transfer.json, mask_transfer.png and the
record summary.json['mask_transfer'].
"""
import itertools
import os
from typing import Any, Dict, List

import jax
import ml_collections

from lmcjax import logs
from lmcjax import masks
from lmcjax import plots
from lmcjax import progress
from lmcjax import stats
from lmcjax import validate
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import measures
from lmcjax.analysis import paths as paths_lib
from lmcjax.analysis import pooling

PyTree = Any
NAME = "mask_transfer"
KINDS = ("as_is", "aligned")
_KIND_TEXT = {"as_is": "the mask as it is", "aligned": "the mask aligned to the new init",
              "ticket": "the original ticket"}

DEFAULTS = ml_collections.ConfigDict(dict(
    enabled=False,
    num_inits=3,  # init 0 (the original ticket's) and num_inits - 1 new ones
    sources=(),  # () = every analysed source; each must be one IMP ran
    rounds=(),  # () = each source's sparsest analysed round
    split="test",  # the split the barriers are evaluated on
    num_alphas=11,
    # () = 'interpolate' and the correction that applies ('repair' or 'reset').
    bn_modes=(),
    correction_batches=8,
    correction_batch_size_examples=256,
    chunk_examples=256,  # examples per step of activation matching
    chunk_alphas=8,
))


def check(config) -> None:
  c = config.analysis[NAME]
  if not c.enabled:
    return
  validate.require(config.imp.rounds >= 1, f"analysis.{NAME} transfers IMP's masks, but "
                   "imp.rounds=0 finds none")
  paths_lib.check_paths(config, NAME)


def same_layer_counts(s, mask: PyTree, moved: PyTree) -> bool:
  """Whether a permuted mask keeps every layer's count of kept weights."""
  return masks.counts(mask, s.prunable) == masks.counts(moved, s.prunable)


def overlap(mask: PyTree, moved: PyTree) -> float:
  """Fraction of the mask's weights the moved mask keeps in place."""
  both = sum(float(jax.numpy.sum(a * b)) for a, b in zip(jax.tree.leaves(mask),
                                                         jax.tree.leaves(moved)))
  return both / max(sum(float(jax.numpy.sum(a)) for a in jax.tree.leaves(mask)), 1.0)


def _transfer(paths: paths_lib.Paths, c, model, mask, ticket) -> Dict[str, Any]:
  """(a) and (b) for every new init: accuracy, barriers to the ticket, masks."""
  s, inits = paths.ctx.setup, paths.inits
  out = {kind: {"test_accuracy": [], "pairs": []} for kind in KINDS}
  out["aligned"].update(same_layer_counts=[], overlap=[])
  for i in range(1, c.num_inits):
    for kind in KINDS:
      net, used = inits.sparse(i, model, mask, aligned=kind == "aligned")
      out[kind]["test_accuracy"].append(inits.accuracy(net))
      for record in paths.measure(ticket, net, mask, used, ("activation_matching",),
                                  (model.name, i, kind)):
        out[kind]["pairs"].append({"init": i, **record})
      if kind == "aligned":
        out[kind]["same_layer_counts"].append(same_layer_counts(s, mask, used))
        out[kind]["overlap"].append(overlap(mask, used))
  num_test = int(s.x_test.shape[0])
  for kind in KINDS:
    out[kind]["test_accuracy_ci"] = stats.mean_accuracy_ci(out[kind]["test_accuracy"], num_test)
    out[kind]["barriers"] = paths_lib.barrier_cis(s, out[kind]["pairs"])
  return out


def _measure_model(paths: paths_lib.Paths, c, model, mask) -> Dict[str, Any]:
  s = paths.ctx.setup
  ticket, _ = paths.inits.sparse(0, model, mask)
  accuracy = paths.inits.accuracy(ticket)
  out = {"source": model.source, "round": model.round, "sparsity": inits_lib.sparsity(s, mask),
         "ticket": {"test_accuracy": accuracy,
                    "test_accuracy_ci": stats.accuracy_ci(accuracy, int(s.x_test.shape[0]))},
         **_transfer(paths, c, model, mask, ticket)}
  by_init = lambda kind: {i: [v] for i, v in enumerate(out[kind]["test_accuracy"], start=1)}
  out["aligned_vs_as_is"] = stats.paired_difference(
      by_init("aligned"), by_init("as_is"), f"{model.name} aligned", f"{model.name} as is",
      "test accuracy")
  return out


def drops(m: Dict[str, Any], kind: str) -> Dict[int, List[float]]:
  """Per new init, the ticket's accuracy minus the transfer's."""
  return {i: [m["ticket"]["test_accuracy"] - v]
          for i, v in enumerate(m[kind]["test_accuracy"], start=1)}


def comparisons(models: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
  """Every pair of models, paired by init: the accuracy drop of each transfer."""
  out = []
  for (name_a, a), (name_b, b) in itertools.combinations(models.items(), 2):
    for kind in KINDS:
      diff = stats.paired_difference(drops(a, kind), drops(b, kind), name_a, name_b,
                                     f"accuracy drop of the transfer ({kind})")
      out.append({"kind": kind, **diff})
  return out


def cost(config, c, sizes: measures.Sizes) -> measures.Cost:
  """Per mask: the ticket (init 0's net) and each new init's nets as it is and
  aligned (the ticket and as-is nets are cross_seed's where both measure the
  mask, and count once), the matching that moves the mask, each path to the
  ticket and each net's test accuracy."""
  planned = inits_lib.planned_models(config, c)
  nets, moves = {}, {}
  for aligned in (False, True):
    more_nets, more_moves = inits_lib.planned_nets(config, sizes, c.num_inits, planned, aligned,
                                                   with_dense=True)
    nets.update(more_nets)
    moves.update(more_moves)
  new = c.num_inits - 1
  per_mask = (len(KINDS) * new * paths_lib.pair_cost(c, sizes, ("activation_matching",))
              + (1 + len(KINDS) * new) * sizes.examples["test"])
  return measures.Cost(nets, {**moves, (NAME, "paths"): len(planned) * per_mask})


def run_across(ctx: measures.StageContext, c) -> Dict[str, Any]:
  """Mask transfer to new inits, per analysed mask."""
  s = ctx.setup
  inits = inits_lib.Inits(s, ctx.workdir, ctx.log, c.chunk_examples)
  paths = paths_lib.Paths(ctx, c, inits, NAME)
  todo = inits_lib.selected(c, ctx.analysed, NAME)
  validate.require(bool(todo), f"analysis.{NAME} has no analysed mask to transfer")
  shown = progress.Progress(NAME, len(todo), "masks", every_s=0)
  out_models = {}
  for model, mask in todo:
    out_models[model.name] = _measure_model(paths, c, model, mask)
    shown.update(len(out_models), model.name)
  stem = os.path.join(ctx.out_dir, NAME)
  logs.write_json(stem + ".json", {"models": out_models})
  for m in out_models.values():
    for kind in KINDS:
      m[kind]["pairs"] = paths_lib.without_curves(m[kind]["pairs"])
  out = {"split": c.split, "num_inits": c.num_inits, "seed": s.config.seeds.init,
         "bn_modes": list(paths.modes), "start": inits_lib.start_text(s),
         "paths": stem + ".json", "models": out_models, "comparisons": comparisons(out_models)}
  out["figure"] = plot(stem, out)
  return out


def plot(stem: str, record: Dict[str, Any]) -> str:
  """Test accuracy % [95% CI] of (a), (b) and the ticket, one line per mask."""
  series = {name: [{"x": k, **{q: (m[kind] if kind != "ticket" else m["ticket"])
                               ["test_accuracy_ci"][q] for q in ("estimate", "low", "high")}}
                   for k, kind in enumerate(KINDS + ("ticket",))]
            for name, m in record["models"].items()}
  return plots.plot_ci_lines(stem, series, "mask", "test accuracy (%), 95% CI",
                             f"masks trained from {record['num_inits'] - 1} new init(s)",
                             xticklabels=("as is (new init)", "aligned (new init)",
                                          "original ticket"))


# ---------------------------------------------------------------- report


def records(record: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One flat row per mask and kind (as_is, aligned, ticket)."""
  rows = []
  for name, m in record.get("models", {}).items():
    common = {"model": name, "source": m["source"], "round": m["round"],
              "sparsity": m["sparsity"], "num_inits": record["num_inits"],
              "seed": record["seed"], "split": record["split"]}
    rows.append({**common, "kind": "ticket", **m["ticket"]})
    for kind in KINDS:
      entry = {k: v for k, v in m[kind].items() if k != "pairs"}
      rows.append({**common, "kind": kind, **entry})
  return rows


def _barrier_cell(row: Dict[str, Any], mode: str) -> str:
  b = row.get("barriers", {}).get(f"activation_matching/{mode}")
  return stats.format_ci(b["error_barrier_ci"]) if b else ""


def _table(rows: List[Dict[str, Any]], modes, accuracy_heading: str) -> str:
  return logs.markdown_table(
      ["mask", "sparsity", "trained with", accuracy_heading]
      + [f"barrier to the ticket % [95% CI], BN {mode}" for mode in modes],
      [[r["model"], f"{100 * r['sparsity']:.1f}%", _KIND_TEXT[r["kind"]],
        stats.format_ci(r["test_accuracy_ci"])] + [_barrier_cell(r, mode) for mode in modes]
       for r in rows])


def report(workdir: str, analysis: Dict[str, Any]) -> measures.Report:
  record = analysis.get(NAME)
  if not record:
    return measures.Report({}, [])
  rows, modes = records(record), record["bn_modes"]
  table = _table(rows, modes, "test acc % [95% CI]")
  sentences = [record["models"][n]["aligned_vs_as_is"]["sentence"] for n in record["models"]]
  sentences += [c["sentence"] for c in record["comparisons"]]
  lines = ["## Mask transfer to new inits",
           f"Each mask trains from {record['num_inits'] - 1} new init(s) as it is and "
           "permuted into the new init's basin (activation matching between the original "
           "dense net and the new init's, Adnan et al. 2025); the original ticket is the mask "
           f"on the config's own init, trained alike. {record['start']} Barriers: "
           f"{record['split']} error barrier between the ticket and each transfer after "
           "activation matching; the CI over new inits shares the ticket, so it is too narrow.",
           table, "Paired by init: " + " ".join(sentences) if sentences else "",
           f"![mask transfer]({os.path.relpath(record['figure'], workdir)})"]
  tables = {NAME: rows, f"{NAME}_comparisons": record["comparisons"]}
  return measures.Report(tables, [line for line in lines if line])


# ---------------------------------------------------------------- pooled over seeds


def _pooled_row(by_seed: Dict[Any, Dict[str, Any]], modes) -> Dict[str, Any]:
  first = pooling.first_row(by_seed)
  out = {**{k: first[k] for k in ("model", "source", "round", "sparsity", "kind", "split",
                                   "num_inits")},
         "test_accuracy_by_seed": pooling.values_by_seed(by_seed, lambda r: r["test_accuracy"]),
         "test_accuracy_ci": pooling.accuracy_over_seeds(
             by_seed, lambda r: r["test_accuracy"], first["test_accuracy_ci"]["n"])}
  if first["kind"] != "ticket":
    out["barriers"] = {
        f"activation_matching/{mode}": {
            "error_barrier_ci": pooling.ci_over_seeds(
                by_seed, lambda r, m=mode: r["barriers"][f"activation_matching/{m}"]
                ["error_barriers"])} for mode in modes}
  return out


def _pooled_drops(groups, model: str, kind: str) -> Dict[Any, Dict[str, Any]]:
  """{seed: {'drop': [ticket accuracy - transfer accuracy, per new init]}}."""
  tickets, transfers = groups[model, "ticket"], groups[model, kind]
  return {seed: {"drop": [tickets[seed]["test_accuracy"] - v for v in row["test_accuracy"]]}
          for seed, row in transfers.items() if seed in tickets}


def _pooled_comparisons(groups) -> List[Dict[str, Any]]:
  """Per mask, aligned against as-is accuracy; per kind, every two masks'
  accuracy drops from their tickets. Paired by seed."""
  accuracy, drop = (lambda r: r["test_accuracy"]), (lambda r: r["drop"])
  models = list(dict.fromkeys(model for model, _ in groups))
  out = [{"kind": "aligned vs as_is", **pooling.paired_by_seed(
      groups[m, "aligned"], groups[m, "as_is"], accuracy, f"{m} aligned", f"{m} as is",
      "test accuracy")} for m in models]
  for kind in KINDS:
    for i, a in enumerate(models):
      for b in models[i + 1:]:
        out.append({"kind": kind, **pooling.paired_by_seed(
            _pooled_drops(groups, a, kind), _pooled_drops(groups, b, kind), drop, a, b,
            f"accuracy drop of the transfer ({kind})")})
  return out


def pool(root: str, per_seed: pooling.PerSeed) -> measures.Report:
  """results.json['mask_transfer'] of every seed pooled: accuracies over the
  seed means, barriers to the ticket over seeds and new inits, paired by seed."""
  groups = pooling.rows_by_key(per_seed, NAME, lambda r: (r["model"], r["kind"]))
  if not groups:
    return measures.Report({}, [])
  modes = sorted({key.split("/", 1)[1] for by_seed in groups.values()
                  for row in by_seed.values() for key in row.get("barriers", {})})
  rows = [_pooled_row(by_seed, modes) for by_seed in groups.values()]
  comparisons = _pooled_comparisons(groups)
  table = _table(rows, modes, "test acc % [95% CI over seed means]")
  first = rows[0]
  lines = ["## Mask transfer to new inits, pooled",
           f"Per job, each mask trained from {first['num_inits'] - 1} new init(s) as it is and "
           "aligned to the new init's basin, and the original ticket; pooled over "
           f"{pooling.seeds_text(groups)}. Accuracy: t-interval over the seeds' means; "
           f"barrier ({first['split']} error, after activation matching): hierarchical "
           "bootstrap over the seeds and the new inits within each.", table,
           "Paired by seed:\n" + pooling.comparison_lines(comparisons)]
  by_model: Dict[str, Dict[str, Any]] = {}
  for r in rows:
    by_model.setdefault(r["model"], {})[r["kind"]] = {"test_accuracy_ci": r["test_accuracy_ci"]}
  png = plot(os.path.join(root, f"pooled_{NAME}"),
             {"num_inits": first["num_inits"], "models": by_model})
  lines.append(f"![mask transfer]({os.path.relpath(png, root)})")
  return measures.Report({NAME: rows, f"{NAME}_comparisons": comparisons}, lines)


MEASURE = measures.Measure(
    name=NAME, section=NAME, check=check, run_across=run_across,
    splits=lambda c: (c.split,) if c.enabled else (), defaults=DEFAULTS, report=report,
    pool=pool, cost=cost)
