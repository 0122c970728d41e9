"""The analysis stage: linear mode connectivity of the dense net and IMP's masks.

For each analysed model (lmcjax.analysis.targets) it trains
config.analysis.num_branches SGD-noise copies from the start point (init,
IMP's rewind point, or an epoch of the dense run; with
imp.rewind_schedule='continue' they train the remaining steps, as Frankle et
al.), then runs every configured measure (lmcjax.analysis.measures) on them,
writing under DIR/analysis/MODEL/ its files and summary.json. Across models
it draws the measures' figures and runs the cross-model measures, and writes
DIR/analysis/summary.json. Every barrier and accuracy carries a 95% CI and its
count (lmcjax.stats).
"""
import os
import time
from typing import Any, Dict, List, Tuple

from absl import logging

from lmcjax import branches
from lmcjax import dense
from lmcjax import execution as execution_lib
from lmcjax import logs
from lmcjax import masks
from lmcjax import modelid
from lmcjax import progress
from lmcjax import synthetic
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import interpolation
from lmcjax.analysis import measures
from lmcjax.analysis import targets
from lmcjax.stages import base

PyTree = Any
STARTS = ("rewind", "init", "epoch")
DETAIL = ("all", "dense_and_sparsest")
# Sub-sections of config.analysis that are the stage's own, not a measure's.
_OWN_SECTIONS = ("branch_train",)


def check_config(config) -> None:
  """Validates config.analysis before any compute: the stage's fields, then
  each configured measure's section."""
  validate.require("analysis" in config, "the analysis stage needs config.analysis "
                   "(configs/parts/analysis.py get_section())")
  a = config.analysis
  validate.choice("analysis.start", a.start, STARTS)
  validate.choice("analysis.execution", a.execution, execution_lib.EXECUTIONS)
  validate.choice("analysis.detail_models", a.detail_models, DETAIL)
  targets.check(config)
  if a.start == "epoch":
    dense.epoch_step(config, 1, a.start_epoch, "analysis.start_epoch")
  validate.require(a.reuse_config_train or a.start == "init" or
                   config.imp.rewind_schedule == "restart",
                   "imp.rewind_schedule='continue' continues config.train's schedule: set "
                   "analysis.reuse_config_train=True, or analysis.start='init'")
  validate.require(a.num_branches >= 2,
                   f"analysis.num_branches must be >= 2, got {a.num_branches!r}")
  validate.positive("analysis.chunk_copies", a.chunk_copies)
  if not a.reuse_config_train:
    train.check_spec(a.branch_train, "analysis.branch_train")
  measures.check_sections(a, _OWN_SECTIONS)
  for m, _ in measures.configured(a):
    m.check(config)


def _splits(s, a, wd: str) -> Dict[str, Tuple[Any, Any]]:
  """The splits the configured measures evaluate on, loaded and checked non-empty."""
  wanted = {split for m, c in measures.configured(a) if m.splits for split in m.splits(c)}
  out = {"train": (s.x_train, s.y_train), "test": (s.x_test, s.y_test)}
  if "distilled" in wanted:
    out["distilled"] = synthetic.load_decoded(synthetic.stage_path(wd, a.distilled_path),
                                             s.dataset)[:2]
  for name in wanted:
    validate.require(out[name][0].shape[0] > 0, f"analysis split {name!r} is empty")
  return out


def _detailed(model: modelid.ModelId, models, a) -> bool:
  """Whether the detail_only measures run on `model`: on every model, or on the
  dense net and each source's sparsest analysed mask (analysis.detail_models)."""
  if a.detail_models == "all" or model.round is None:
    return True
  return model.round == max(m.round for m, _ in models if m.source == model.source)


def _run_measures(ctx: measures.ModelContext, todo, detail: bool,
                  timings: Dict[str, float]) -> Dict[str, Any]:
  """Each measure's output on one model (None where it does not run), timed."""
  outputs = {}
  for m, c in todo:
    tick = time.perf_counter()
    runs = measures.enabled(c) and (detail or not m.detail_only)
    outputs[m.name] = m.run(ctx, c) if runs else None
    timings[f"{m.name}_s"] = time.perf_counter() - tick
  return outputs


def analyse_model(s, a, model: modelid.ModelId, mask, start: PyTree, start_at: int, spec,
                  splits, out_dir: str, log: logs.MetricsLog,
                  detail: bool = True) -> measures.Analysed:
  """Trains one model's copies, runs every configured per-model measure on
  them (detail_only ones with `detail`), and writes its summary.json."""
  os.makedirs(out_dir, exist_ok=True)
  timings, tick = {}, time.perf_counter()
  branch_start = dense.start_step(s.config.imp.rewind_schedule, start_at)
  copies = branches.trained_copies(s, spec, start, mask, out_dir, num_copies=a.num_branches,
                                   prefix=("analysis", model.name), chunk=a.chunk_copies,
                                   start_step=branch_start, execution=a.execution)
  ctx = measures.ModelContext(s, a, model, copies.ends(), mask, splits, out_dir)
  timings["branches_s"] = time.perf_counter() - tick
  todo = [(m, c) for m, c in measures.configured(a) if m.per_model]
  outputs = _run_measures(ctx, todo, detail, timings)
  summary = {"sparsity": masks.sparsity(mask, s.prunable) if mask is not None else 0.0,
             "start": {"kind": a.start, "dense_step": start_at, "branch_start_step": branch_start,
                       "schedule": s.config.imp.rewind_schedule},
             "branch_final_train_loss": copies.final_loss.tolist(), "branch_cost": copies.cost,
             "branch_test_error": ctx.test_errors}
  records = {m.name: measures.record_of(m, ctx, c, outputs[m.name]) for m, c in todo}
  for record in records.values():
    summary.update(record)
  summary["timings"] = timings
  scalars = {k: v for m, c in todo if m.scalars for k, v in m.scalars(ctx, records[m.name]).items()}
  log.write("analysis", 0, {"model": model.name, **scalars, **timings})
  logs.write_json(os.path.join(out_dir, "summary.json"), summary)
  return measures.Analysed(model, mask, summary, outputs, scalars)


def run_stage(s, wd: str, log: logs.MetricsLog) -> Dict[str, Any]:
  """Analyses the dense net and every target mask; returns a JSON-able summary.

  Its num_alphas is the interpolation's alpha count (summary.json keeps it).
  """
  a = s.config.analysis
  check_config(s.config)
  out_dir = layout.analysis_dir(wd)
  os.makedirs(out_dir, exist_ok=True)
  start, start_at = targets.start_point(s, wd, log)
  models = targets.models(s, a, wd)
  splits = _splits(s, a, wd)
  spec = s.config.train if a.reuse_config_train else a.branch_train
  logging.info("analysis: %s with %d branches each", [m.name for m, _ in models], a.num_branches)
  analysed: List[measures.Analysed] = []
  shown = progress.Progress("analysis", len(models), "models", every_s=0)
  for model, mask in models:
    analysed.append(analyse_model(s, a, model, mask, start, start_at, spec, splits,
                                  layout.analysis_model_dir(wd, model.name), log,
                                  _detailed(model, models, a)))
    shown.update(len(analysed), f"{model.name}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in analysed[-1].scalars.items()))
  ctx = measures.StageContext(s, a, wd, out_dir, log, splits, start_at, analysed)
  figures = {}
  for m, c in measures.configured(a):
    if m.figures and measures.enabled(c):
      figures.update(m.figures(ctx, c))
  summary = {"models": {m.model.name: m.summary for m in analysed}, "figures": figures,
             "num_alphas": int(interpolation.alphas(a).size),
             "num_test": int(s.x_test.shape[0]), "seed": s.config.seeds.init,
             "start": {"kind": a.start, "dense_step": start_at,
                       "schedule": s.config.imp.rewind_schedule}}
  # Per-model work is timed in each model's summary; across-model work here.
  summary["timings"] = {}
  for m, c in measures.configured(a):
    if m.run_across and measures.enabled(c):
      tick = time.perf_counter()
      summary[m.name] = m.run_across(ctx, c)
      summary["timings"][f"{m.name}_s"] = time.perf_counter() - tick
  logs.write_json(os.path.join(out_dir, "summary.json"), summary)
  return summary


# Reads the rewind point, masks and distilled set of the earlier stages; the
# train stage saves its start points, IMP retrains the rounds it reads.
STAGE = base.Stage(
    "analysis", run_stage, check_config,
    reads=("seeds", "data", "model", "train", "prune", "eval_batch_size", "analysis",
           "parallel", "stages", "imp.rewind_schedule", "imp.rewind_step", "imp.rewind_epochs",
           "imp.sources", "imp.rounds", "imp.retrain_rounds"),
    depends_on=("distill", "imp"), output_dirs=lambda workdir: (layout.analysis_dir(workdir),),
    rewind_steps=targets.rewind_steps, imp_rounds=targets.imp_rounds)
