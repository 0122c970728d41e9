"""Checks that two workdirs of the same config hold the same results, bit for bit.

A refactor must not move any number. Run the configs at the old and the new
commit on the same machine, then compare:

  git worktree add /tmp/lmcjax_base BASE_COMMIT
  (cd /tmp/lmcjax_base && PYTHONPATH=. python launch/main.py --config configs/smoke.py \
      --workdir /tmp/runs_base/smoke)
  python launch/main.py --config configs/smoke.py --workdir /tmp/runs_new/smoke
  python launch/compare_runs.py /tmp/runs_base/smoke /tmp/runs_new/smoke

Every JSON file (and metrics.jsonl) is compared value by value, floats with ==,
and every .npz array bit for bit. What legitimately differs between two runs is
left out: wall-clock times, software versions, absolute paths (the workdirs
differ) and the stage cache's records of their inputs (stages/*.inputs.json,
whose layout a refactor may change). Exit status 1 lists the differences.
"""
import argparse
import json
import os
import re
import sys
from typing import Any, Iterator, List, Tuple

import numpy as np

# Keys whose values are timings or environment, not results.
UNTIMED = re.compile(r"(^|_)(seconds|s|time|timings|versions|resumed|wall)$|^seconds_per_")
SKIPPED_FILES = re.compile(r"(^stages/.*\.inputs\.json$|^config\.json$|events\.out\.tfevents)")


def _results(path: str) -> Iterator[str]:
  for root, _, files in os.walk(path):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), path)
      if rel.endswith((".json", ".jsonl", ".npz")) and not SKIPPED_FILES.search(rel):
        yield rel


def _load_json(path: str) -> Any:
  if path.endswith(".jsonl"):
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]
  with open(path) as f:
    return json.load(f)


def _diff(a: Any, b: Any, where: str, roots) -> List[str]:
  """Differences between two JSON values, ignoring timings and workdir paths."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = [f"{where}: key {k!r} only on one side" for k in sorted(set(a) ^ set(b))
           if not UNTIMED.search(str(k))]
    for k in sorted(set(a) & set(b)):
      if not UNTIMED.search(str(k)):
        out += _diff(a[k], b[k], f"{where}.{k}", roots)
    return out
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return [f"{where}: {len(a)} against {len(b)} entries"]
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{where}[{i}]", roots)]
  if isinstance(a, str) and isinstance(b, str):
    a, b = _unrooted(a, roots[0]), _unrooted(b, roots[1])
  return [] if a == b else [f"{where}: {a!r} against {b!r}"]


def _unrooted(text: str, root: Tuple[str, ...]) -> str:
  """text with its workdir, absolute or as given on the command line, as WORKDIR."""
  for form in root:
    text = text.replace(form, "WORKDIR")
  return text


def _diff_npz(path_a: str, path_b: str, rel: str) -> List[str]:
  with np.load(path_a, allow_pickle=False) as a, np.load(path_b, allow_pickle=False) as b:
    if set(a.files) != set(b.files):
      return [f"{rel}: arrays {sorted(set(a.files) ^ set(b.files))} only on one side"]
    return [f"{rel}:{k} differs" for k in a.files
            if a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes()]


def compare(workdir_a: str, workdir_b: str) -> List[str]:
  """Every difference in results between two workdirs (empty: identical)."""
  # A run records paths under its workdir as main.py was given it.
  roots = tuple((os.path.abspath(w), os.path.normpath(w)) for w in (workdir_a, workdir_b))
  files_a, files_b = set(_results(workdir_a)), set(_results(workdir_b))
  out = [f"{rel}: only in {workdir_a if rel in files_a else workdir_b}"
         for rel in sorted(files_a ^ files_b)]
  for rel in sorted(files_a & files_b):
    a, b = os.path.join(workdir_a, rel), os.path.join(workdir_b, rel)
    if rel.endswith(".npz"):
      out += _diff_npz(a, b, rel)
    else:
      out += _diff(_load_json(a), _load_json(b), rel, roots)
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir_a")
  parser.add_argument("workdir_b")
  args = parser.parse_args()
  differences = compare(args.workdir_a, args.workdir_b)
  for line in differences[:200]:
    print(line)
  checked = len(set(_results(args.workdir_a)))
  print(f"{len(differences)} difference(s) in {checked} result files" if differences else
        f"identical: {checked} result files of {args.workdir_a} and {args.workdir_b}")
  return 1 if differences else 0


if __name__ == "__main__":
  sys.exit(main())
