"""Dose-response: a sweep's finished jobs grouped by one non-seed axis, seeds pooled within.

Jobs that differ in exactly one non-seed override (distill.dm.iterations,
distill.ipc, distill.method, ...) are grouped by its value; within a group
the jobs are seeds, pooled as lmcjax/pooled.py pools replicates (barriers:
hierarchical bootstrap over seeds and pairs; the distilled set's accuracy: a
t-interval over seed means). Written by launch/aggregate.py beside
aggregate.md: ROOT/dose_response.{json,md} and three kinds of figure:
  - the error barrier vs the axis, per source, one figure per analysed sparsity;
  - the distilled set's test accuracy vs the axis;
  - the question's figure: the barrier of each source that prunes on the
    distilled set against that set's test accuracy, one panel per sparsity,
    with the other sources (real, subset, random) as horizontal references.

Sources the axis cannot change (real, subset, random for a distill.* axis)
may come from another sweep root with the same seeds instead of from every
job (launch/aggregate.py --reference_root): they are then reference lines,
rows of their own table, and the other side of each paired comparison.
"""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from matplotlib import figure as mpl_figure
import numpy as np

from lmcjax import logs
from lmcjax import mask_sources
from lmcjax import plots
from lmcjax import pooled
from lmcjax import report
from lmcjax import stats
from lmcjax import validate

Record = Dict[str, Any]
# The distill stage's evaluations in summary.json, as figure series: the
# distilled set, its starting images (distill.eval.initial: the images the
# 'subset' source trains on) and random real subsets of its size.
SET_SERIES = (("distilled", "distilled"), ("subset", "initial"),
              ("random real subsets", "random_subset"))
STEM = "dose_response"


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def groups(records: Sequence[Record], axis: str) -> List[Tuple[Any, List[Record]]]:
  """(axis value, its jobs), numeric values in increasing order, others as first met."""
  out: Dict[str, Tuple[Any, List[Record]]] = {}
  for r in records:
    out.setdefault(repr(r.get(axis)), (r.get(axis), []))[1].append(r)
  ordered = list(out.values())
  if all(_is_number(value) for value, _ in ordered):
    ordered.sort(key=lambda group: group[0])
  return ordered


def _set_accuracy(jobs: Sequence[Record]) -> Dict[str, Record]:
  """{series: CI over the jobs' (seeds') mean test accuracies} of each set evaluated."""
  out = {}
  for label, key in SET_SERIES:
    means = [r[f"summary.distill.{key}.mean"] for r in jobs
             if _is_number(r.get(f"summary.distill.{key}.mean"))]
    if means:
      ci = stats.mean_accuracy_ci(means, int(jobs[0].get("summary.num_test") or 1))
      out[label] = {**ci, "unit": "seed mean"}
  return out


def _group(root: str, value: Any, jobs: Sequence[Record]) -> Record:
  per_seed = pooled.per_seed_results(root, jobs)
  barriers = pooled.pooled_barriers(per_seed) if per_seed else []
  return {"value": value, "jobs": [r["job"] for r in jobs], "seeds": sorted(map(str, per_seed)),
          "set_accuracy": _set_accuracy(jobs), "barriers": barriers}


def reference_group(root: str, jobs: Sequence[Record], found: Sequence[Record]) -> Record:
  """The reference root's pooled barriers of the models no group has, over
  the seeds the groups have; a seed it lacks is one line."""
  seeds = {seed for g in found for seed in g["seeds"]}
  per_seed = {s: res for s, res in pooled.per_seed_results(root, jobs).items()
              if str(s) in seeds}
  missing = sorted(seeds - set(map(str, per_seed)))
  validate.require(not missing, f"--reference_root {root!r} has no finished analysis for "
                   f"seed(s) {', '.join(missing)}, which the dose-response jobs have")
  present = {r["model"] for g in found for r in g["barriers"]}
  barriers = [r for r in pooled.pooled_barriers(per_seed) if r["model"] not in present]
  return {"value": "reference", "root": root, "jobs": [r["job"] for r in jobs],
          "seeds": sorted(map(str, per_seed)), "set_accuracy": {}, "barriers": barriers}


def _paired(found: Sequence[Record], ref: Optional[Record]) -> None:
  """Each group's comparisons between sources, the reference's included: the
  seeds match, so the differences are paired by seed as within one job."""
  for g in found:
    barriers = g["barriers"] + (ref["barriers"] if ref else [])
    g["comparisons"] = report.source_comparisons(barriers,
                                                 pairs_by_seed=lambda r: r["pairs_by_seed"])


def _positions(values: Sequence[Any], axis: str) -> Tuple[List[float], str]:
  """x of each axis value and the x label: the values when numeric, else 0, 1, ..."""
  if all(_is_number(v) for v in values):
    return [float(v) for v in values], axis
  names = ", ".join(f"{i}: {v}" for i, v in enumerate(values))
  return [float(i) for i in range(len(values))], f"{axis} ({names})"


def _ci_point(x: float, ci: Record) -> Record:
  return {"x": x, **{k: ci[k] for k in ("estimate", "low", "high")}}


def _first_where(found: Sequence[Record]) -> Optional[str]:
  wheres = sorted({r["measured_on"] for g in found for r in g["barriers"]})
  return wheres[0] if wheres else None


def _models_by_sparsity(found: Sequence[Record], where: str) -> Dict[float, List[str]]:
  """{sparsity: model names analysed there} over every group, sources in run order."""
  out: Dict[float, List[str]] = {}
  for g in found:
    for r in g["barriers"]:
      if r["measured_on"] == where:
        names = out.setdefault(round(r["sparsity"] or 0.0, 4), [])
        names += [] if r["model"] in names else [r["model"]]
  rank = {name: i for i, name in enumerate(("dense",) + mask_sources.NAMES)}
  return {sp: sorted(names, key=lambda m: rank.get(plots.model_source(m), len(rank)))
          for sp, names in sorted(out.items())}


def _barrier(group: Record, model: str, where: str) -> Optional[Record]:
  return next((r for r in group["barriers"]
               if r["model"] == model and r["measured_on"] == where), None)


def _prunes_on_distilled(model: str) -> bool:
  source = plots.model_source(model)
  return source in mask_sources.SOURCES and mask_sources.get(source).small_set == "distilled"


def reference(found: Sequence[Record], model: str, where: str) -> Optional[Record]:
  """One barrier CI for a model the axis should leave unchanged (real, subset, random).

  Its pairs by seed are then the same in every group, and each seed counts
  once. Where they differ (an axis such as distill.ipc changes the subset
  images), the line is the mean of the groups' estimates, its band their
  union, and `varies` says so.
  """
  rows = [r for r in (_barrier(g, model, where) for g in found) if r]
  if not rows:
    return None
  pairs: Dict[str, List[float]] = {}
  varies = False
  for r in rows:
    for seed, values in r["pairs_by_seed"].items():
      varies |= seed in pairs and pairs[seed] != values
      pairs.setdefault(seed, values)
  if not varies:
    return {**stats.barrier_ci(pairs), "varies": False}
  cis = [r["error_barrier_ci"] for r in rows]
  return {"estimate": float(np.mean([c["estimate"] for c in cis])),
          "low": min(c["low"] for c in cis), "high": max(c["high"] for c in cis),
          "varies": True}


def _the_panels(found: Sequence[Record], where: str) -> List[Record]:
  """Per analysed sparsity: the distilled-data sources' (set accuracy, barrier)
  points in axis order, and the other sources as reference lines."""
  panels = []
  for sparsity, models in _models_by_sparsity(found, where).items():
    points, lines = {}, {}
    for model in models:
      if _prunes_on_distilled(model):
        points[model] = [
            {"value": g["value"], "x": g["set_accuracy"]["distilled"],
             "y": _barrier(g, model, where)["error_barrier_ci"]}
            for g in found if "distilled" in g["set_accuracy"] and _barrier(g, model, where)]
      elif model != "dense":
        lines[model] = reference(found, model, where)
    if any(points.values()):
      panels.append({"sparsity": sparsity, "points": points, "lines": lines})
  return panels


def draw_barrier_vs_set_accuracy(panels: Sequence[Record], axis: str, where: str):
  """The question's figure, not saved: one panel per sparsity, error bars 95% CI."""
  fig = mpl_figure.Figure(figsize=(4.2 * len(panels) + 1.8, 3.8))  # + the legend
  axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
  for ax, panel in zip(axes, panels):
    for model, line in panel["lines"].items():
      colour = plots.source_colour(model)
      note = " (varies with the axis: mean)" if line["varies"] else ""
      ax.axhline(100 * line["estimate"], color=colour, ls="--", lw=1.2,
                 label=f"{plots.model_source(model)}{note}")
      ax.axhspan(100 * line["low"], 100 * line["high"], color=colour, alpha=0.12, lw=0)
    for model, pts in panel["points"].items():
      x = 100 * np.asarray([p["x"]["estimate"] for p in pts])
      y = 100 * np.asarray([p["y"]["estimate"] for p in pts])
      err = lambda key: 100 * np.abs(np.asarray(
          [[p[key]["estimate"] - p[key]["low"], p[key]["high"] - p[key]["estimate"]]
           for p in pts]).T)
      ax.errorbar(x, y, xerr=err("x"), yerr=err("y"), marker="o", capsize=3,
                  color=plots.source_colour(model), label=plots.model_source(model))
      for xi, yi, p in zip(x, y, pts):
        ax.annotate(str(p["value"]), (xi, yi), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_title(f"{100 * panel['sparsity']:.1f}% sparse", fontsize=9)
    ax.set_xlabel("distilled set's test accuracy (%)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(f"error barrier (%), {where}")
  axes[-1].legend(fontsize=7, title=f"points: {axis}\nbars, bands: 95% CI", title_fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.02, 1.0))
  fig.tight_layout()
  return fig


def plot_barrier_vs_set_accuracy(stem: str, panels: Sequence[Record], axis: str,
                                 where: str) -> str:
  """STEM.png of draw_barrier_vs_set_accuracy and STEM.json with its numbers."""
  logs.write_json(stem + ".json", {"axis": axis, "measured_on": where, "panels": panels})
  fig = draw_barrier_vs_set_accuracy(panels, axis, where)
  return logs.atomic_write(stem + ".png", lambda f: fig.savefig(f, format="png", dpi=110),
                           binary=True)


def _links(figures: Dict[str, str]) -> List[str]:
  return [f"![{name}]({name}.png)" for name in figures]


def _barrier_figures(root: str, found: Sequence[Record], axis: str,
                     where: str) -> Dict[str, str]:
  """Barrier vs the axis per source, one plots.plot_ci_lines figure per sparsity."""
  xs, xlabel = _positions([g["value"] for g in found], axis)
  out = {}
  for sparsity, models in _models_by_sparsity(found, where).items():
    series = {m: [_ci_point(x, _barrier(g, m, where)["error_barrier_ci"])
                  for x, g in zip(xs, found) if _barrier(g, m, where)] for m in models}
    name = f"{STEM}_barrier_sparsity{round(100 * sparsity)}"
    out[name] = plots.plot_ci_lines(os.path.join(root, name), series, xlabel,
                                    "error barrier (%), 95% CI",
                                    f"{100 * sparsity:.1f}% sparse, {where}")
  return out


def _accuracy_figure(root: str, found: Sequence[Record], axis: str) -> Dict[str, str]:
  xs, xlabel = _positions([g["value"] for g in found], axis)
  series = {label: [_ci_point(x, g["set_accuracy"][label]) for x, g in zip(xs, found)
                    if label in g["set_accuracy"]] for label, _ in SET_SERIES}
  series = {k: v for k, v in series.items() if v}
  if not series:
    return {}
  name = f"{STEM}_set_accuracy"
  return {name: plots.plot_ci_lines(os.path.join(root, name), series, xlabel,
                                    "test accuracy (%), 95% CI over seeds",
                                    "nets trained on the set alone")}


def _accuracy_table(found: Sequence[Record], axis: str) -> str:
  labels = [label for label, _ in SET_SERIES if any(label in g["set_accuracy"] for g in found)]
  rows = [[g["value"], len(g["jobs"])] + [stats.format_ci(g["set_accuracy"][label])
                                          if label in g["set_accuracy"] else "" for label in labels]
          for g in found]
  return logs.markdown_table([axis, "jobs"] + [f"{label} acc % [95% CI]" for label in labels],
                             rows)


def _barrier_table(found: Sequence[Record], axis: str, where: str) -> str:
  by_sparsity = _models_by_sparsity(found, where)
  sources = list(dict.fromkeys(plots.model_source(m) for ms in by_sparsity.values() for m in ms))
  rows = []
  for sparsity, models in by_sparsity.items():
    for g in found:
      cells = {plots.model_source(m): _barrier(g, m, where) for m in models}
      rows.append([f"{100 * sparsity:.1f}%", g["value"]] + [
          stats.format_ci(cells[s]["error_barrier_ci"]) if cells.get(s) else "" for s in sources])
  return logs.markdown_table(["sparsity", axis] + [f"{s} barrier % [95% CI]" for s in sources],
                             rows)


def _comparison_lines(found: Sequence[Record], axis: str) -> List[str]:
  """Each distilled-data source against the others, per axis value."""
  lines = []
  for g in found:
    mine = [c for c in g["comparisons"] if any(
        mask_sources.SOURCES.get(c[k]) and mask_sources.get(c[k]).small_set == "distilled"
        for k in ("a", "b"))]
    if mine:
      lines += [f"### {axis} = {g['value']}", report.comparison_text(mine)]
  return lines


def _reference_lines(ref: Record, where: str) -> List[str]:
  rows = [[f"{100 * (r['sparsity'] or 0.0):.1f}%", plots.model_source(r["model"]),
           stats.format_ci(r["error_barrier_ci"])]
          for r in ref["barriers"] if r["measured_on"] == where]
  return [f"## Reference sources ({where}), from {ref['root']}",
          f"Seeds {', '.join(ref['seeds'])}, as in the groups above; the axis does not "
          "change these sources, so their jobs ran once, in that sweep root.",
          logs.markdown_table(["sparsity", "source", "barrier % [95% CI]"], rows)]


def tables(out: Dict[str, Any]) -> List[Tuple[str, str]]:
  """(heading, markdown) of a saved dose_response.json, for docs/make_tables.py:
  the same tables and comparisons as dose_response.md."""
  found, axis, ref = out["groups"], out["axis"], out.get("reference")
  where = _first_where(found)
  made = [(f"The distilled set's test accuracy vs {axis}",
           _accuracy_table(found, axis))]
  if where is None:
    return made
  made.append((f"Error barrier ({where}) vs {axis}", _barrier_table(found, axis, where)))
  if ref:
    heading, note, table = _reference_lines(ref, where)
    made.append((heading.lstrip("# "), f"{note}\n\n{table}"))
  comparisons = _comparison_lines(found, axis)
  if comparisons:
    made.append((f"Distilled-data sources compared, paired by seed, per {axis}",
                 "\n\n".join(line.replace("### ", "*") + "*" if line.startswith("### ")
                              else line for line in comparisons)))
  return made


def study(root: str, records: Sequence[Record], axis: str,
          references: Sequence[Record] = (), reference_root: str = "") -> Dict[str, Any]:
  """Groups the finished jobs by `axis`, pools seeds within each group, writes
  ROOT/dose_response.{json,md} and figures. {} when no job holds results.

  references: finished jobs of reference_root, whose models that no group has
  (e.g. real, subset, random) become reference lines and comparison partners.
  """
  found = [_group(root, value, jobs) for value, jobs in groups(records, axis)]
  ref = reference_group(reference_root, references, found) if references else None
  _paired(found, ref)
  where = _first_where(found)
  if where is None and not any(g["set_accuracy"] for g in found):
    return {}
  out = {"axis": axis, "values": [g["value"] for g in found], "groups": found, "figures": {},
         "reference": ref}
  lines = [f"# Dose-response over {axis} ({len(found)} values, seeds pooled within each)",
           "Barrier intervals: hierarchical bootstrap over seeds, then pairs within each seed. "
           "Set accuracies: t-interval over the seeds' mean accuracies (never narrower than "
           "the Wilson interval).", f"## The distilled set vs {axis}",
           "subset = the images the distilled set started from (distill.eval.initial).",
           _accuracy_table(found, axis)]
  figures = _accuracy_figure(root, found, axis)
  lines += _links(figures)
  out["figures"].update(figures)
  if where is not None:
    figures = _barrier_figures(root, found, axis, where)
    out["figures"].update(figures)
    lines += [f"## Error barrier ({where}) vs {axis} per mask source",
              _barrier_table(found, axis, where)] + _links(figures)
    lines += _reference_lines(ref, where) if ref else []
    panels = _the_panels(found + ([ref] if ref else []), where)
    out["panels"] = panels
    if panels:
      name = f"{STEM}_barrier_vs_set_accuracy"
      out["figures"][name] = plot_barrier_vs_set_accuracy(os.path.join(root, name), panels,
                                                          axis, where)
      lines += ["## Barrier against the distilled set's test accuracy",
                "Points: sources that prune on the distilled set, one per axis value; dashed "
                "lines and bands: the other sources (mean and 95% CI).",
                f"![barrier vs distilled-set accuracy]({name}.png)"]
    lines += _comparison_lines(found, axis)
  logs.write_json(os.path.join(root, f"{STEM}.json"), out)
  logs.write_text(os.path.join(root, f"{STEM}.md"), "\n\n".join(lines) + "\n")
  return out
