"""The experiment report: DIR/report.md and DIR/results.json.

results.json holds flat record lists (one per table), so
`pandas.json_normalize(results["accuracy"])` gives a tidy frame.
"""
import json
import os
from typing import Any, Dict, List, Sequence


from lmcjax import experiment
from lmcjax import imp
from lmcjax import logs
from lmcjax import workdir as layout

CONFIG_FIELDS = ()
DEPENDS_ON = ("train", "distill", "imp", "analysis")
OUTPUT_DIRS = lambda workdir: ()
ALWAYS_RUN = True  # cheap, and it reads every other stage's files


def check_config(config) -> None:
  del config  # reads only what the other stages wrote


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def read_jsonl(path: str) -> List[Dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def accuracy_records(workdir: str) -> List[Dict[str, Any]]:
  rows = read_jsonl(os.path.join(layout.imp_dir(workdir), "imp.jsonl"))
  return [{"source": r["source"], "round": r["round"], "sparsity": r["sparsity"],
           "test_accuracy": r["test_accuracy"], "test_loss": r["test_loss"],
           "examples_seen": r["examples_seen"]} for r in rows]


def accuracy_table(records: List[Dict[str, Any]]) -> str:
  """Rows: IMP round (sparsity); columns: mask sources."""
  sources = sorted({r["source"] for r in records})
  by_round: Dict[int, Dict[str, Any]] = {}
  for r in records:
    by_round.setdefault(r["round"], {"sparsity": r["sparsity"]})[r["source"]] = r["test_accuracy"]
  rows = [[k, f"{100 * v['sparsity']:.1f}%"] + [
      f"{100 * v[s]:.2f}" if s in v else "" for s in sources] for k, v in sorted(by_round.items())]
  return markdown_table(["round", "sparsity"] + [f"{s} acc %" for s in sources], rows)


def data_cost_records(imp_summary: Dict[str, Any]) -> List[Dict[str, Any]]:
  cost = imp_summary.get("data_cost", {})
  return [{"source": src, **{k: v for k, v in c.items() if not isinstance(v, dict)}}
          for src, c in cost.items() if isinstance(c, dict) and src in imp.SOURCES]


def data_cost_text(imp_summary: Dict[str, Any]) -> str:
  records = data_cost_records(imp_summary)
  if not records:
    return "No IMP run."
  keys = sorted({k for r in records for k in r if k != "source"})
  table = markdown_table(["source"] + keys, [[r["source"]] + [r.get(k, "") for k in keys]
                                             for r in records])
  ratio = imp_summary.get("data_cost", {}).get("real_over_distilled")
  if isinstance(ratio, dict):
    ratio_text = "; ".join(f"{k}: {v:.1f}x" for k, v in ratio.items() if isinstance(v, (int, float)))
    table += f"\n\nReal IMP over distilled IMP (finding the masks): {ratio_text}."
  return table


def analysis_records(analysis: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
  """Flat barrier and Hessian records, one per analysed model (dense, source_rKK)."""
  barriers, hessian = [], []
  for name, m in sorted(analysis.get("models", {}).items()):
    source = name.rsplit("_r", 1)[0]
    for where, b in sorted(m.get("barriers", {}).items()):
      barriers.append({"model": name, "source": source, "sparsity": m.get("sparsity"),
                       "measured_on": where, **b})
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


def _pm(mean, std, scale=100.0) -> str:
  """mean ± std; errors in percent (scale 100), losses as they are, 3 significant digits."""
  return f"{scale * mean:.3g} ± {scale * std:.2g}"


def barrier_table(records: List[Dict[str, Any]]) -> str:
  rows = [[r["model"], f"{100 * (r['sparsity'] or 0):.1f}%", r["measured_on"],
           _pm(r["error_barrier_mean"], r["error_barrier_std"]), f"{100 * r['error_barrier_max']:.2f}",
           _pm(r["loss_barrier_mean"], r["loss_barrier_std"], 1.0)] for r in records]
  return markdown_table(["model", "sparsity", "split/BN", "error barrier % (mean ± std over pairs)",
                         "max %", "loss barrier"], rows)


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
  return markdown_table(["model", "sparsity", "diagonal method", "trace of the diagonal",
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


def distill_text(d: Dict[str, Any]) -> str:
  """The distilled set against its initialisation and random real subsets of the same size."""
  rows = [[name, _pm(d[key]["mean"], d[key]["std"]), d[key].get("lr", "")] for name, key in
          (("distilled set", "distilled"), ("its initialisation (before distillation)", "initial"),
           ("random real subsets, same size (one per seed)", "random_subset"))
          if isinstance(d.get(key), dict)]
  on = f" on {d['model']}" if d.get("model") else ""
  head = (f"Method {d.get('method')}{on}, {d.get('ipc')} images per class; test accuracy % of "
          "fresh nets trained on each set (mean ± std over seeds):")
  return head + "\n\n" + markdown_table(["training set", "test accuracy %", "eval lr"], rows)


def write(workdir: str, summary: Dict[str, Any], config) -> Dict[str, Any]:
  """Writes report.md and results.json from the stage summaries and files."""
  analysis = summary.get("analysis", {})
  results = {"accuracy": accuracy_records(workdir),
             "data_cost": data_cost_records(summary.get("imp", {})),
             **analysis_records(analysis),
             "versions": experiment.software_versions()}
  # config.model is the network of train/imp/analysis; a distill-only run names its own.
  uses_model = any(stage in summary for stage in ("train", "imp", "analysis"))
  model = f", model {summary.get('model')}" if uses_model else ""
  sections = ["# lmcjax report", f"Dataset {summary.get('dataset')}{model}."]
  if isinstance(summary.get("distill"), dict) and "distilled" in summary["distill"]:
    sections += ["## Distilled set", distill_text(summary["distill"])]
  if results["accuracy"]:
    sections += ["## Test accuracy vs sparsity (retrained on real data from the rewind point)",
                 accuracy_table(results["accuracy"]), "![accuracy vs sparsity](imp/accuracy_vs_sparsity.png)"]
  if results["barriers"]:
    sections += ["## Error barriers between SGD-noise branches",
                 "Copies trained from the rewind point under the same mask, differing only in "
                 "data order and augmentation; barrier = max over alpha of the error minus the "
                 "mean endpoint error (Frankle et al. 2020).",
                 barrier_table(results["barriers"]),
                 "![interpolation](analysis/interpolation.png)",
                 "![barrier vs sparsity](analysis/barrier_vs_sparsity.png)"]
  if results["hessian"]:
    sections += ["## Hessian (first branch of each model)"] + hessian_text(results["hessian"])
  if analysis.get("models"):
    sections += ["## Loss landscapes"] + landscape_lines(analysis, workdir)
  if "imp" in summary:
    sections += ["## Data cost", data_cost_text(summary["imp"])]
  sections += ["## Stage times", markdown_table(
      ["stage", "seconds"], [[k, v.get("seconds", float("nan"))] for k, v in summary.items()
                             if isinstance(v, dict) and "seconds" in v])]
  sections += ["## Config", "```json\n" + config.to_json_best_effort(indent=2, sort_keys=True) + "\n```",
               "## Software", markdown_table(["package", "version"],
                                             sorted(results["versions"].items()))]
  if logs.is_lead_process():
    with open(os.path.join(workdir, "report.md.tmp"), "w") as f:
      f.write("\n\n".join(sections) + "\n")
    os.replace(os.path.join(workdir, "report.md.tmp"), os.path.join(workdir, "report.md"))
    logs.write_json(os.path.join(workdir, "results.json"), results)
  return results


def run_stage(s: experiment.Setup, workdir: str, log: logs.MetricsLog) -> Dict[str, Any]:
  del log
  summary = logs.read_json(os.path.join(workdir, "summary.json"))
  write(workdir, summary, s.config)
  return {"report": os.path.join(workdir, "report.md"),
          "results": os.path.join(workdir, "results.json")}
