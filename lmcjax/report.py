"""The experiment report: DIR/report.md and DIR/results.json.

results.json holds flat record lists (one per table), so
`pandas.json_normalize(results["accuracy"])` gives a tidy frame.
"""
import json
import os
from typing import Any, Callable, Dict, List

from lmcjax import imp
from lmcjax import logs
from lmcjax import mask_costs
from lmcjax import mask_sources
from lmcjax import modelid
from lmcjax import runtime
from lmcjax import stats
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.stages import base



def check_config(config) -> None:
  del config  # reads only what the other stages wrote


def accuracy_records(workdir: str) -> List[Dict[str, Any]]:
  """IMP's retrained nets: one net per (source, round), Wilson CI over test examples."""
  rows = logs.read_jsonl(os.path.join(layout.imp_dir(workdir), "imp.jsonl"))
  return [{"source": r["source"], "round": r["round"], "sparsity": r["sparsity"],
           "test_accuracy": r["test_accuracy"], "test_loss": r["test_loss"],
           "examples_seen": r["examples_seen"],
           "test_accuracy_ci": (stats.accuracy_ci(r["test_accuracy"], r["num_test"])
                                if "num_test" in r else None)}
          for r in rows if r.get("test_accuracy") is not None]


def accuracy_table(records: List[Dict[str, Any]]) -> str:
  """Rows: IMP round (sparsity); columns: mask sources; cells: % with 95% CI."""
  sources = [s for s in imp.SOURCES if any(r["source"] == s for r in records)]
  by_round: Dict[int, Dict[str, Any]] = {}
  for r in records:
    cell = (stats.format_ci(r["test_accuracy_ci"]) if r["test_accuracy_ci"]
            else f"{100 * r['test_accuracy']:.2f}")
    by_round.setdefault(r["round"], {"sparsity": r["sparsity"]})[r["source"]] = cell
  rows = [[k, f"{100 * v['sparsity']:.1f}%"] + [v.get(s, "not retrained") for s in sources]
          for k, v in sorted(by_round.items())]
  legend = "; ".join(f"{s}: {mask_sources.get(s).description}" for s in sources)
  return (logs.markdown_table(["round", "sparsity"] + [f"{s} acc % [95% CI]" for s in sources],
                              rows) + (f"\n\nMask sources: {legend}." if legend else ""))


def data_cost_records(imp_summary: Dict[str, Any]) -> List[Dict[str, Any]]:
  cost = imp_summary.get("data_cost", {})
  return [{"source": src, **{k: v for k, v in c.items() if not isinstance(v, dict)}}
          for src, c in cost.items() if isinstance(c, dict) and src in imp.SOURCES]


def data_cost_text(imp_summary: Dict[str, Any]) -> str:
  records = data_cost_records(imp_summary)
  if not records:
    return "No IMP run."
  keys = sorted({k for r in records for k in r if k != "source"})
  table = logs.markdown_table(["source"] + keys, [[r["source"]] + [r.get(k, "") for k in keys]
                                             for r in records])
  for r in records:
    ratio = imp_summary["data_cost"].get(mask_costs.ratio_key(r["source"]))
    if isinstance(ratio, dict):
      ratio_text = "; ".join(f"{k}: {v:.1f}x" for k, v in ratio.items()
                             if isinstance(v, (int, float)))
      table += f"\n\nReal IMP over {r['source']} IMP (finding the masks): {ratio_text}."
  return table


def analysis_records(analysis: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
  """Flat barrier and Hessian records, one per analysed model (dense, source_rKK).

  Each barrier record keeps its per-pair barriers and the seed, so
  launch/aggregate.py can pool seeds without reading the analysis files.
  """
  barriers, hessian = [], []
  for name, m in sorted(analysis.get("models", {}).items()):
    source = modelid.ModelId.parse(name).source
    for where, b in sorted(m.get("barriers", {}).items()):
      extra = m.get("barrier_stats", {}).get(where, {})
      barriers.append({"model": name, "source": source, "sparsity": m.get("sparsity"),
                       "seed": analysis.get("seed"), "measured_on": where,
                       "start": m.get("start"), **b, **extra})
    h = m.get("hessian")
    if h:
      top = h.get("top_eigenvalue", {})
      hessian.append({"model": name, "source": source, "sparsity": m.get("sparsity"),
                      **{k: h.get(k) for k in ("method", "exact", "trusted", "caption",
                                               "relative_stderr", "num_examples", "trace",
                                               "trace_stderr", "num_probes")},
                      "top_eigenvalue": top.get("eigenvalue"),
                      "top_eigenvalue_residual": (top.get("residuals") or [None])[0],
                      "top_eigenvalue_converged": top.get("converged"),
                      "density_png": (f"analysis/{name}/{h['density']['png']}"
                                      if h.get("density") else None)})
  return {"barriers": barriers, "hessian": hessian}


def start_text(start: Dict[str, Any]) -> str:
  """Where the copies start, in words (never 'the rewind point' for init)."""
  if not start or not start.get("dense_step"):
    return "from the initialisation (step 0)"
  how = ("training the remaining steps with the schedule continued"
         if start.get("schedule") == "continue" else "each a whole run from there")
  return f"from step {start['dense_step']} of the dense run ({how})"


# The two barrier definitions (lmcjax/interpolate.py), as every table names them.
BARRIER_DEFINITIONS = (
    "'endpoint mean': max over alpha of the curve minus the mean of its two endpoints "
    "(Frankle et al. 2020); 'chord': max over alpha of the curve minus the straight line "
    "between its endpoints (Entezari et al. 2022). Both are >= 0 and differ by at most half "
    "the endpoints' gap, which the first reports even on a straight path")


def barrier_table(records: List[Dict[str, Any]]) -> str:
  """The error barrier in both definitions, each with its 95% CI and counts; the
  largest pair's and the loss barriers' means; the copies' accuracy with its CI.
  A record written before the chord definition shows it as 'n/a'."""
  def ci(r, key):
    return stats.format_ci(r[key]) if r.get(key) else "n/a"

  def row(r):
    chord = r.get("loss_barrier_chord_mean")
    return [r["model"], f"{100 * (r['sparsity'] or 0):.1f}%", r["measured_on"],
            ci(r, "error_barrier_ci"), ci(r, "error_barrier_chord_ci"),
            f"{100 * r['error_barrier_max']:.2f}", f"{r['loss_barrier_mean']:.3g}",
            "n/a" if chord is None else f"{chord:.3g}", ci(r, "test_accuracy_ci")]
  return logs.markdown_table(
      ["model", "sparsity", "split/BN", "error barrier % [95% CI] (endpoint mean)",
       "error barrier % [95% CI] (chord)", "max pair % (endpoint mean)",
       "loss barrier, mean (endpoint mean)", "loss barrier, mean (chord)",
       "copies' test acc % [95% CI]"], [row(r) for r in records])


def _pairs_by_seed(record: Dict[str, Any]) -> Dict[Any, List[float]]:
  return {record.get("seed", 0): record["error_barriers"]}


def source_comparisons(records: List[Dict[str, Any]],
                       pairs_by_seed: Callable = _pairs_by_seed) -> List[Dict[str, Any]]:
  """Paired barrier differences between mask sources at matched sparsity.

  records: barrier records carrying per-pair 'error_barriers'; pairs_by_seed
  maps a (possibly pooled) record to {seed: [pair barriers]}.
  """
  out = []
  key = lambda r: (r["measured_on"], round(r["sparsity"] or 0.0, 4))
  groups: Dict[Any, Dict[str, Dict[str, Any]]] = {}
  for r in records:
    if r["source"] != "dense" and ("error_barriers" in r or "pairs_by_seed" in r):
      groups.setdefault(key(r), {})[r["source"]] = r
  for (where, sparsity), by_source in sorted(groups.items()):
    present = [s for s in imp.SOURCES if s in by_source]
    for i, a in enumerate(present):
      for b in present[i + 1:]:
        diff = stats.paired_difference(pairs_by_seed(by_source[a]), pairs_by_seed(by_source[b]),
                                       a, b)
        out.append({"measured_on": where, "sparsity": sparsity, **diff})
  return out


def comparison_text(comparisons: List[Dict[str, Any]]) -> str:
  lines = [f"- {100 * c['sparsity']:.1f}% sparse ({c['measured_on']}): {c['sentence']}"
           + (f" ({c['warning']})" if c.get("warning") else "") for c in comparisons]
  return "\n".join(lines)


def instability_records(analysis: Dict[str, Any]) -> List[Dict[str, Any]]:
  inst = analysis.get("instability") or {}
  return [{"model": name, "seed": analysis.get("seed"), "epoch": p["epoch"], "step": p["step"],
           "split": inst.get("split"), "error_barriers": p["error_barriers"],
           "error_barrier_ci": p["error_barrier_ci"], "test_accuracy_ci": p["test_accuracy_ci"]}
          for name, curve in sorted(inst.get("models", {}).items()) for p in curve]


def instability_table(records: List[Dict[str, Any]],
                      cell: Callable = lambda r: stats.format_ci(r["error_barrier_ci"])) -> str:
  """Rows: models; columns: rewind epochs; cells: error barrier % [95% CI]."""
  epochs = sorted({r["epoch"] for r in records})
  models = list(dict.fromkeys(r["model"] for r in records))
  by = {(r["model"], r["epoch"]): r for r in records}
  rows = [[m] + [cell(by[m, e]) if (m, e) in by else "" for e in epochs] for m in models]
  return logs.markdown_table(["model"] + [f"rewind epoch {e:g}" for e in epochs], rows)


def hessian_table(records: List[Dict[str, Any]]) -> str:
  """Trace (exact, or ± s.e. and flagged when noisy) and Lanczos top eigenvalue per model."""
  def trace(r):
    if r.get("exact"):
      return f"{r['trace']:.4g} (exact)"
    noisy = "" if r.get("trusted") else " NOISY"
    return f"{r['trace']:.4g} ± {r['trace_stderr']:.2g}{noisy}"

  def top(r):
    if r.get("top_eigenvalue_residual") is None:
      return r["top_eigenvalue"]
    flag = "" if r.get("top_eigenvalue_converged") else ", not converged"
    return (f"{r['top_eigenvalue']:.4g} (residual "
            f"{r['top_eigenvalue_residual'] / max(abs(r['top_eigenvalue']), 1e-30):.1g}·λ{flag})")

  rows = [[r["model"], f"{100 * (r['sparsity'] or 0):.1f}%", r.get("method", "hutchinson"),
           trace(r), top(r), r.get("num_examples", "")] for r in records]
  return logs.markdown_table(["model", "sparsity", "diagonal method", "trace of the diagonal",
                         "top eigenvalue (Lanczos)", "examples"], rows)


def hessian_text(records: List[Dict[str, Any]]) -> List[str]:
  """The curvature section: methods, table, flags for noisy estimates, figures."""
  captions = sorted({r["caption"] for r in records if r.get("caption")})
  lines = ["Diagonal: " + "; ".join(f"{c}" for c in captions) if captions else "",
           hessian_table(records)]
  noisy = [r for r in records if r.get("trusted") is False]
  for r in noisy:
    lines.append(f"**{r['model']}: the Hessian diagonal is an estimate with relative standard "
                 f"error {r['relative_stderr']:.2f} > 0.3, noise at the scale of the diagonal "
                 "itself. It is left out of the histogram and must not be compared between "
                 "mask sources.**")
  if len(noisy) < len(records):
    shown = ", ".join(r["model"] for r in records if r.get("trusted") is not False)
    lines.append(f"![Hessian diagonal of {shown}](analysis/hessian_hist.png)")
  lines += [f"![{r['model']} spectral density]({r['density_png']})"
            for r in records if r.get("density_png")]
  return [line for line in lines if line]


def landscape_lines(analysis: Dict[str, Any], workdir: str) -> List[str]:
  lines = []
  for name, m in sorted(analysis.get("models", {}).items()):
    for kind, entry in sorted(m.get("landscape", {}).items()):
      png = os.path.relpath(entry["png"], workdir)
      lines.append(f"![{name} {kind}]({png})")
  return lines


def distill_text(d: Dict[str, Any], evaluation: Dict[str, Any], num_test: int) -> str:
  """The distilled set against its initialisation and random real subsets of the
  same size, each a mean over fresh nets with a 95% CI, and their comparison."""
  sets = (("distilled set", "distilled"), ("its initialisation (before distillation)", "initial"),
          ("random real subsets, same size (a new one per net)", "random_subset"))
  cis = {key: stats.mean_accuracy_ci(evaluation[key]["accuracies"], num_test)
         for _, key in sets if isinstance(evaluation.get(key), dict)}
  rows = [[name, stats.format_ci(cis[key]), evaluation[key].get("lr", "")]
          for name, key in sets if key in cis]
  on = f" on {d['model']}" if d.get("model") else ""
  text = (f"Method {d.get('method')}{on}, {d.get('ipc')} images per class; test accuracy % of "
          "fresh nets trained on each set:\n\n" +
          logs.markdown_table(["training set", "test accuracy % [95% CI]", "eval lr"], rows))
  if "distilled" in evaluation and "random_subset" in evaluation:
    diff = stats.paired_difference({0: evaluation["distilled"]["accuracies"]},
                                   {0: evaluation["random_subset"]["accuracies"]},
                                   "the distilled set", "random subsets", "test accuracy")
    text += "\n\n" + diff["sentence"] + " (nets, not seeds, are the units here.)"
  return text


def _figure(workdir: str, relpath: str, caption: str) -> List[str]:
  """A figure link only when the file exists."""
  return [f"![{caption}]({relpath})"] if os.path.exists(os.path.join(workdir, relpath)) else []


def _barrier_section(workdir: str, analysis: Dict[str, Any], records) -> List[str]:
  comparisons = source_comparisons(records)
  lines = ["## Error barriers between SGD-noise copies",
           f"Copies start {start_text(analysis.get('start', {}))} under the same mask and "
           "differ only in data order and augmentation. Barriers in two definitions, of the "
           f"error and the loss (results.json['barriers'] holds both): {BARRIER_DEFINITIONS}. "
           "BN 'repair' is REPAIR (Jordan et al. 2023) for nets without BatchNorm. One workdir "
           "is one init seed: each CI is a bootstrap over the pairs, which share copies (3 "
           "copies give 3 pairs), so it is too narrow; pool seeds with launch/aggregate.py.",
           barrier_table(records)]
  if comparisons:
    lines += ["### Mask sources compared at matched sparsity (paired differences)",
              "Error barrier in the endpoint-mean definition, paired by init seed.",
              comparison_text(comparisons)]
  lines += _figure(workdir, "analysis/interpolation.png", "interpolation")
  lines += _figure(workdir, "analysis/barrier_vs_sparsity.png",
                   "error barrier (endpoint mean) vs sparsity")
  return lines


def _instability_section(workdir: str, analysis: Dict[str, Any], records) -> List[str]:
  inst = analysis["instability"]
  how = ("train the remaining steps with the schedule continued (Frankle et al. 2020)"
         if inst.get("schedule") == "continue" else "each train a whole run from there")
  return ["## Instability vs rewind point",
          f"{inst['num_copies']} copies from each rewind epoch of the dense run (masked for "
          f"sparse models) {how}; {inst['split']} error barrier (endpoint mean definition) "
          "% [95% CI over pairs]:",
          instability_table(records)] + _figure(workdir, "analysis/instability.png",
                                                "instability vs rewind epoch")


def write(workdir: str, summary: Dict[str, Any]) -> Dict[str, Any]:
  """Writes report.md and results.json from the stage summaries and files.

  The config shown is DIR/config.json, the one the pipeline ran with.
  """
  with open(os.path.join(workdir, "config.json")) as f:
    config_text = f.read()
  init_seed = json.loads(config_text).get("seeds", {}).get("init")
  analysis = summary.get("analysis", {})
  results = {"accuracy": accuracy_records(workdir),
             "data_cost": data_cost_records(summary.get("imp", {})),
             **analysis_records(analysis),
             "instability": instability_records(analysis),
             "versions": runtime.software_versions()}
  results["comparisons"] = source_comparisons(results["barriers"])
  # Imported here, not at the top: reading a run's records (results.load,
  # docs/make_tables.py) never imports the analysis package; writing the
  # report asks each registered measure for its section.
  from lmcjax.analysis import measures  # pylint: disable=import-outside-toplevel
  measure_sections = []
  for name, part in measures.reports(workdir, analysis):
    for table, records in part.tables.items():
      validate.require(table not in results, f"measure {name!r} writes results.json[{table!r}], "
                       "which the report or another measure writes")
      results[table] = records
    measure_sections += part.lines
  # config.model is the network of train/imp/analysis; a distill-only run names its own.
  uses_model = any(stage in summary for stage in ("train", "imp", "analysis"))
  model = f", model {summary.get('model')}" if uses_model else ""
  sections = ["# lmcjax report",
              f"Dataset {summary.get('dataset')} ({summary.get('num_train')} train / "
              f"{summary.get('num_test')} test images){model}, init seed {init_seed}."]
  eval_path = os.path.join(layout.distill_dir(workdir), "eval.json")
  if isinstance(summary.get("distill"), dict) and os.path.exists(eval_path):
    sections += ["## Distilled set", distill_text(summary["distill"], logs.read_json(eval_path),
                                                  summary.get("num_test", 0))]
  if results["accuracy"]:
    sections += ["## Test accuracy vs sparsity (IMP's real-data retraining, one net each)",
                 "95% CI: Wilson interval over the test examples of one net.",
                 accuracy_table(results["accuracy"])]
    sections += _figure(workdir, "imp/accuracy_vs_sparsity.png", "accuracy vs sparsity")
  if results["barriers"]:
    sections += _barrier_section(workdir, analysis, results["barriers"])
  if results["instability"]:
    sections += _instability_section(workdir, analysis, results["instability"])
  if results["hessian"]:
    sections += ["## Hessian (first branch of each model)"] + hessian_text(results["hessian"])
  landscapes = landscape_lines(analysis, workdir)
  if landscapes:
    sections += ["## Loss landscapes"] + landscapes
  sections += measure_sections
  if "imp" in summary:
    sections += ["## Data cost", data_cost_text(summary["imp"])]
  sections += ["## Stage times", "Wall seconds of the run that finished each stage; a resumed "
               "stage's earlier, interrupted attempts are not counted.", logs.markdown_table(
                   ["stage", "seconds", "resumed"],
                   [[k, v["seconds"], "yes" if v.get("resumed") else "no"]
                    for k, v in summary.items() if isinstance(v, dict) and "seconds" in v])]
  sections += ["## Config", "```json\n" + config_text.strip() + "\n```",
               "## Software", logs.markdown_table(["package", "version"],
                                             sorted(results["versions"].items()))]
  if logs.is_lead_process():
    logs.write_text(os.path.join(workdir, "report.md"), "\n\n".join(sections) + "\n")
    logs.write_json(os.path.join(workdir, "results.json"), results)
  return results


def run_stage(s: runtime.Setup, workdir: str, log: logs.MetricsLog) -> Dict[str, Any]:
  del s, log
  summary = logs.read_json(os.path.join(workdir, "summary.json"))
  write(workdir, summary)
  return {"report": os.path.join(workdir, "report.md"),
          "results": os.path.join(workdir, "results.json")}


# Reads only the files the other stages wrote; cheap, so it always runs.
STAGE = base.Stage("report", run_stage, check_config, reads=(),
                      depends_on=("train", "distill", "imp", "analysis"), always_run=True)
