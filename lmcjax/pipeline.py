"""The stages behind launch/main.py, their order, and the cache that skips
stages already run with the same inputs.

Each stage module declares a `stages.base.Stage` (what it reads, needs,
depends on and writes); adding a stage is one module and one line in STAGES.
A stage is handed a config holding only the fields it declares, so its cache
key is what it was handed, never a hand-kept list that can drift from what
the code reads.
"""
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, Iterable, Tuple

from absl import logging
import ml_collections

from lmcjax import analysis
from lmcjax import data as data_lib
from lmcjax.distill import stage as distill_stage
from lmcjax import imp
from lmcjax import logs
from lmcjax import masks
from lmcjax import models
from lmcjax import parallel
from lmcjax import progress
from lmcjax import report
from lmcjax import runtime
from lmcjax import train
from lmcjax import validate
from lmcjax.stages import base
from lmcjax.stages import train as train_stage


def registry(stages: Iterable[base.Stage]) -> Dict[str, base.Stage]:
  """name -> stage; a name declared twice, or a dependency on no declared
  stage, is one line."""
  out: Dict[str, base.Stage] = {}
  for stage in stages:
    validate.require(stage.name not in out, f"stage {stage.name!r} is declared twice")
    out[stage.name] = stage
  for stage in out.values():
    for upstream in stage.depends_on:
      validate.require(upstream in out, f"stage {stage.name!r} depends on {upstream!r}, "
                       "which is not a declared stage")
  return out


STAGES = registry((train_stage.STAGE, distill_stage.STAGE, imp.STAGE, analysis.STAGE,
                   report.STAGE))
# Handed to every stage but kept out of cache keys: they change how a run is
# logged and checkpointed, not its results (a resumed run is bit-identical).
RUN_CONTROL_FIELDS = ("log_every_steps", "checkpoint_every_steps")


def check_config(config) -> None:
  """Checks every section that the configured stages read, before any compute."""
  validate.require(len(config.stages) > 0, "config.stages is empty")
  for name in config.stages:
    validate.choice("config.stages entry", name, STAGES)
  check_order(config.stages)
  data_lib.check_config(config.data)
  models.check_config(config.model)
  train.check_spec(config.train, "train")
  validate.choice("prune.scope", config.prune.scope, masks.SCOPES)
  validate.positive("eval_batch_size", config.eval_batch_size)
  validate.non_negative("log_every_steps", config.log_every_steps)
  validate.non_negative("checkpoint_every_steps", config.checkpoint_every_steps)
  parallel.check_config(config)
  for name in config.stages:
    STAGES[name].check_config(config)


def check_order(names: Iterable[str]) -> None:
  """A stage listed twice, or before a stage it depends on, is one line."""
  names = tuple(names)
  for i, name in enumerate(names):
    validate.require(name not in names[:i], f"config.stages lists {name!r} twice")
    for upstream in STAGES[name].depends_on:
      validate.require(upstream not in names[i:], f"config.stages lists {name!r} before "
                       f"{upstream!r}, whose files it reads: {names}")


def needs(config, num_train: int) -> Dict[str, Tuple[int, ...]]:
  """What the configured stages declare they start from and read: the dense
  run's steps to save and the IMP rounds to keep (Stage.rewind_steps/imp_rounds)."""
  steps, rounds = set(), set()
  for name in config.stages:
    steps.update(int(k) for k in STAGES[name].rewind_steps(config, num_train))
    rounds.update(int(k) for k in STAGES[name].imp_rounds(config))
  return {"rewind_steps": tuple(sorted(k for k in steps if k > 0)),
          "imp_rounds": tuple(sorted(rounds))}


def with_needs(config, num_train: int) -> ml_collections.ConfigDict:
  """A copy of `config` with config.needs (see `needs`), which stages that read
  it are handed and keyed on instead of the config of the stages downstream."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.needs = ml_collections.ConfigDict(needs(config, num_train))
  return out


def _has(config, field: str) -> bool:
  head, *rest = field.split(".")
  return head in config and (not rest or _has(config[head], ".".join(rest)))


def _plain(value):
  return value.to_dict() if hasattr(value, "to_dict") else value


def config_view(config, fields: Iterable[str]) -> ml_collections.ConfigDict:
  """A copy of `config` holding only `fields` (sections or dotted fields).

  A declared field the config lacks is left out, as it is of the config.
  """
  view: Dict[str, Any] = {}
  for field in fields:
    if not _has(config, field):
      continue
    *parents, leaf = field.split(".")
    node, source = view, config
    for key in parents:
      node, source = node.setdefault(key, {}), source[key]
    node[leaf] = _plain(source[leaf])
  return ml_collections.ConfigDict(view)


def stage_config(config, name: str) -> ml_collections.ConfigDict:
  """What stage `name` is handed: its declared fields and the run controls."""
  return config_view(config, STAGES[name].reads + RUN_CONTROL_FIELDS)


def _drop(inputs: Dict[str, Any], path: str) -> None:
  *parents, leaf = path.split(".")
  node = inputs
  for key in parents:
    node = node.get(key, {})
  node.pop(leaf, None)


def stage_inputs(config, name: str, downstream: bool = False) -> Dict[str, Any]:
  """A stage's cache key: the fields it is handed (without the run controls),
  and those of the stages whose outputs it reads. Readable in DIR/stages/.

  downstream=True gives what a later stage sees of this one: without its
  report_only fields, so toggling them reruns this stage alone.
  """
  stage = STAGES[name]
  inputs = json.loads(json.dumps(config_view(config, stage.reads).to_dict(), default=str))
  for path in stage.report_only if downstream else ():
    _drop(inputs, path)
  for upstream in stage.depends_on:
    if upstream in config.stages:
      inputs[f"stage:{upstream}"] = stage_inputs(config, upstream, downstream=True)
  return inputs


def _stage_record_paths(workdir: str, name: str) -> Tuple[str, str]:
  base = os.path.join(workdir, "stages")
  return os.path.join(base, f"{name}.inputs.json"), os.path.join(base, f"{name}.done.json")


def _move_aside_stale(workdir: str, name: str) -> None:
  """Outputs of a stage run under other inputs are moved, never deleted."""
  stale_root = os.path.join(workdir, "stale", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  for path in STAGES[name].output_dirs(workdir):
    if os.path.exists(path):
      os.makedirs(stale_root, exist_ok=True)
      os.replace(path, os.path.join(stale_root, os.path.basename(path)))
      logging.info("stage %s: inputs changed; moved %s to %s", name, path, stale_root)


def run_cached_stage(s: runtime.Setup, workdir: str, log: logs.MetricsLog,
                     name: str) -> Dict[str, Any]:
  """Runs a stage unless it already finished with the same inputs.

  A finished stage is skipped; an unfinished one with the same inputs is rerun
  and resumes from its own checkpoints; one whose inputs changed starts over.
  """
  stage = STAGES[name]
  inputs = stage_inputs(s.config, name)
  inputs_path, done_path = _stage_record_paths(workdir, name)
  os.makedirs(os.path.dirname(inputs_path), exist_ok=True)
  previous = logs.read_json(inputs_path) if os.path.exists(inputs_path) else None
  if previous == inputs and os.path.exists(done_path) and not stage.always_run:
    logging.info("stage %s: finished earlier with the same inputs; skipped", name)
    return logs.read_json(done_path)["summary"]
  if previous is not None and previous != inputs:
    _move_aside_stale(workdir, name)
    if os.path.exists(done_path):
      os.remove(done_path)
  # An unfinished earlier attempt with the same inputs: this run resumes it,
  # and its seconds count this attempt only.
  resumed = previous == inputs and not stage.always_run
  logs.write_json(inputs_path, inputs)
  start = time.perf_counter()
  handed = dataclasses.replace(s, config=stage_config(s.config, name))
  summary = stage.run(handed, workdir, log)
  summary["seconds"] = time.perf_counter() - start
  summary["resumed"] = resumed
  logs.write_json(done_path, {"summary": summary})
  return summary


def check_workdir_writable(workdir: str) -> None:
  """Fails before compute if the workdir cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_probe")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise validate.InputError(f"cannot write workdir {workdir!r}: {e.strerror or e}") from e


def run(config, workdir: str) -> Dict[str, Any]:
  """Runs config.stages in order; writes DIR/metrics.jsonl and DIR/summary.json."""
  check_config(config)
  check_workdir_writable(workdir)
  logs.write_text(os.path.join(workdir, "config.json"),
                  config.to_json_best_effort(indent=2, sort_keys=True))
  s = runtime.setup(config)
  s = dataclasses.replace(s, config=with_needs(config, int(s.x_train.shape[0])))
  log = logs.MetricsLog(workdir)
  summary = {"dataset": s.dataset.name, "model": config.model.name,
             "num_train": int(s.x_train.shape[0]), "num_test": int(s.x_test.shape[0]),
             "init_seed": int(config.seeds.init), "versions": runtime.software_versions()}
  start = time.perf_counter()
  for i, name in enumerate(config.stages):
    logging.info("pipeline: stage %d/%d %s: %s", i + 1, len(config.stages), name,
                 _what(STAGES[name]))
    summary[name] = run_cached_stage(s, workdir, log, name)
    log.write_summary(name, summary[name])
    logs.write_json(os.path.join(workdir, "summary.json"), summary)
    logging.info("pipeline: stage %s finished; %s in all, %d stage(s) left", name,
                 progress.duration(time.perf_counter() - start), len(config.stages) - i - 1)
  log.close()
  return summary


def _what(stage: base.Stage) -> str:
  """The first line of the stage module's docstring: what the stage does."""
  doc = sys.modules[stage.run.__module__].__doc__ or stage.name
  return doc.strip().splitlines()[0]
