"""A sweep's study pooled over init seeds: barriers, instability, accuracies, data cost.

Jobs that differ only in config.seeds.* are replicates of one study. Their
per-pair barriers (DIR/results.json, written by the report stage) are pooled
with a hierarchical bootstrap, seeds first and the pairs within each seed
(lmcjax.stats), so each interval rests on the between-seed spread that pairs
sharing copies cannot show. Written by launch/aggregate.py beside aggregate.md:
ROOT/pooled.json, ROOT/pooled.md and its figures.
"""
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from lmcjax import imp
from lmcjax import logs
from lmcjax import plots
from lmcjax import report
from lmcjax import stats
from lmcjax import validate

Record = Dict[str, Any]


def _results(root: str, job: Record) -> Record:
  path = os.path.join(root, job["job"], "results.json")
  return logs.read_json(path) if os.path.exists(path) else {}


def per_seed_results(root: str, jobs: Sequence[Record]) -> Dict[Any, Record]:
  """{seed: DIR/results.json} of the jobs whose analysis measured barriers, keyed by
  the seed the analysis recorded (config.seeds.init), not by the job name."""
  results = [_results(root, job) for job in jobs]
  return {res["barriers"][0].get("seed", i): res for i, res in enumerate(results)
          if res.get("barriers")}


def _by_seed(rows: Sequence[Tuple[Any, Record]], key) -> Dict[Any, Dict[Any, List[Record]]]:
  """{key(record): {seed: [records]}} over (seed, record) rows."""
  out: Dict[Any, Dict[Any, List[Record]]] = {}
  for seed, r in rows:
    out.setdefault(key(r), {}).setdefault(seed, []).append(r)
  return out


def pooled_barriers(per_seed: Dict[Any, Record]) -> List[Record]:
  """One record per (model, split/BN): the barrier CI over seeds and pairs, and
  the copies' accuracy CI over seed means."""
  rows = [(seed, r) for seed, res in per_seed.items() for r in res.get("barriers", [])
          if "error_barriers" in r]
  out = []
  for (model, where), seeds in sorted(
      _by_seed(rows, lambda r: (r["model"], r["measured_on"])).items()):
    first = next(iter(seeds.values()))[0]
    pairs = {seed: rs[0]["error_barriers"] for seed, rs in seeds.items()}
    chords = {seed: rs[0]["error_barriers_chord"] for seed, rs in seeds.items()
              if "error_barriers_chord" in rs[0]}
    seed_acc = [float(np.mean(rs[0]["test_accuracy"])) for rs in seeds.values()]
    n = first["test_accuracy_ci"]["n"]
    out.append({"model": model, "source": first["source"], "sparsity": first["sparsity"],
                "measured_on": where, "pairs_by_seed": {str(k): v for k, v in pairs.items()},
                "error_barrier_ci": stats.barrier_ci(pairs),
                # Older runs recorded no chord barrier: the pooled record then has none.
                **({"error_barrier_chord_ci": stats.barrier_ci(chords)}
                   if len(chords) == len(pairs) else {}),
                "test_accuracy_ci": {**stats.mean_accuracy_ci(seed_acc, n), "unit": "seed mean"},
                "error_barrier_mean": float(np.mean([np.mean(v) for v in pairs.values()]))})
  return out


def pooled_instability(per_seed: Dict[Any, Record]) -> List[Record]:
  rows = [(seed, r) for seed, res in per_seed.items() for r in res.get("instability", [])]
  out = []
  for (model, epoch), seeds in sorted(_by_seed(rows, lambda r: (r["model"], r["epoch"])).items()):
    pairs = {seed: rs[0]["error_barriers"] for seed, rs in seeds.items()}
    out.append({"model": model, "epoch": epoch,
                "pairs_by_seed": {str(k): v for k, v in pairs.items()},
                "error_barrier_ci": stats.barrier_ci(pairs)})
  return out


def _sparsity_series(barriers: List[Record]) -> Dict[str, List[Record]]:
  """{source: [{'x': sparsity %, estimate, low, high}]}, the dense net at 0 on every line."""
  first_where = barriers[0]["measured_on"]
  rows = [r for r in barriers if r["measured_on"] == first_where]
  point = lambda r: {"x": 100 * (r["sparsity"] or 0.0),
                     **{k: r["error_barrier_ci"][k] for k in ("estimate", "low", "high")}}
  dense = [point(r) for r in rows if r["source"] == "dense"]
  return {src: dense + [point(r) for r in rows if r["source"] == src]
          for src in imp.SOURCES if any(r["source"] == src for r in rows)}


def _sparsity_table(barriers: List[Record], ci_key: str = "error_barrier_ci") -> str:
  """Sources as columns, sparsities as rows: each cell the record's ci_key
  ('error_barrier_ci', endpoint mean, or 'error_barrier_chord_ci')."""
  sparsities = sorted({round(r["sparsity"] or 0.0, 4) for r in barriers})
  sources = ["dense"] + [s for s in imp.SOURCES if any(r["source"] == s for r in barriers)]
  cell = {(r["source"], round(r["sparsity"] or 0.0, 4), r["measured_on"]): r for r in barriers}
  wheres = sorted({r["measured_on"] for r in barriers})
  rows = [[f"{100 * sp:.1f}%", where] + [stats.format_ci(cell[s, sp, where][ci_key])
                                         if ci_key in cell.get((s, sp, where), {}) else ""
                                         for s in sources]
          for where in wheres for sp in sparsities]
  return logs.markdown_table(
      ["sparsity", "split/BN"] + [f"{s} barrier % [95% CI]" for s in sources], rows)


def _accuracy_table(barriers: List[Record]) -> str:
  rows = [[r["model"], f"{100 * (r['sparsity'] or 0):.1f}%", stats.format_ci(r["test_accuracy_ci"])]
          for r in barriers if r["measured_on"] == barriers[0]["measured_on"]]
  return logs.markdown_table(["model", "sparsity", "copies' test acc % [95% CI over seed means]"],
                               rows)


def _measure_sections(root: str, per_seed: Dict[Any, Record],
                      out: Dict[str, Any]) -> Tuple[Dict[str, List[str]], List[str]]:
  """Each measure's pooled section ({name: its pooled.md lines}, all lines); its
  tables go into `out` (pooled.json), never over a table already there."""
  # Only pooling a run with measures needs the analysis package (and JAX):
  # docs/make_tables.py reads pooled.json without it.
  from lmcjax.analysis import measures  # pylint: disable=import-outside-toplevel
  sections, lines = {}, []
  for name, part in measures.pooled_reports(root, per_seed):
    for table, rows in part.tables.items():
      validate.require(table not in out, f"measure {name!r} pools into table {table!r}, "
                       "which pooled.json already has")
      out[table] = rows
    if part.lines:
      sections[name] = part.lines
      lines += part.lines
  return sections, lines


def study(root: str, jobs: Sequence[Record]) -> Dict[str, Any]:
  """Pools the finished jobs; writes ROOT/pooled.{json,md} and figures. {} if nothing to pool."""
  per_seed = per_seed_results(root, jobs)
  if not per_seed:
    return {}
  barriers = pooled_barriers(per_seed)
  comparisons = report.source_comparisons(
      barriers, pairs_by_seed=lambda r: r["pairs_by_seed"])
  instability = pooled_instability(per_seed)
  out = {"seeds": sorted(map(str, per_seed)), "barriers": barriers, "comparisons": comparisons,
         "instability": instability}
  lines = [f"# Study pooled over {len(per_seed)} init seeds ({', '.join(out['seeds'])})",
           "Every interval: hierarchical bootstrap, seeds resampled, then the pairs of SGD-noise "
           "copies within each seed (pairs sharing a copy are not independent; the seeds carry "
           "the interval).", "## Error barrier vs sparsity per mask source",
           "Barrier: max over alpha minus the endpoints' mean (Frankle et al. 2020).",
           _sparsity_table(barriers)]
  if any("error_barrier_chord_ci" in r for r in barriers):
    lines += ["## Error barrier vs sparsity, chord definition",
              "Barrier: max over alpha of the error above the straight line between the "
              "endpoints (Entezari et al. 2022).",
              _sparsity_table(barriers, "error_barrier_chord_ci")]
  out["figures"] = {"barrier_vs_sparsity": plots.plot_ci_lines(
      os.path.join(root, "pooled_barrier_vs_sparsity"), _sparsity_series(barriers), "sparsity (%)",
      "error barrier (%), 95% CI", f"pooled over {len(per_seed)} seeds")}
  lines += ["![barrier vs sparsity](pooled_barrier_vs_sparsity.png)",
            "## Mask sources compared at matched sparsity (paired by seed)",
            report.comparison_text(comparisons) or "No two sources share a sparsity.",
            "## Test accuracy of the copies", _accuracy_table(barriers)]
  if instability:
    series = {m: [{"x": r["epoch"],
                   **{k: r["error_barrier_ci"][k] for k in ("estimate", "low", "high")}}
                  for r in instability if r["model"] == m]
              for m in dict.fromkeys(r["model"] for r in instability)}
    out["figures"]["instability"] = plots.plot_ci_lines(
        os.path.join(root, "pooled_instability"), series, "rewind epoch",
        "error barrier (%), 95% CI",
        f"instability vs rewind point, {len(per_seed)} seeds")
    lines += ["## Instability vs rewind point", report.instability_table(instability),
              "![instability](pooled_instability.png)"]
  out["measure_sections"], measure_lines = _measure_sections(root, per_seed, out)
  lines += measure_lines
  logs.write_json(os.path.join(root, "pooled.json"), out)
  logs.write_text(os.path.join(root, "pooled.md"), "\n\n".join(lines) + "\n")
  return out
