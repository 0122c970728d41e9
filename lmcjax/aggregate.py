"""Merges the workdirs of a sweep into ROOT/aggregate.json and ROOT/aggregate.md.

One record per job: its name, index and status, its sweep overrides as
columns named by their config paths ('seeds.init'), and its DIR/summary.json
and DIR/results.json flattened into 'summary.*' and 'results.*' columns, so
`pandas.json_normalize(json.load(open('ROOT/aggregate.json')))` is a table.

Jobs come from ROOT/sweep.json (written by every sweep job) and from any
subdirectory holding a summary or config, so a job that never started is
reported 'missing' and one that was killed midway 'unfinished'; neither
stops the merge.

Then the finished jobs are pooled: over seeds when they differ in seed axes
only (lmcjax/pooled.py), per value of the one non-seed axis they differ in
otherwise (lmcjax/dose_response.py). Jobs differing in two non-seed axes are
refused, after aggregate.{json,md} are written.
"""
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from lmcjax import dose_response
from lmcjax import logs
from lmcjax import pooled
from lmcjax import sweep
from lmcjax import validate

Record = Dict[str, Any]
DONE, UNFINISHED, MISSING, UNREADABLE = "done", "unfinished", "missing", "unreadable"
SEED_PREFIX = "seeds."


def flatten(tree: Any, prefix: str) -> Dict[str, Any]:
  """Nested dicts to one level with dotted keys; lists stay whole cells."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f"{prefix}.{key}"))
  return out


def _read(path: str) -> Optional[Dict[str, Any]]:
  return logs.read_json(path) if os.path.exists(path) else None


def _discover(root: str) -> List[Dict[str, Any]]:
  """Job records {index, name, overrides}: the manifest's, then any other job dirs."""
  manifest = _read(os.path.join(root, sweep.MANIFEST))
  jobs = list(manifest["jobs"]) if manifest else []
  known = {j["name"] for j in jobs}
  for name in sorted(os.listdir(root)):
    workdir = os.path.join(root, name)
    if name in known or not os.path.isdir(workdir):
      continue
    job = _read(os.path.join(workdir, sweep.JOB_FILE))
    if job or any(os.path.exists(os.path.join(workdir, f))
                  for f in ("summary.json", "config.json")):
      jobs.append(job or {"index": None, "name": name, "overrides": {}})
  return jobs


def _status(workdir: str, summary: Optional[Dict[str, Any]]) -> str:
  if not os.path.isdir(workdir):
    return MISSING
  if summary is None:
    return UNFINISHED
  config = _read(os.path.join(workdir, "config.json")) or {}
  # summary.json is rewritten after every stage: done means every stage is in it.
  stages = config.get("stages", [])
  return DONE if stages and all(s in summary for s in stages) else UNFINISHED


def job_record(root: str, job: Dict[str, Any]) -> Record:
  """The flat record of one job; a missing or half-written workdir is a status, not an error."""
  workdir = os.path.join(root, job["name"])
  record: Record = {"job": job["name"], "index": job["index"], **job["overrides"]}
  try:
    summary = _read(os.path.join(workdir, "summary.json"))
    results = _read(os.path.join(workdir, "results.json"))
  except ValueError as e:  # truncated JSON, e.g. written by a tool without atomic writes
    return {**record, "status": UNREADABLE, "error": str(e)}
  record["status"] = _status(workdir, summary)
  for prefix, tree in (("summary", summary), ("results", results)):
    if tree is not None:
      record.update(flatten(tree, prefix))
  return record


def collect(root: str) -> List[Record]:
  """One record per job under root, in job order (then name for jobs outside the sweep)."""
  validate.require(os.path.isdir(root), f"sweep root not found: {root}")
  jobs = _discover(root)
  validate.require(jobs, f"no job workdirs under {root} (no {sweep.MANIFEST}, no DIR/summary.json)")
  return [job_record(root, j) for j in jobs]


def _is_metric(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_columns(records: Sequence[Record], patterns: Sequence[str] = ()) -> List[str]:
  """Numeric summary/results columns (software versions left out), optionally filtered."""
  columns = []
  for record in records:
    for key, value in record.items():
      if (key.startswith(("summary.", "results.")) and ".versions." not in key
          and _is_metric(value) and key not in columns):
        columns.append(key)
  if patterns:
    columns = [c for c in columns if any(p in c for p in patterns)]
  return columns


def override_columns(records: Sequence[Record]) -> List[str]:
  fixed = {"job", "index", "status", "error"}
  columns = []
  for record in records:
    columns += [k for k in record
                if k not in fixed and not k.startswith(("summary.", "results."))
                and k not in columns]
  return columns


def varying(records: Sequence[Record], metrics: Sequence[str]) -> List[str]:
  """The metrics that differ between finished jobs (sizes and step counts rarely do)."""
  done = [r for r in records if r["status"] == DONE]
  return [m for m in metrics if len({repr(r.get(m)) for r in done}) > 1]


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, (list, tuple)):
    return sweep.format_value(value)
  return str(value)


def _mean_std(values: Sequence[float]) -> str:
  if not values:
    return ""
  std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
  return f"{np.mean(values):.4g} ± {std:.2g} (n={len(values)})"


def seed_means(records: Sequence[Record], overrides: Sequence[str],
               metrics: Sequence[str]) -> Tuple[List[str], List[List[Any]]]:
  """Rows of mean ± std (sample std) over the seed axes, per setting of the other axes."""
  keep = [c for c in overrides if not c.startswith(SEED_PREFIX)]
  groups: Dict[Tuple[str, ...], List[Record]] = {}
  for record in records:
    if record["status"] == DONE:
      groups.setdefault(tuple(_cell(record.get(c)) for c in keep), []).append(record)
  rows = [list(key) + [_mean_std([r[m] for r in group if _is_metric(r.get(m))]) for m in metrics]
          for key, group in groups.items()]
  return keep + list(metrics), rows


def markdown(root: str, records: Sequence[Record], patterns: Sequence[str] = ()) -> str:
  overrides, metrics = override_columns(records), metric_columns(records, patterns)
  counts = {s: sum(r["status"] == s for r in records)
            for s in (DONE, UNFINISHED, MISSING, UNREADABLE)}
  lines = [f"# Sweep aggregate: {root}", "",
           f"{len(records)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), ""]
  short = [m.split(".", 1)[1] if m.startswith("summary.") else m for m in metrics]
  lines.append(logs.markdown_table(
      ["job", "status"] + overrides + short,
      [[r["job"], r["status"]] + [r.get(c) for c in overrides + metrics] for r in records], _cell))
  if any(c.startswith(SEED_PREFIX) for c in overrides) and counts[DONE]:
    header, rows = seed_means(records, overrides, varying(records, metrics))
    lines += ["", "## Mean ± std over seeds (finished jobs)", ""]
    lines.append(logs.markdown_table(
        [h.split(".", 1)[1] if h.startswith("summary.") else h for h in header], rows, _cell))
  return "\n".join(lines) + "\n"


def aggregate(root: str, patterns: Sequence[str] = (), reference_root: str = "") -> List[Record]:
  """Writes ROOT/aggregate.json (a list of flat records) and ROOT/aggregate.md.

  reference_root: another sweep root whose finished jobs supply, to a
  dose-response, the sources its jobs leave out (dose_response.study).
  Returns the records.
  """
  references = _finished(collect(reference_root)) if reference_root else []
  validate.require(not reference_root or references,
                   f"--reference_root {reference_root!r} holds no finished job")
  records = collect(root)
  logs.write_json(os.path.join(root, "aggregate.json"), records)
  logs.write_text(os.path.join(root, "aggregate.md"), markdown(root, records, patterns))
  _pool(root, records, references, reference_root)
  return records


def _finished(records: Sequence[Record]) -> List[Record]:
  return [r for r in records if r["status"] == DONE]


def varying_axes(records: Sequence[Record]) -> List[str]:
  """The non-seed override columns whose value differs between the records."""
  return [c for c in override_columns(records) if not c.startswith(SEED_PREFIX)
          and len({repr(r.get(c)) for r in records}) > 1]


def _pool(root: str, records: Sequence[Record], references: Sequence[Record] = (),
          reference_root: str = "") -> None:
  """Pools the finished jobs over seeds (pooled.study), or per value of the one
  non-seed axis they differ in (dose_response.study, with the reference jobs);
  two such axes are one line."""
  done = _finished(records)
  if not done:
    return
  axes = varying_axes(done)
  if len(axes) > 1:
    raise validate.InputError(
        f"the finished jobs differ in {len(axes)} non-seed axes, {', '.join(axes[:-1])} and "
        f"{axes[-1]}: pooling groups jobs by one axis (seeds pooled within), so pool each "
        "slice from its own root; aggregate.json and aggregate.md are written")
  validate.require(axes or not references,
                   f"--reference_root {reference_root!r} serves a dose-response, but the jobs "
                   f"of {root!r} differ in no non-seed axis; aggregate.md is written")
  if axes:
    dose_response.study(root, done, axes[0], references, reference_root)
  else:
    pooled.study(root, done)
