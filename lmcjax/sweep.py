"""Sweeps: config.sweep.axes expands to numbered jobs, each run into its own workdir.

A job is one point of the cartesian product of the axes: its index, a readable
name ('job003_seeds.init=1_imp.sources=real') that is also its directory under
the sweep root, and its overrides. Every job writes ROOT/sweep.json (the whole
job list, so `aggregate` can tell missing jobs from finished ones) and
ROOT/<name>/sweep_job.json (its own overrides) before it starts.
"""
import copy
import dataclasses
import itertools
import os
import re
from typing import Any, Dict, List, Tuple

import ml_collections

from lmcjax import logs
from lmcjax import validate

MANIFEST = "sweep.json"
JOB_FILE = "sweep_job.json"


@dataclasses.dataclass(frozen=True)
class Job:
  index: int
  name: str
  overrides: Dict[str, Any]  # dotted config path -> value, in axis order


def _axes(config) -> List[Tuple[str, Tuple[Any, ...]]]:
  return [(path, tuple(values)) for path, values in config.sweep.axes]


def check_config(config) -> None:
  """Checks that every axis names an existing config field and has values."""
  validate.require("sweep" in config, "the config has no sweep section: set "
                   "config.sweep = configs.parts.sweep.get_section() and its axes")
  seen = set()
  for axis in config.sweep.axes:
    validate.require(len(axis) == 2 and isinstance(axis[0], str),
                     f"sweep.axes entry {axis!r} is not a (dotted path, values) pair")
    path, values = axis
    validate.require(path not in seen, f"sweep.axes lists {path!r} twice")
    seen.add(path)
    validate.require(isinstance(values, (tuple, list)) and len(values) > 0,
                     f"sweep.axes {path!r} needs a non-empty tuple of values, got {values!r}")
    validate.require(not path.startswith("sweep."), f"sweep.axes cannot sweep {path!r}")
    _parent(config, path)  # raises naming the path when it does not exist


def format_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "+".join(format_value(v) for v in value) or "none"
  return str(value)


def job_name(index: int, num_jobs: int, overrides: Dict[str, Any]) -> str:
  """'job003_seeds.init=1_imp.sources=real+distilled': sortable, readable, a safe dirname."""
  width = max(3, len(str(num_jobs - 1)))
  parts = [f"job{index:0{width}d}"] + [f"{p}={format_value(v)}" for p, v in overrides.items()]
  # Keep names portable across file systems and shells; the exact values are
  # in sweep_job.json, the name only has to be readable and unique.
  return re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))[:200]


def expand(config) -> List[Job]:
  """All jobs of the sweep, in a fixed order: the last axis varies fastest."""
  check_config(config)
  axes = _axes(config)
  points = list(itertools.product(*[values for _, values in axes]))
  paths = [path for path, _ in axes]
  return [Job(i, job_name(i, len(points), dict(zip(paths, point))), dict(zip(paths, point)))
          for i, point in enumerate(points)]


def num_jobs(config) -> int:
  return len(expand(config))


def _parent(config, path: str):
  """The ConfigDict that holds the last field of `path`, which must exist."""
  node, parts = config, path.split(".")
  for depth, part in enumerate(parts):
    validate.require(isinstance(node, ml_collections.ConfigDict) and part in node,
                     f"sweep path {path!r}: no config field {'.'.join(parts[:depth + 1])!r}")
    if depth < len(parts) - 1:
      node = node[part]
  return node


def apply_overrides(config, overrides: Dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of config with each dotted path set; a value of the wrong type is an InputError."""
  config = copy.deepcopy(config)  # keeps field types, so a wrong-typed value fails
  for path, value in overrides.items():
    parent = _parent(config, path)
    try:
      parent[path.rsplit(".", 1)[-1]] = value
    except TypeError as e:
      raise validate.InputError(
          f"sweep value {value!r} for {path!r} has the wrong type: {e}") from e
  return config


def job(config, index: int) -> Job:
  jobs = expand(config)
  validate.require(isinstance(index, int) and 0 <= index < len(jobs),
                   f"job index {index!r} is out of range: the sweep has {len(jobs)} jobs "
                   f"(0..{len(jobs) - 1})")
  return jobs[index]


def config_for_job(config, index: int) -> Tuple[ml_collections.ConfigDict, str]:
  """The config of job `index` and its workdir name (relative to the sweep root)."""
  j = job(config, index)
  return apply_overrides(config, j.overrides), j.name


def job_record(j: Job) -> Dict[str, Any]:
  return {"index": j.index, "name": j.name, "overrides": j.overrides}


def write_manifest(config, root: str) -> None:
  """ROOT/sweep.json: every job of the sweep, so aggregate can report missing ones."""
  os.makedirs(root, exist_ok=True)
  # Array jobs start together and all write this file: logs.atomic_write's
  # private temporary file per writer keeps them from mixing. Unsorted keys:
  # overrides stay in axis order.
  logs.write_json(os.path.join(root, MANIFEST), {"num_jobs": num_jobs(config),
                                                 "jobs": [job_record(j) for j in expand(config)]},
                  sort_keys=False)


def run_job(config, root: str, index: int) -> Dict[str, Any]:
  """Runs job `index` of the sweep into ROOT/<job name>; returns its summary."""
  from lmcjax import pipeline  # pylint: disable=g-import-not-at-top  # heavy: only to run
  job_config, name = config_for_job(config, index)
  workdir = os.path.join(root, name)
  write_manifest(config, root)
  os.makedirs(workdir, exist_ok=True)
  logs.write_json(os.path.join(workdir, JOB_FILE), job_record(job(config, index)),
                  sort_keys=False)
  return pipeline.run(job_config, workdir)
