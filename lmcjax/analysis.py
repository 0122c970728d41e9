"""The analysis stage: linear mode connectivity of the dense net and IMP's masks.

For each analysed model (the dense net, then each source's mask at every
analysed IMP round) it trains config.analysis.num_branches SGD-noise copies
from the start point (init, IMP's rewind point, or an epoch of the dense run;
with imp.rewind_schedule='continue' they train the remaining steps, as
Frankle et al.), then writes under DIR/analysis/MODEL/:
  interpolation_SPLIT_BN.json  every pairwise path and its barriers;
  landscape_KIND.npz/.png      raw grid and contour plot;
  hessian.json/.npz            Hessian diagonal (exact GGN where that is the Hessian
                               diagonal, else labelled estimates), per-layer traces and
                               top eigenvalues, Lanczos top eigenvalues;
  hessian_density.png/.json    SLQ spectral density;
and, across models, DIR/analysis/{interpolation,barrier_vs_sparsity,
hessian_hist}.png with their .json and summary.json. The Hessian histogram
holds only diagonals that are exact or have relative SE <= 0.3. With
analysis.instability.enabled, DIR/analysis/instability.{json,npz,png}: the
error barrier between copies against the rewind epoch (Frankle et al. 2020,
Fig. 3), for the dense net and each source's sparsest analysed mask.
Every barrier and accuracy carries a 95% CI and its count (lmcjax.stats).
"""
import os
import re
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import jax
import numpy as np

from lmcjax import branches as branches_lib
from lmcjax import checkpoints
from lmcjax import dense
from lmcjax import engine
from lmcjax import hessian
from lmcjax import imp
from lmcjax import interpolate
from lmcjax import landscape
from lmcjax import logs
from lmcjax import masks
from lmcjax import models
from lmcjax import plots
from lmcjax import progress
from lmcjax import rng
from lmcjax import runtime
from lmcjax import stats
from lmcjax import synthetic
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout

PyTree = Any
SPLITS = ("train", "test", "distilled")
TARGET = re.compile(r"^([a-z_]+):(\d+)$")
STARTS = ("rewind", "init", "epoch")
DETAIL = ("all", "dense_and_sparsest")


def check_config(config) -> None:
  """Validates config.analysis before any compute."""
  validate.require("analysis" in config, "the analysis stage needs config.analysis "
                   "(configs/parts/analysis.py get_section())")
  a = config.analysis
  validate.choice("analysis.start", a.start, STARTS)
  validate.choice("analysis.execution", a.execution, train.EXECUTIONS)
  validate.choice("analysis.detail_models", a.detail_models, DETAIL)
  for t in a.targets:
    validate.require(bool(TARGET.match(str(t))),
                     f"analysis.targets entry {t!r} is not 'source:round', e.g. 'real:4'")
    _check_round(config, int(TARGET.match(str(t)).group(2)), f"analysis.targets entry {t!r}")
  for r in a.rounds:
    _check_round(config, r, f"analysis.rounds entry {r!r}")
  if a.start == "epoch":
    dense.epoch_step(config, 1, a.start_epoch, "analysis.start_epoch")
  validate.require(a.reuse_config_train or a.start == "init" or
                   config.imp.rewind_schedule == "restart",
                   "imp.rewind_schedule='continue' continues config.train's schedule: set "
                   "analysis.reuse_config_train=True, or analysis.start='init'")
  _check_instability(config)
  validate.require(a.num_branches >= 2, f"analysis.num_branches must be >= 2, got {a.num_branches!r}")
  validate.positive("analysis.branch_chunk", a.branch_chunk)
  if not a.reuse_config_train:
    train.check_spec(a.branch_train, "analysis.branch_train")
  validate.require(a.num_alphas >= 2, f"analysis.num_alphas must be >= 2, got {a.num_alphas!r}")
  validate.require(a.alpha_min <= 0.0 and a.alpha_max >= 1.0,
                   f"analysis alphas [{a.alpha_min}, {a.alpha_max}] must cover [0, 1]")
  validate.positive("analysis.alpha_chunk", a.alpha_chunk)
  validate.require(len(a.eval_splits) > 0, "analysis.eval_splits is empty")
  for split in a.eval_splits:
    validate.choice("analysis.eval_splits entry", split, SPLITS)
  validate.require(len(a.bn_modes) > 0, "analysis.bn_modes is empty")
  for mode in a.bn_modes:
    validate.choice("analysis.bn_modes entry", mode, interpolate.BN_MODES)
  validate.positive("analysis.bn_reset_batches", a.bn_reset_batches)
  validate.positive("analysis.bn_reset_batch_size", a.bn_reset_batch_size)
  _check_landscape(a.landscape, a.num_branches)
  _check_hessian(a.hessian, config.model)


def _check_round(config, r, what: str) -> None:
  """Rounds 1..imp.rounds have masks (round 0 is the dense net)."""
  validate.require(isinstance(r, int) and 1 <= r <= config.imp.rounds,
                   f"{what}: IMP produces masks at rounds 1..{config.imp.rounds} "
                   f"(imp.rounds={config.imp.rounds}), not round {r!r}")


def _check_instability(config) -> None:
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
    _check_round(config, r, f"analysis.instability.rounds entry {r!r}")


def _check_landscape(c, num_branches: int) -> None:
  needs = {"three_point": 3, "four_seed": 4, "random_1d": 1, "random_2d": 1}
  for kind in c.kinds:
    validate.choice("analysis.landscape.kinds entry", kind, landscape.KINDS)
    validate.require(num_branches >= needs[kind], f"analysis.landscape kind {kind!r} needs "
                     f"num_branches >= {needs[kind]}, got {num_branches}")
  validate.choice("analysis.landscape.split", c.split, SPLITS)
  validate.require(c.resolution >= 2, f"analysis.landscape.resolution must be >= 2, got {c.resolution!r}")
  validate.positive("analysis.landscape.chunk", c.chunk)
  validate.non_negative("analysis.landscape.margin", c.margin)
  validate.positive("analysis.landscape.span", c.span)


def _check_hessian(c, model_cfg) -> None:
  validate.choice("analysis.hessian.split", c.split, SPLITS)
  if c.enabled:  # a method that does not apply to the model is refused with the reason
    hessian.resolve_method(c.method, models.create(model_cfg, num_classes=10))
  validate.positive("analysis.hessian.batch_size", c.batch_size)
  validate.non_negative("analysis.hessian.num_batches", c.num_batches)
  validate.positive("analysis.hessian.ggn_chunk", c.ggn_chunk)
  validate.positive("analysis.hessian.max_probes", c.max_probes)
  validate.positive("analysis.hessian.probe_chunk", c.probe_chunk)
  validate.non_negative("analysis.hessian.tol", c.tol)
  validate.positive("analysis.hessian.lanczos_k", c.lanczos_k)
  validate.require(c.lanczos_iters >= c.lanczos_k, f"analysis.hessian.lanczos_iters "
                   f"({c.lanczos_iters}) must be >= lanczos_k ({c.lanczos_k})")
  validate.non_negative("analysis.hessian.lanczos_tol", c.lanczos_tol)
  validate.positive("analysis.hessian.density_probes", c.density_probes)
  validate.positive("analysis.hessian.density_steps", c.density_steps)
  validate.positive("analysis.hessian.hist_bins", c.hist_bins)


def alphas(a) -> np.ndarray:
  """num_alphas evenly spaced from alpha_min to alpha_max, plus 0 and 1 (barriers)."""
  grid = interpolate.default_alphas(a.num_alphas, a.alpha_min, a.alpha_max)
  return np.union1d(grid, np.asarray([0.0, 1.0], np.float32)).astype(np.float32)


def start_step(config, num_train: int) -> int:
  """The dense-run step the branches start from (0 = init)."""
  a = config.analysis
  if a.start == "rewind":
    return imp.rewind_step(config, num_train)
  return dense.epoch_step(config, num_train, a.start_epoch) if a.start == "epoch" else 0


def _start_point(s, a, wd: str, log) -> Tuple[PyTree, int]:
  """(the {'params', 'batch_stats'} the copies start from, its dense-run step).

  IMP's rewind point is step j of the dense run (lmcjax.dense), so no IMP
  stage is needed to start from it.
  """
  step = start_step(s.config, int(s.x_train.shape[0]))
  return dense.load(s, wd, step, log), step


def _mask_rounds(wd: str, source: str) -> List[int]:
  folder = os.path.join(layout.imp_dir(wd), source)
  names = os.listdir(folder) if os.path.isdir(folder) else []
  found = [int(m.group(1)) for m in map(re.compile(r"^round_(\d+)$").match, names) if m]
  return [r for r in found if checkpoints.exists(layout.mask(wd, source, r))]


def _discover_targets(wd: str) -> List[str]:
  """'source:last_round' for every source with a pruned mask under DIR/imp."""
  root = layout.imp_dir(wd)
  sources = sorted(os.listdir(root)) if os.path.isdir(root) else []
  return [f"{src}:{max(rounds)}" for src in sources
          for rounds in [_mask_rounds(wd, src)] if rounds and max(rounds) > 0]


def _targets(s, a, wd: str) -> Tuple[str, ...]:
  """'source:round' of every analysed mask: explicit targets, else every IMP
  source at analysis.rounds, else the last round of every source found."""
  if a.targets:
    return tuple(a.targets)
  if a.rounds:
    sources = [src for src in imp.SOURCES if src in s.config.imp.sources]
    return tuple(f"{src}:{r}" for src in sources for r in sorted(a.rounds))
  return tuple(_discover_targets(wd))


def _models(s, a, wd: str) -> List[Tuple[str, str, Optional[PyTree]]]:
  """(name, source, mask) of every analysed model; the dense one has no mask."""
  out = [("dense", "dense", None)] if a.include_dense else []
  for target in _targets(s, a, wd):
    source, round_index = TARGET.match(target).groups()
    path = layout.mask(wd, source, int(round_index))
    validate.require(checkpoints.exists(path), f"analysis target {target!r}: no mask at {path}")
    mask = checkpoints.load_tree(path, like=masks.ones_like(s.init_params), what="mask")
    out.append((f"{source}_r{int(round_index):02d}", source, mask))
  validate.require(bool(out), "analysis has nothing to analyse: include_dense is False and "
                   "no targets were given or found under DIR/imp")
  return out


def _splits(s, a, wd: str) -> Dict[str, Tuple[Any, Any]]:
  wanted = set(a.eval_splits) | {a.landscape.split, a.hessian.split}
  out = {"train": (s.x_train, s.y_train), "test": (s.x_test, s.y_test)}
  if "distilled" in wanted:
    out["distilled"] = synthetic.load_decoded(synthetic.stage_path(wd, a.distilled_path),
                                             s.dataset)[:2]
  for name in wanted:
    validate.require(out[name][0].shape[0] > 0, f"analysis split {name!r} is empty")
  return out


def _paths(s, a, stacked, mask, splits, out_dir: str) -> Dict[str, Any]:
  """Pairwise interpolation on every split and BN mode; writes one JSON each."""
  has_bn = bool(jax.tree.leaves(s.init_batch_stats))
  modes = tuple(a.bn_modes) if has_bn else ("interpolate",)
  bn_images = None
  if has_bn and "reset" in modes:
    bn_images = interpolate.bn_batches(s.x_train, a.bn_reset_batch_size, a.bn_reset_batches,
                                       rng.named_key(s.config.seeds.data_order, "analysis", "bn"))
  out = {}
  for split in a.eval_splits:
    for mode in modes:
      result = interpolate.pairwise(s.model, stacked, alphas(a), *splits[split], mask=mask,
                                    bn_mode=mode, bn_images=bn_images,
                                    eval_batch_size=s.config.eval_batch_size,
                                    alpha_chunk=a.alpha_chunk, execution=a.execution)
      logs.write_json(os.path.join(out_dir, f"interpolation_{split}_{mode}.json"), result)
      out[f"{split}/{mode}"] = result
  return out


def _landscapes(s, a, name: str, stacked, mask, splits, out_dir: str) -> Dict[str, Any]:
  c = a.landscape
  params = [interpolate.take(stacked["params"], i) for i in range(a.num_branches)]
  stats0 = interpolate.take(stacked["batch_stats"], 0)
  key = rng.named_key(s.config.seeds.init, "analysis", name, "landscape")
  out = {}
  for kind in c.kinds:
    if kind == "three_point":
      plane = landscape.three_point_plane(*params[:3])
    elif kind == "four_seed":
      plane = landscape.four_seed_plane(*params[:4])
    else:
      plane = landscape.random_plane(key, params[0], 1 if kind == "random_1d" else 2, mask,
                                     c.skip_bias_and_norm)
    grid = landscape.evaluate_grid(
        s.model, plane, landscape.grid_axes(plane, c.resolution, c.margin, c.span), stats0,
        *splits[c.split], mask=mask, chunk=c.chunk, eval_batch_size=s.config.eval_batch_size,
        execution=a.execution)
    stem = os.path.join(out_dir, f"landscape_{kind}")
    landscape.save_grid(stem + ".npz", grid, kind)
    plots.plot_landscape(stem, grid, "error", f"{name} {kind} ({c.split} error)")
    out[kind] = {"npz": stem + ".npz", "png": stem + ".png",
                 "min_error": float(grid["error"].min()), "max_error": float(grid["error"].max())}
  return out


def _caption(diag: hessian.Diagonal, num_examples: int, split: str) -> str:
  """What a curvature figure shows: its method, exact or with its relative SE, and the data."""
  how = ("exact" if diag.exact else
         f"estimated, relative SE {diag.relative_stderr:.2g} over {diag.num_probes} probes")
  return f"{diag.label}; {how}; {num_examples} {split} examples"


def _hessian(s, a, name: str, stacked, mask, splits, out_dir: str) -> Tuple[Dict[str, Any], np.ndarray]:
  c = a.hessian
  params = interpolate.take(stacked["params"], 0)
  stats = interpolate.take(stacked["batch_stats"], 0)
  images, labels = hessian.loss_batches(
      rng.named_key(s.config.seeds.data_order, "analysis", "hessian"), *splits[c.split],
      c.batch_size, c.num_batches)
  key = rng.named_key(s.config.seeds.init, "analysis", name, "hessian")
  data = (s.model, params, stats, images, labels)
  common = dict(mask=mask, batch_size=c.batch_size)
  diag = hessian.hessian_diagonal(*data, key, method=c.method, chunk=c.ggn_chunk,
                                  max_probes=c.max_probes, probe_chunk=c.probe_chunk, tol=c.tol,
                                  max_params=c.exact_max_params, execution=a.execution, **common)
  eigen = dict(max_iters=c.lanczos_iters, tol=c.lanczos_tol, **common)
  top = hessian.lanczos(*data, jax.random.fold_in(key, 1), k=c.lanczos_k, **eigen)
  n = int(images.shape[0])
  result = {"split": c.split, "num_examples": n, "method": diag.method, "label": diag.label,
            "exact": diag.exact, "caption": _caption(diag, n, c.split),
            "trusted": diag.exact or diag.relative_stderr <= hessian.TRUSTED_RELATIVE_STDERR,
            "num_probes": diag.num_probes, "converged": diag.converged,
            "relative_stderr": diag.relative_stderr, "trace": diag.trace,
            "trace_stderr": diag.trace_stderr,
            "top_eigenvalue": {"eigenvalue": float(top.eigenvalues[0]), **top.as_dict()},
            "layers": hessian.layer_summaries(diag.values, mask, c.hist_bins)}
  if c.layer_eigenvalues:
    result["layer_top_eigenvalues"] = hessian.layer_top_eigenvalues(
        *data, jax.random.fold_in(key, 2), **eigen)
  if c.density:
    result["density"] = _density(c, name, data, jax.random.fold_in(key, 3), mask, out_dir)
  arrays = {"diagonal/" + k: v for k, v in _flat_named(diag.values).items()}
  arrays.update({"stderr/" + k: v for k, v in _flat_named(diag.stderr).items()})
  if diag.ggn is not None:
    arrays.update({"ggn/" + k: v for k, v in _flat_named(diag.ggn).items()})
  num_params = sum(np.size(x) for x in jax.tree.leaves(params))
  if num_params <= c.exact_max_params and diag.method != "exact":
    exact = hessian.exact_diagonal(*data, **common, max_params=c.exact_max_params,
                                   execution=a.execution)
    arrays.update({"exact/" + k: v for k, v in _flat_named(exact).items()})
    got, want = hessian.kept_values(diag.values, mask), hessian.kept_values(exact, mask)
    result["relative_error_vs_exact"] = float(np.linalg.norm(got - want) /
                                              max(np.linalg.norm(want), 1e-30))
  logs.write_npz(os.path.join(out_dir, "hessian.npz"), **arrays)
  logs.write_json(os.path.join(out_dir, "hessian.json"), result)
  return result, hessian.kept_values(diag.values, mask)


def _density(c, name: str, data, key, mask, out_dir: str) -> Dict[str, Any]:
  """SLQ spectral density of one model, plotted; returns its summary."""
  out = hessian.spectral_density(*data, key, mask=mask, num_probes=c.density_probes,
                                 steps=c.density_steps, batch_size=c.batch_size)
  title = (f"{name}: Hessian spectral density (SLQ, {out['num_probes']} probe(s) x "
           f"{out['steps']} Lanczos steps; {data[3].shape[0]} {c.split} examples)")
  png = plots.plot_spectral_density(os.path.join(out_dir, "hessian_density"),
                                    {name: out}, title)
  # The file name only: results must not depend on where the workdir lives.
  return {"png": os.path.basename(png), **{k: out[k] for k in ("mean", "mean_stderr", "dimension", "num_probes",
                                             "steps", "sigma")}}


def _flat_named(tree: PyTree) -> Dict[str, np.ndarray]:
  return {masks.path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _branch_errors(s, stacked, num: int) -> List[float]:
  return [1.0 - runtime.evaluate(s, interpolate.take(stacked["params"], i),
                                    interpolate.take(stacked["batch_stats"], i))["accuracy"]
          for i in range(num)]


def save_copies(parent: str, copies: branches_lib.Branches) -> None:
  """Each copy's final {'params', 'batch_stats'}, so lmcjax.results can reload
  it, then the record that marks them complete (for trained_copies)."""
  stacked, num_copies = copies.ends(), len(copies.final_loss)
  for i in range(num_copies):
    checkpoints.save_tree(layout.branch_copy(parent, i), interpolate.take(stacked, i))
  logs.write_json(layout.branch_copies_record(parent),
                  {"num_copies": num_copies, "final_loss": np.asarray(copies.final_loss).tolist(),
                   "cost": copies.cost})
  shutil.rmtree(layout.branch_checkpoints(parent), ignore_errors=True)


def _saved_copies(parent: str, like: PyTree, num_copies: int,
                  prefix: Tuple[Any, ...]) -> Optional[branches_lib.Branches]:
  """The copies a killed earlier attempt of this stage finished and saved (the
  pipeline moves outputs of other inputs aside), or None."""
  record_path = layout.branch_copies_record(parent)
  if not os.path.exists(record_path):
    return None
  record = logs.read_json(record_path)
  if record.get("num_copies") != num_copies:
    return None
  trees = [checkpoints.load_tree(layout.branch_copy(parent, i), like, what="saved branch copy")
           for i in range(num_copies)]
  stacked = engine.stack(trees)
  return branches_lib.Branches(stacked["params"], stacked["batch_stats"],
                               np.asarray(record["final_loss"]),
                               branches_lib.seed_paths(prefix, num_copies), record["cost"])


def trained_copies(s, spec, start: PyTree, mask, parent: str, *, num_copies: int,
                   prefix: Tuple[Any, ...], **train_kwargs) -> branches_lib.Branches:
  """branches.train_branches from `start`, checkpointed under `parent` and saved
  there; copies saved by an earlier attempt are reloaded instead of retrained
  (bit for bit the same: the training is deterministic and the trees exact)."""
  like = {"params": start["params"], "batch_stats": start["batch_stats"]}
  saved = _saved_copies(parent, like, num_copies, prefix)
  if saved is not None:
    logging.info("branches under %s: reloaded the %d copies an earlier attempt saved",
                 parent, num_copies)
    return saved
  copies = branches_lib.train_branches(s, spec, start["params"], start["batch_stats"], mask,
                                       prefix=prefix, num_copies=num_copies,
                                       checkpoint_dir=layout.branch_checkpoints(parent),
                                       **train_kwargs)
  jax.block_until_ready(copies.ends())
  save_copies(parent, copies)
  return copies


def barrier_statistics(s, pairs: List[Dict[str, Any]], test_errors: List[float]) -> Dict[str, Any]:
  """Per-pair error barriers and the copies' test accuracy, each with a 95% CI
  and the count behind it. One workdir is one init seed: the barrier CI is
  over pairs within it, which share copies (stats.barrier_ci warns)."""
  seed = s.config.seeds.init
  barriers = [p["error_barrier"] for p in pairs]
  accuracy = [1.0 - e for e in test_errors]
  return {"error_barriers": barriers, "error_barrier_ci": stats.barrier_ci({seed: barriers}),
          "test_accuracy": accuracy,
          "test_accuracy_ci": stats.mean_accuracy_ci(accuracy, int(s.x_test.shape[0]))}


def analyse_model(s, a, name: str, mask, start: PyTree, start_at: int, spec, splits,
                  out_dir: str, log: logs.MetricsLog, detail: bool = True
                  ) -> Tuple[Dict[str, Any], Dict[str, Any], np.ndarray]:
  """Branches, pairwise paths, and (with detail) landscapes and Hessian of one model."""
  os.makedirs(out_dir, exist_ok=True)
  timings, tick = {}, time.perf_counter()
  branch_start = dense.start_step(s.config.imp.rewind_schedule, start_at)
  copies = trained_copies(s, spec, start, mask, out_dir, num_copies=a.num_branches,
                          prefix=("analysis", name), chunk=a.branch_chunk,
                          start_step=branch_start, execution=a.execution)
  stacked = copies.ends()
  timings["branches_s"] = time.perf_counter() - tick
  tick = time.perf_counter()
  paths = _paths(s, a, stacked, mask, splits, out_dir)
  timings["interpolation_s"] = time.perf_counter() - tick
  tick = time.perf_counter()
  lands = _landscapes(s, a, name, stacked, mask, splits, out_dir) if detail else {}
  timings["landscape_s"] = time.perf_counter() - tick
  tick = time.perf_counter()
  curvature, diag_values = (_hessian(s, a, name, stacked, mask, splits, out_dir)
                            if a.hessian.enabled and detail else ({}, np.zeros(0)))
  timings["hessian_s"] = time.perf_counter() - tick
  test_error = _branch_errors(s, stacked, a.num_branches)
  summary = {"sparsity": masks.sparsity(mask, s.prunable) if mask is not None else 0.0,
             "start": {"kind": a.start, "dense_step": start_at, "branch_start_step": branch_start,
                       "schedule": s.config.imp.rewind_schedule},
             "branch_final_train_loss": copies.final_loss.tolist(), "branch_cost": copies.cost,
             "barriers": {k: v["summary"] for k, v in paths.items()},
             "barrier_stats": {k: barrier_statistics(s, v["pairs"], test_error)
                               for k, v in paths.items()},
             "branch_test_error": test_error, "landscape": lands,
             "hessian": {k: v for k, v in curvature.items() if k != "layers"},
             "timings": timings}
  log.write("analysis", 0, {"model": name, **{f"{k}/error_barrier_mean": v["error_barrier_mean"]
                                              for k, v in summary["barriers"].items()},
                            **timings})
  logs.write_json(os.path.join(out_dir, "summary.json"), summary)
  return summary, paths, diag_values


# ---------------------------------------------------------------- instability


def _instability_models(s, a, models) -> List[Tuple[str, Optional[PyTree]]]:
  """The dense net and each source's mask at instability.rounds (default: the
  sparsest analysed round of each source)."""
  c = a.instability
  out = [(name, mask) for name, _, mask in models if name == "dense" and c.include_dense]
  masked = [(name, src, mask) for name, src, mask in models if mask is not None]
  for src in dict.fromkeys(src for _, src, _ in masked):
    mine = {int(name.rsplit("_r", 1)[1]): (name, mask) for name, s_, mask in masked if s_ == src}
    for r in (tuple(c.rounds) or (max(mine),)):
      validate.require(r in mine, f"analysis.instability.rounds entry {r} is not an analysed "
                       f"round of {src!r} (analysed: {sorted(mine)})")
      out.append(mine[r])
  return out


def _instability_point(s, a, wd, name, mask, step, splits, log) -> Dict[str, Any]:
  """Copies from step `step` of the dense run (times the mask) and their barriers."""
  c = a.instability
  start = dense.load(s, wd, step, log)
  point_dir = layout.instability_point_dir(wd, name, step)
  stacked = trained_copies(
      s, s.config.train, start, mask, point_dir, num_copies=c.num_copies,
      prefix=("instability", name, step), chunk=a.branch_chunk,
      start_step=dense.start_step(s.config.imp.rewind_schedule, step),
      execution=a.execution).ends()
  result = interpolate.pairwise(s.model, stacked, interpolate.default_alphas(c.num_alphas),
                                *splits[c.split], mask=mask,
                                eval_batch_size=s.config.eval_batch_size,
                                alpha_chunk=a.alpha_chunk, execution=a.execution)
  return {"step": step, **barrier_statistics(s, result["pairs"],
                                             _branch_errors(s, stacked, c.num_copies))}


def reuses_analysis_copies(a) -> bool:
  """Whether an instability point at the analysis' start step can take the
  barrier analysis' own copies: the same copy count, split and alphas."""
  c = a.instability
  return (np.array_equal(alphas(a), interpolate.default_alphas(c.num_alphas))
          and c.num_copies == a.num_branches and c.split in a.eval_splits)


def _reusable(a, start_at: int, analysed: Dict[str, Any]):
  """name -> barrier_statistics of the barrier analysis' own copies (see
  reuses_analysis_copies), for the point at the analysis' start step."""
  where = f"{a.instability.split}/interpolate"
  if not reuses_analysis_copies(a):
    return lambda name, step: None
  return lambda name, step: (analysed[name]["barrier_stats"].get(where)
                             if step == start_at and name in analysed else None)


def instability(s, a, wd: str, models, splits, out_dir: str, log, start_at: int = -1,
                analysed: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Error barrier between SGD-noise copies against the rewind epoch, per model.

  A point at the barrier analysis' own start step reuses its copies
  (`analysed`: model name -> analyse_model summary) instead of training more.
  """
  c = a.instability
  n = int(s.x_train.shape[0])
  steps = [dense.epoch_step(s.config, n, e) for e in c.rewind_epochs]
  dense.ensure_snapshots(s, wd, steps, log)
  reused = _reusable(a, start_at, analysed or {})
  curves = {}
  measured = _instability_models(s, a, models)
  shown = progress.Progress("instability", len(measured) * len(steps), "points", every_s=0)
  for name, mask in measured:
    curves[name] = []
    for epoch, step in zip(c.rewind_epochs, steps):
      prior = reused(name, step)
      point = ({"step": step, **prior} if prior else
               _instability_point(s, a, wd, name, mask, step, splits, log))
      curves[name].append({"epoch": float(epoch), "reused_analysis_copies": prior is not None,
                           **point})
      shown.update(sum(map(len, curves.values())), f"{name} from epoch {epoch:g}")
    logging.info("instability %s: barriers %s", name,
                 [round(p["error_barrier_ci"]["estimate"], 4) for p in curves[name]])
  out = {"split": c.split, "schedule": s.config.imp.rewind_schedule, "num_copies": c.num_copies,
         "epochs": [float(e) for e in c.rewind_epochs], "steps": steps, "models": curves}
  stem = os.path.join(out_dir, "instability")
  logs.write_json(stem + ".json", out)
  logs.write_npz(stem + ".npz", epochs=np.asarray(out["epochs"]), steps=np.asarray(steps),
                 **{f"barriers/{name}": np.asarray([p["error_barriers"] for p in curve])
                    for name, curve in curves.items()})
  out["png"] = plots.plot_instability(stem, curves, c.split)
  return out


def _ci_row(result, first) -> Dict[str, float]:
  ci = result[0]["barrier_stats"][first(result[1])]["error_barrier_ci"]
  return {"x": 100 * result[0]["sparsity"], "estimate": ci["estimate"], "low": ci["low"],
          "high": ci["high"]}


def _figures(a, results, out_dir: str) -> Dict[str, str]:
  """The cross-model figures, each with its numbers beside it.

  Curves and barriers come from the first eval split and BN mode.
  """
  first = lambda paths: next(iter(paths))
  curves = [{"label": plots.curve_label(name, (p["i"], p["j"]), *first(paths).split("/")),
             "alphas": p["alphas"], "error": p["error"], "loss": p["loss"]}
            for name, (_, paths, _) in results.items() for p in paths[first(paths)]["pairs"]]
  files = {"interpolation": plots.plot_interpolation(os.path.join(out_dir, "interpolation"), curves)}
  series: Dict[str, List[Dict[str, float]]] = {}
  for name, result in results.items():
    if name != "dense":
      dense_row = [_ci_row(results["dense"], first)] if "dense" in results else []
      series.setdefault(name.rsplit("_r", 1)[0], dense_row).append(_ci_row(result, first))
  if series:
    files["barrier_vs_sparsity"] = plots.plot_ci_lines(
        os.path.join(out_dir, "barrier_vs_sparsity"), series, "sparsity (%)",
        f"{first(next(iter(results.values()))[1])} error barrier (%), 95% CI",
        "one seed: CI over pairs, which share copies")
  # Only exact or trusted diagonals: an estimate with relative SE > 0.3 is
  # noise, and a histogram of noise must not be read as a comparison.
  trusted = {n: r for n, r in results.items() if r[0]["hessian"].get("trusted")}
  if a.hessian.enabled and trusted:
    captions = sorted({r[0]["hessian"]["caption"] for r in trusted.values()})
    files["hessian_hist"] = plots.plot_hessian_histograms(
        os.path.join(out_dir, "hessian_hist"), {n: r[2] for n, r in trusted.items()},
        a.hessian.hist_bins, title="\n".join(captions))
  return files


def _barrier_line(summary: Dict[str, Any]) -> str:
  return ", ".join(f"{where} error barrier {b['error_barrier_mean']:.4f}"
                   for where, b in summary["barriers"].items())


def _detailed(name: str, models, a) -> bool:
  """Landscapes and the Hessian for every model, or the dense net and each
  source's sparsest analysed mask (analysis.detail_models)."""
  if a.detail_models == "all" or name == "dense":
    return True
  source = name.rsplit("_r", 1)[0]
  return name == max(n for n, src, _ in models if src == source)


def run_stage(s, wd: str, log: logs.MetricsLog) -> Dict[str, Any]:
  """Analyses the dense net and every target mask; returns a JSON-able summary."""
  a = s.config.analysis
  check_config(s.config)
  out_dir = layout.analysis_dir(wd)
  os.makedirs(out_dir, exist_ok=True)
  start, start_at = _start_point(s, a, wd, log)
  models = _models(s, a, wd)
  splits = _splits(s, a, wd)
  spec = s.config.train if a.reuse_config_train else a.branch_train
  logging.info("analysis: %s with %d branches each", [m[0] for m in models], a.num_branches)
  results = {}
  shown = progress.Progress("analysis", len(models), "models", every_s=0)
  for name, _, mask in models:
    results[name] = analyse_model(s, a, name, mask, start, start_at, spec, splits,
                                  layout.analysis_model_dir(wd, name), log,
                                  _detailed(name, models, a))
    shown.update(len(results), f"{name}: {_barrier_line(results[name][0])}")
  summary = {"models": {name: r[0] for name, r in results.items()},
             "figures": _figures(a, results, out_dir), "num_alphas": int(alphas(a).size),
             "num_test": int(s.x_test.shape[0]), "seed": s.config.seeds.init,
             "start": {"kind": a.start, "dense_step": start_at,
                       "schedule": s.config.imp.rewind_schedule}}
  if a.instability.enabled:
    summary["instability"] = instability(s, a, wd, models, splits, out_dir, log, start_at,
                                         summary["models"])
  logs.write_json(os.path.join(out_dir, "summary.json"), summary)
  return summary


# Reads the rewind point, masks and distilled set of the earlier stages.
STAGE = runtime.Stage(
    "analysis", run_stage, check_config,
    reads=("seeds", "data", "model", "train", "prune", "eval_batch_size", "analysis",
           "parallel", "stages", "imp.rewind_schedule", "imp.rewind_step", "imp.rewind_epochs",
           "imp.sources", "imp.rounds"),
    depends_on=("distill", "imp"), output_dirs=lambda workdir: (layout.analysis_dir(workdir),))
