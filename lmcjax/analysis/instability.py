"""The instability measure (config.analysis.instability): the error barrier
between SGD-noise copies against the rewind epoch (Frankle et al. 2020,
Fig. 3), for the dense net and each source's sparsest analysed mask.

Across models: DIR/analysis/instability.{json,npz,png}, and the record
summary.json['instability']. The copies of each point are saved under
DIR/analysis/instability/MODEL/step_KKKKKKK (lmcjax.results reloads them).
"""
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import numpy as np

from lmcjax import branches
from lmcjax import dense
from lmcjax import interpolate
from lmcjax import logs
from lmcjax import plots
from lmcjax import progress
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import interpolation
from lmcjax.analysis import measures
from lmcjax.analysis import targets

PyTree = Any
# The copies' running statistics are interpolated (pairwise's default), so a
# point can reuse the barrier analysis' records of that BN mode.
_BN_MODE = "interpolate"


def check(config) -> None:
  c = config.analysis.instability
  if not c.enabled:
    return
  validate.require(len(c.rewind_epochs) > 0, "analysis.instability.rewind_epochs is empty")
  for e in c.rewind_epochs:
    dense.epoch_step(config, 1, e, "analysis.instability.rewind_epochs entry")
    validate.require(e < config.train.epochs, f"analysis.instability.rewind_epochs entry {e!r} "
                     f"leaves no training after it (train.epochs={config.train.epochs})")
  validate.require(c.num_copies >= 2, f"analysis.instability.num_copies must be >= 2, "
                   f"got {c.num_copies!r}")
  validate.require(c.num_alphas >= 2, f"analysis.instability.num_alphas must be >= 2, "
                   f"got {c.num_alphas!r}")
  validate.choice("analysis.instability.split", c.split, ("train", "test"))
  for r in c.rounds:
    targets.check_round(config, r, f"analysis.instability.rounds entry {r!r}")


def _models(c, analysed: List[measures.Analysed]) -> List[Tuple[str, Optional[PyTree]]]:
  """(name, mask) of the dense net and each source's mask at instability.rounds
  (default: the sparsest analysed round of each source)."""
  out = [(m.model.name, m.mask) for m in analysed if m.model.round is None and c.include_dense]
  masked = [m for m in analysed if m.mask is not None]
  for src in dict.fromkeys(m.model.source for m in masked):
    mine = {m.model.round: (m.model.name, m.mask) for m in masked if m.model.source == src}
    for r in (tuple(c.rounds) or (max(mine),)):
      validate.require(r in mine, f"analysis.instability.rounds entry {r} is not an analysed "
                       f"round of {src!r} (analysed: {sorted(mine)})")
      out.append(mine[r])
  return out


def _point(ctx: measures.StageContext, c, name, mask, step) -> Dict[str, Any]:
  """Copies from step `step` of the dense run (times the mask) and their barriers."""
  s, a, wd = ctx.setup, ctx.analysis, ctx.workdir
  start = dense.load(s, wd, step, ctx.log)
  point_dir = layout.instability_point_dir(wd, name, step)
  stacked = branches.trained_copies(
      s, s.config.train, start, mask, point_dir, num_copies=c.num_copies,
      prefix=("instability", name, step), chunk=a.chunk_copies,
      start_step=dense.start_step(s.config.imp.rewind_schedule, step),
      execution=a.execution).ends()
  result = interpolate.pairwise(s.model, stacked, interpolate.default_alphas(c.num_alphas),
                                *ctx.splits[c.split], mask=mask, bn_mode=_BN_MODE,
                                eval_batch_size=s.config.eval_batch_size,
                                chunk_alphas=a.chunk_alphas, execution=a.execution)
  errors = branches.copy_test_errors(s, stacked, c.num_copies)
  return {"step": step, **interpolation.barrier_statistics(s, result["pairs"], errors)}


def reuses_analysis_copies(a) -> bool:
  """Whether an instability point at the analysis' start step can take the
  barrier analysis' own copies: the same copy count, split and alphas."""
  c = a.instability
  return (np.array_equal(interpolation.alphas(a), interpolate.default_alphas(c.num_alphas))
          and c.num_copies == a.num_branches and c.split in a.eval_splits)


def _reusable(ctx: measures.StageContext):
  """(name, step) -> barrier_statistics of the barrier analysis' own copies (see
  reuses_analysis_copies) for the point at the analysis' start step, else None."""
  where = interpolation.where(ctx.analysis.instability.split, _BN_MODE)
  analysed = {m.model.name: m.summary for m in ctx.analysed}
  if not reuses_analysis_copies(ctx.analysis):
    return lambda name, step: None
  return lambda name, step: (analysed[name]["barrier_stats"].get(where)
                             if step == ctx.start_step and name in analysed else None)


def run_across(ctx: measures.StageContext, c) -> Dict[str, Any]:
  """Error barrier between SGD-noise copies against the rewind epoch, per model.

  A point at the barrier analysis' own start step reuses its copies instead
  of training more.
  """
  s = ctx.setup
  n = int(s.x_train.shape[0])
  steps = [dense.epoch_step(s.config, n, e) for e in c.rewind_epochs]
  dense.ensure_snapshots(s, ctx.workdir, steps, ctx.log)
  reused = _reusable(ctx)
  curves = {}
  measured = _models(c, ctx.analysed)
  shown = progress.Progress("instability", len(measured) * len(steps), "points", every_s=0)
  for name, mask in measured:
    curves[name] = []
    for epoch, step in zip(c.rewind_epochs, steps):
      prior = reused(name, step)
      point = {"step": step, **prior} if prior else _point(ctx, c, name, mask, step)
      curves[name].append({"epoch": float(epoch), "reused_analysis_copies": prior is not None,
                           **point})
      shown.update(sum(map(len, curves.values())), f"{name} from epoch {epoch:g}")
    logging.info("instability %s: barriers %s", name,
                 [round(p["error_barrier_ci"]["estimate"], 4) for p in curves[name]])
  out = {"split": c.split, "schedule": s.config.imp.rewind_schedule, "num_copies": c.num_copies,
         "epochs": [float(e) for e in c.rewind_epochs], "steps": steps, "models": curves}
  stem = os.path.join(ctx.out_dir, "instability")
  logs.write_json(stem + ".json", out)
  logs.write_npz(stem + ".npz", epochs=np.asarray(out["epochs"]), steps=np.asarray(steps),
                 **{f"barriers/{name}": np.asarray([p["error_barriers"] for p in curve])
                    for name, curve in curves.items()})
  out["png"] = plots.plot_instability(stem, curves, c.split)
  return out


def cost(config, c, sizes: measures.Sizes) -> measures.Cost:
  """Per model and rewind epoch: num_copies copies training the remaining steps
  (by imp.rewind_schedule), their test errors and pairwise paths; the point at
  the analysis' own start step reuses its copies where it can
  (reuses_analysis_copies: it also needs the interpolate mode there, which a
  BatchNorm net's analysis.bn_modes may leave out)."""
  a, n = config.analysis, sizes.examples["train"]
  num_models = (int(c.include_dense and a.include_dense)
                + len(targets.planned_rounds(config)) * max(1, len(c.rounds)))
  steps, batch = train.total_steps(config.train, n), train.effective_batch(config.train, n)
  trained, forward = {}, {}
  for epoch in c.rewind_epochs:
    k = dense.epoch_step(config, n, epoch)
    if k == targets.start_step(config, n) and reuses_analysis_copies(a):
      continue
    remaining = steps - dense.start_step(config.imp.rewind_schedule, k)
    trained[("instability", float(epoch))] = num_models * c.num_copies * remaining * batch
    paths = interpolation.num_pairs(c.num_copies) * c.num_alphas * sizes.examples[c.split]
    errors = c.num_copies * sizes.examples["test"]
    forward[("instability", float(epoch))] = num_models * (paths + errors)
  return measures.Cost(trained, forward)


MEASURE = measures.Measure(name="instability", section="instability", check=check,
                           run_across=run_across, cost=cost)
