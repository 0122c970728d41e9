"""Markdown tables for the docs, made from run outputs, never typed by hand.

  python docs/make_tables.py runs/default                              # print
  python docs/make_tables.py default=runs/default --into docs/results.md
  python docs/make_tables.py cifar10_small=runs/c10s cifar10_small_w128=runs/c10w128 \\
      --into docs/results.md

Each input is NAME=PATH (or PATH, named by its last directory) and PATH is
either
- a run's workdir: DIR/results.json and DIR/summary.json (the report stage
  writes them), DIR/distill/eval.json when it distilled; or
- a sweep root: ROOT/pooled.json and ROOT/aggregate.json (launch/aggregate.py
  writes them), and the job workdirs under it; or a dose-response root:
  ROOT/dose_response.json (launch/aggregate.py, when the jobs differ in one
  non-seed axis); or
- several run workdirs, comma-separated, that distilled (configs/distill_mnist5k.py
  with each method): one table, a row per run's distilled set.

  python docs/make_tables.py \\
      distill_mnist5k=runs/distill_dm,runs/distill_dc,runs/distill_idc,runs/distill_mtt \\
      --into docs/results.md

The tables are the report's own (lmcjax.report, lmcjax.pooled), so a docs page
and report.md / pooled.md never disagree. Each block starts with a line naming
the outputs it was made from, the CPU and the jax version. With --into PAGE,
the block of input NAME replaces whatever lies between the lines
`<!-- tables:NAME begin -->` and `<!-- tables:NAME end -->` of PAGE; a page
without that region is an error, so a table cannot silently go missing.

--figures DIR redraws a run's figures from the numbers saved beside them
(analysis/interpolation.json, analysis/barrier_vs_sparsity.json,
imp/imp.jsonl), or a sweep root's pooled figures (ROOT/pooled_<figure>.json),
with lmcjax.plots as DIR/NAME_<figure>.png, for the docs:

  python docs/make_tables.py default=runs/default --into docs/results.md \\
      --figures docs/figures

The CPU: a run records its jax version (results.json "versions") but not its
CPU, so the CPU is the run's `versions.cpu` if it has one, else --cpu, else
the `lscpu` model name of the machine running this script (said so in the
table's line: run it where the run ran, or pass --cpu).
"""
import argparse
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lmcjax import dose_response
from lmcjax import imp
from lmcjax import logs
from lmcjax import plots
from lmcjax import pooled
from lmcjax import report
from lmcjax import stats
from lmcjax import workdir as layout

Tables = List[Tuple[str, str]]  # (heading, markdown body)


def local_cpu() -> str:
  """`lscpu`'s 'Model name' of this machine, or 'unknown CPU'."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return "unknown CPU"
  match = re.search(r"^Model name:\s*(.+)$", out, re.MULTILINE)
  return match.group(1).strip() if match else "unknown CPU"


def machine_text(versions: Sequence[Dict[str, Any]], cpu_flag: Optional[str]) -> str:
  """'CPU AMD EPYC, ..., jax 0.10.2 (backend cpu)' from the runs' recorded versions."""
  cpus = sorted({v["cpu"] for v in versions if v.get("cpu")})
  if cpus:
    cpu = " / ".join(cpus)
  elif cpu_flag:
    cpu = f"{cpu_flag} (--cpu)"
  else:
    cpu = (f"{local_cpu()}, {os.cpu_count()} cores (the machine that made these tables: "
           "the run records no CPU)")
  jax = " / ".join(sorted({v.get("jax", "?") for v in versions})) or "?"
  backend = " / ".join(sorted({v.get("backend", "?") for v in versions})) or "?"
  return f"CPU {cpu}; jax {jax} (backend {backend})"


def _first_split(records: Sequence[Dict[str, Any]]) -> str:
  """The split/BN mode the tables show ('test/interpolate' sorts before 'train/...')."""
  return sorted({r["measured_on"] for r in records})[0] if records else ""


def _on_first_split(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The records of _first_split: the others are in the run's report.md."""
  first = _first_split(records)
  return [r for r in records if r["measured_on"] == first]


def model_table(results: Dict[str, Any]) -> str:
  """One row per analysed model: copies' accuracy, error barrier, Hessian trace and
  top eigenvalue, for the first split/BN the analysis measured."""
  barriers = results.get("barriers", [])
  if not barriers:
    return ""
  where = _first_split(barriers)
  hessian = {r["model"]: r for r in results.get("hessian", [])}

  def trace(h):
    if not h:
      return ""
    return f"{h['trace']:.4g}" + (" (exact)" if h.get("exact") else f" ± {h['trace_stderr']:.2g}")

  def top(h):
    if not h or h.get("top_eigenvalue") is None:
      return ""
    res = h.get("top_eigenvalue_residual")
    rel = "" if res is None else f" ({res / max(abs(h['top_eigenvalue']), 1e-30):.1g}·λ)"
    return f"{h['top_eigenvalue']:.4g}{rel}"

  rows = [[r["model"], f"{100 * (r['sparsity'] or 0):.1f}%", stats.format_ci(r["test_accuracy_ci"]),
           stats.format_ci(r["error_barrier_ci"]), trace(hessian.get(r["model"])),
           top(hessian.get(r["model"]))]
          for r in barriers if r["measured_on"] == where]
  return (f"Measured on {where}.\n\n" + logs.markdown_table(
      ["model", "sparsity", "copies' test acc % [95% CI]", "error barrier % [95% CI]",
       "Hessian trace", "top eigenvalue (Lanczos residual)"], rows))


def stage_seconds(summary: Dict[str, Any], stages: Sequence[str]) -> str:
  """Wall seconds per stage, in the order the run ran them."""
  rows = [[k, f"{summary[k]['seconds']:.0f}", "yes" if summary[k].get("resumed") else "no"]
          for k in stages if isinstance(summary.get(k), dict) and "seconds" in summary[k]]
  return logs.markdown_table(["stage", "wall seconds", "resumed"], rows) if rows else ""


def measure_tables(workdir: str, analysis: Dict[str, Any]) -> Tables:
  """Each registered measure's report section (measures.Report.lines), as
  report.md has it, less its figures (their paths are the run's)."""
  from lmcjax.analysis import measures  # pylint: disable=import-outside-toplevel
  tables: Tables = []
  for _, part in measures.reports(workdir, analysis):
    if part.lines:
      body = [line for line in part.lines[1:] if not line.startswith("![")]
      tables.append((part.lines[0].lstrip("# "), "\n\n".join(body)))
  return tables


def run_tables(workdir: str) -> Tables:
  """The tables of one run's workdir, in the order of its report.md."""
  results = logs.read_json(os.path.join(workdir, "results.json"))
  summary = logs.read_json(os.path.join(workdir, "summary.json"))
  tables: Tables = [("Per analysed model", model_table(results))]
  eval_path = os.path.join(layout.distill_dir(workdir), "eval.json")
  if isinstance(summary.get("distill"), dict) and os.path.exists(eval_path):
    tables.append(("Distilled set", report.distill_text(
        summary["distill"], logs.read_json(eval_path), summary.get("num_test", 0))))
  if results.get("accuracy"):
    tables.append(("IMP's retrained nets (one each; Wilson CI over test examples)",
                   report.accuracy_table(results["accuracy"])))
  if results.get("barriers"):
    tables.append(("Error barrier vs sparsity per mask source (CI over the pairs of one seed, "
                   "which share copies: too narrow)",
                   pooled._sparsity_table(results["barriers"])))  # pylint: disable=protected-access
  if results.get("comparisons"):
    split = _first_split(results["comparisons"])
    tables.append((f"Mask sources compared at matched sparsity ({split})",
                   report.comparison_text(_on_first_split(results["comparisons"]))))
  if results.get("instability"):
    tables.append(("Instability vs rewind point", report.instability_table(results["instability"])))
  if "imp" in summary:
    tables.append(("Data cost of finding the masks", report.data_cost_text(summary["imp"])))
  tables += measure_tables(workdir, summary.get("analysis", {}))
  stages = logs.read_json(os.path.join(workdir, "config.json")).get("stages") or list(summary)
  tables.append(("Stage times", stage_seconds(summary, stages)))
  return [(h, body) for h, body in tables if body]


def sweep_tables(root: str) -> Tables:
  """The pooled study of a sweep root, plus the distilled set, data cost and stage
  times of its jobs."""
  study = logs.read_json(os.path.join(root, "pooled.json"))
  records = logs.read_json(os.path.join(root, "aggregate.json"))
  done = [r for r in records if r.get("status") == "done"]
  tables: Tables = [
      ("Error barrier vs sparsity per mask source (max over alpha minus the endpoints' mean; "
       "hierarchical bootstrap over seeds and pairs)",
       pooled._sparsity_table(study["barriers"])),  # pylint: disable=protected-access
      (f"Mask sources compared at matched sparsity, paired by seed "
       f"({_first_split(study['comparisons'])})",
       report.comparison_text(_on_first_split(study["comparisons"]))),
      ("Test accuracy of the copies", pooled._accuracy_table(study["barriers"]))]  # pylint: disable=protected-access
  if any("error_barrier_chord_ci" in r for r in study["barriers"]):
    tables.insert(1, ("Error barrier vs sparsity, chord definition (max over alpha above the "
                      "line between the endpoints)",
                      pooled._sparsity_table(study["barriers"], "error_barrier_chord_ci")))  # pylint: disable=protected-access
  if study.get("instability"):
    tables.append(("Instability vs rewind point", report.instability_table(study["instability"])))
  for section in study.get("measure_sections", {}).values():  # the measures' pooled sections
    body = [line for line in section[1:] if not line.startswith("![")]
    tables.append((section[0].lstrip("# "), "\n\n".join(body)))
  dense = [r["summary.train.test_accuracy"] for r in done if "summary.train.test_accuracy" in r]
  if dense:
    ci = stats.mean_accuracy_ci(dense, int(done[0]["summary.num_test"]))
    tables.append(("Dense run (train stage), one net per seed", stats.format_ci(ci)))
  stages = [s for s in ("distill", "train", "imp", "analysis", "report")
            if any(f"summary.{s}.seconds" in r for r in done)]
  tables.append(("Stage wall times per job, minutes", logs.markdown_table(
      ["job"] + stages, [[r["job"]] + [f"{r[f'summary.{s}.seconds'] / 60:.1f}"
                                       if f"summary.{s}.seconds" in r else "" for s in stages]
                         for r in done])))
  if done:
    first = os.path.join(root, done[0]["job"])
    for heading, body in run_tables(first):
      if heading.startswith(("Distilled set", "Data cost")):
        tables.append((f"{heading} ({done[0]['job']})", body))
  return tables


def _mean_std(entry: Optional[Dict[str, Any]]) -> str:
  return "" if not entry else f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def distill_comparison(workdirs: Sequence[str]) -> Tables:
  """One row per run's distilled set: test accuracy % (mean ± std over its
  evaluation nets) of nets trained on it, on its initialisation and on random
  real subsets of its size, and the distillation's time."""
  rows = []
  for workdir in workdirs:
    summary = logs.read_json(os.path.join(workdir, "summary.json"))
    config = logs.read_json(os.path.join(workdir, "config.json"))
    d = summary.get("distill")
    if not isinstance(d, dict):
      raise SystemExit(f"make_tables: {workdir} has no distill stage in summary.json")
    iterations = config.get("distill", {}).get(d["method"], {}).get("iterations", "?")
    per_iteration = d.get("seconds_per_iteration")
    rows.append([f"{d['method'].upper()} ({iterations} iterations)", _mean_std(d.get("distilled")),
                 _mean_std(d.get("initial")), _mean_std(d.get("random_subset")),
                 "" if per_iteration is None else f"{per_iteration:.2f}",
                 f"{d['seconds'] / 60:.1f}" if "seconds" in d else ""])
  table = logs.markdown_table(["method", "distilled set", "its init", "random real subsets",
                               "s/iteration", "whole stage, min"], rows)
  return [("Distilled sets: test accuracy % of fresh nets, mean ± std over the nets", table)]


def _versions(path: str) -> List[Dict[str, Any]]:
  """The recorded software versions of a run, or of every finished job of a sweep."""
  if os.path.exists(os.path.join(path, "aggregate.json")):  # a sweep root
    records = logs.read_json(os.path.join(path, "aggregate.json"))
    return [{k.split(".")[-1]: v for k, v in r.items() if k.startswith("results.versions.")}
            for r in records if r.get("status") == "done"]
  return [logs.read_json(os.path.join(path, "results.json")).get("versions", {})]


def block(paths: Sequence[str], cpu_flag: Optional[str] = None) -> str:
  """The markdown block of one input: where it came from, then its tables."""
  for path in paths:
    if not any(os.path.exists(os.path.join(path, f))
               for f in ("results.json", "pooled.json", "dose_response.json")):
      raise SystemExit(f"make_tables: {path} has none of results.json (a run; its report stage "
                       "writes it), pooled.json or dose_response.json (a sweep root; "
                       "launch/aggregate.py writes them)")
  kind = _root_kind(paths[0]) if len(paths) == 1 else None
  if len(paths) > 1:
    tables, made_from = distill_comparison(paths), "summary.json, config.json"
  elif kind == "dose":
    tables = dose_response.tables(logs.read_json(_dose_json(paths[0])))
    made_from = "dose_response.json"
  elif kind == "pooled":
    tables, made_from = sweep_tables(paths[0]), "pooled.json, aggregate.json"
  else:
    tables, made_from = run_tables(paths[0]), "results.json, summary.json"
  names = ", ".join(f"`{os.path.basename(os.path.normpath(p))}/`" for p in paths)
  versions = [v for p in paths for v in _versions(p)]
  lines = [f"*Generated by `python docs/make_tables.py` from {names} ({made_from}). "
           f"{machine_text(versions, cpu_flag)}. Every interval is 95%.*"]
  for heading, body in tables:
    lines += [f"**{heading}**", body]
  return "\n\n".join(lines)


def redraw_figures(workdir: str, out_dir: str, name: str) -> List[str]:
  """A run's interpolation, barrier and accuracy figures redrawn from their
  saved numbers as OUT_DIR/NAME_<figure>.png; returns the paths written."""
  analysis, imp_dir = layout.analysis_dir(workdir), layout.imp_dir(workdir)
  figures = {}
  interpolation = os.path.join(analysis, "interpolation.json")
  if os.path.exists(interpolation):
    saved = logs.read_json(interpolation)
    figures["interpolation"] = plots.draw_interpolation(saved["curves"], saved["metric"])
  barriers = os.path.join(analysis, "barrier_vs_sparsity.json")
  if os.path.exists(barriers):
    saved = logs.read_json(barriers)
    figures["barrier_vs_sparsity"] = plots.draw_ci_lines(
        saved["series"], saved["xlabel"], saved["ylabel"],
        "one seed: CI over pairs, which share copies", saved["scale"])
  accuracy = os.path.join(imp_dir, imp.RESULTS_FILE)
  if os.path.exists(accuracy):
    figures["accuracy_vs_sparsity"] = plots.draw_accuracy_vs_sparsity(
        logs.read_jsonl(accuracy), imp.SOURCES)
  return _save_figures(figures, out_dir, name)


def _dose_json(root: str) -> str:
  return os.path.join(root, f"{dose_response.STEM}.json")


def _root_kind(path: str) -> Optional[str]:
  """'dose' or 'pooled' for a sweep root (what launch/aggregate.py pooled it
  into), None for a run's workdir."""
  if os.path.exists(_dose_json(path)):
    return "dose"
  return "pooled" if os.path.exists(os.path.join(path, "pooled.json")) else None


def redraw_pooled_figures(root: str, out_dir: str, name: str) -> List[str]:
  """A sweep root's pooled or dose-response figures (ROOT/pooled_<figure>.json,
  ROOT/dose_response_<figure>.json: the numbers saved beside each) redrawn as
  OUT_DIR/NAME_<figure>.png."""
  figures = {}
  for entry in sorted(os.listdir(root)):
    prefix = next((p for p in ("pooled_", f"{dose_response.STEM}_") if entry.startswith(p)), "")
    if not prefix or not entry.endswith(".json"):
      continue
    saved, figure = logs.read_json(os.path.join(root, entry)), entry[len(prefix):-len(".json")]
    if "panels" in saved:  # dose_response.plot_barrier_vs_set_accuracy's numbers
      figures[figure] = dose_response.draw_barrier_vs_set_accuracy(
          saved["panels"], saved["axis"], saved["measured_on"])
    else:
      figures[figure] = plots.draw_ci_lines(
          saved["series"], saved["xlabel"], saved["ylabel"], saved.get("title", ""),
          saved["scale"], saved.get("xticklabels", ()))
  return _save_figures(figures, out_dir, name)


def _save_figures(figures: Dict[str, Any], out_dir: str, name: str) -> List[str]:
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for figure_name, fig in figures.items():
    path = os.path.join(out_dir, f"{name}_{figure_name}.png")
    if figure_name != "interpolation":  # draw_interpolation lays out its own legend
      fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    paths.append(path)
  return paths


def replace_region(page: str, name: str, body: str) -> str:
  """page with the text between NAME's begin and end markers replaced by body."""
  begin, end = f"<!-- tables:{name} begin -->", f"<!-- tables:{name} end -->"
  pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
  found = pattern.findall(page)
  if len(found) != 1:
    raise SystemExit(f"make_tables: the page needs exactly one '{begin}' ... '{end}' region, "
                     f"found {len(found)}")
  return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", page)


def _named(spec: str) -> Tuple[str, List[str]]:
  """'NAME=P1,P2' -> (NAME, [P1, P2]); 'PATH' -> (its last directory, [PATH])."""
  name, sep, paths = spec.partition("=")
  if not sep:
    name, paths = os.path.basename(os.path.normpath(spec)), spec
  return name, paths.split(",")


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("inputs", nargs="+", metavar="[NAME=]PATH[,PATH...]",
                      help="a run's workdir, a sweep root, or distilling runs to compare; "
                           "NAME names its region")
  parser.add_argument("--into", metavar="PAGE",
                      help="write each input's block into PAGE's tables:NAME region "
                           "(default: print the blocks)")
  parser.add_argument("--cpu", help="the CPU the runs ran on, where they did not record it")
  parser.add_argument("--figures", metavar="DIR",
                      help="also redraw each run's figures from their saved numbers into DIR")
  args = parser.parse_args(argv)
  named = list(map(_named, args.inputs))
  blocks = [(name, block(paths, args.cpu)) for name, paths in named]
  if args.figures:
    for name, paths in named:
      if len(paths) != 1:  # block() checked each path holds results.json or a pooled study
        continue
      redraw = redraw_pooled_figures if _root_kind(paths[0]) else redraw_figures
      for path in redraw(paths[0], args.figures, name):
        print(f"make_tables: {path} ({os.path.getsize(path) // 1024} kB)", file=sys.stderr)
  if not args.into:
    print("\n\n".join(f"<!-- tables:{name} -->\n{text}" for name, text in blocks))
    return
  with open(args.into) as f:
    page = f.read()
  for name, text in blocks:
    page = replace_region(page, name, text)
  logs.write_text(args.into, page)
  print(f"make_tables: {len(blocks)} block(s) -> {args.into}", file=sys.stderr)


if __name__ == "__main__":
  main()
