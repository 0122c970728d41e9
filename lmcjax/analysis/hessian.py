"""The Hessian measure (config.analysis.hessian) of each model's first copy.

Per model: hessian.json/.npz (the diagonal: exact GGN where that is the
Hessian diagonal, else labelled estimates; per-layer traces; top eigenvalues,
by Lanczos) and hessian_density.png/.json (SLQ spectral density); records
'hessian' (hessian.json less its per-layer summaries). Across models:
hessian_hist.png, only of diagonals that are exact or have relative SE <= 0.3.
"""
import os
from typing import Any, Dict, Tuple

import jax
import numpy as np

from lmcjax import curvature
from lmcjax import execution as execution_lib
from lmcjax import logs
from lmcjax import masks
from lmcjax import models
from lmcjax import plots
from lmcjax import rng
from lmcjax import validate
from lmcjax.analysis import measures

PyTree = Any


def check(config) -> None:
  c, model_cfg = config.analysis.hessian, config.model
  validate.choice("analysis.hessian.split", c.split, measures.SPLITS)
  if c.enabled:  # a method that does not apply to the model is refused with the reason
    curvature.resolve_method(c.method, models.create(model_cfg, num_classes=10))
  validate.positive("analysis.hessian.batch_size_examples", c.batch_size_examples)
  validate.non_negative("analysis.hessian.num_batches", c.num_batches)
  validate.positive("analysis.hessian.chunk_examples", c.chunk_examples)
  validate.positive("analysis.hessian.max_probes", c.max_probes)
  validate.positive("analysis.hessian.chunk_probes", c.chunk_probes)
  validate.non_negative("analysis.hessian.tol", c.tol)
  validate.positive("analysis.hessian.lanczos_k", c.lanczos_k)
  validate.require(c.lanczos_iters >= c.lanczos_k, f"analysis.hessian.lanczos_iters "
                   f"({c.lanczos_iters}) must be >= lanczos_k ({c.lanczos_k})")
  validate.non_negative("analysis.hessian.lanczos_tol", c.lanczos_tol)
  validate.positive("analysis.hessian.density_probes", c.density_probes)
  validate.positive("analysis.hessian.density_steps", c.density_steps)
  validate.positive("analysis.hessian.hist_bins", c.hist_bins)


def _caption(diag: curvature.Diagonal, num_examples: int, split: str) -> str:
  """What a curvature figure shows: its method, exact or with its relative SE, and the data."""
  how = ("exact" if diag.exact else
         f"estimated, relative SE {diag.relative_stderr:.2g} over {diag.num_probes} probes")
  return f"{diag.label}; {how}; {num_examples} {split} examples"


def run(ctx: measures.ModelContext, c) -> Tuple[Dict[str, Any], np.ndarray]:
  """(hessian.json's contents, the diagonal's unpruned entries)."""
  s, a, name, stacked, mask = ctx.setup, ctx.analysis, ctx.model.name, ctx.stacked, ctx.mask
  splits, out_dir = ctx.splits, ctx.out_dir
  params = execution_lib.take(stacked["params"], 0)
  stats = execution_lib.take(stacked["batch_stats"], 0)
  images, labels = curvature.loss_batches(
      rng.named_key(s.config.seeds.data_order, "analysis", "hessian"), *splits[c.split],
      c.batch_size_examples, c.num_batches)
  key = rng.named_key(s.config.seeds.init, "analysis", name, "hessian")
  problem = curvature.LossProblem(s.model, params, stats, images, labels,
                                  batch_size_examples=c.batch_size_examples, mask=mask)
  diag = curvature.hessian_diagonal(problem, key, method=c.method, chunk_examples=c.chunk_examples,
                                    max_probes=c.max_probes, chunk_probes=c.chunk_probes,
                                    tol=c.tol, max_params=c.exact_max_params,
                                    execution=a.execution)
  eigen = dict(max_iters=c.lanczos_iters, tol=c.lanczos_tol)
  top = curvature.lanczos(problem, jax.random.fold_in(key, 1), k=c.lanczos_k, **eigen)
  n = problem.num_examples
  result = {"split": c.split, "num_examples": n, "method": diag.method, "label": diag.label,
            "exact": diag.exact, "caption": _caption(diag, n, c.split),
            "trusted": diag.exact or diag.relative_stderr <= curvature.TRUSTED_RELATIVE_STDERR,
            "num_probes": diag.num_probes, "converged": diag.converged,
            "relative_stderr": diag.relative_stderr, "trace": diag.trace,
            "trace_stderr": diag.trace_stderr,
            "top_eigenvalue": {"eigenvalue": float(top.eigenvalues[0]), **top.as_dict()},
            "layers": curvature.layer_summaries(diag.values, mask, c.hist_bins)}
  if c.layer_eigenvalues:
    result["layer_top_eigenvalues"] = curvature.layer_top_eigenvalues(
        problem, jax.random.fold_in(key, 2), **eigen)
  if c.density:
    result["density"] = _density(c, name, problem, jax.random.fold_in(key, 3), out_dir)
  arrays = {"diagonal/" + k: v for k, v in _flat_named(diag.values).items()}
  arrays.update({"stderr/" + k: v for k, v in _flat_named(diag.stderr).items()})
  if diag.ggn is not None:
    arrays.update({"ggn/" + k: v for k, v in _flat_named(diag.ggn).items()})
  num_params = sum(np.size(x) for x in jax.tree.leaves(params))
  if num_params <= c.exact_max_params and diag.method != "exact":
    exact = curvature.exact_diagonal(problem, max_params=c.exact_max_params,
                                     execution=a.execution)
    arrays.update({"exact/" + k: v for k, v in _flat_named(exact).items()})
    got, want = curvature.kept_values(diag.values, mask), curvature.kept_values(exact, mask)
    result["relative_error_vs_exact"] = float(np.linalg.norm(got - want) /
                                              max(np.linalg.norm(want), 1e-30))
  logs.write_npz(os.path.join(out_dir, "hessian.npz"), **arrays)
  logs.write_json(os.path.join(out_dir, "hessian.json"), result)
  return result, curvature.kept_values(diag.values, mask)


def _density(c, name: str, problem, key, out_dir: str) -> Dict[str, Any]:
  """SLQ spectral density of one model, plotted; returns its summary."""
  out = curvature.spectral_density(problem, key, num_probes=c.density_probes,
                                   steps=c.density_steps)
  title = (f"{name}: Hessian spectral density (SLQ, {out['num_probes']} probe(s) x "
           f"{out['steps']} Lanczos steps; {problem.num_examples} {c.split} examples)")
  png = plots.plot_spectral_density(os.path.join(out_dir, "hessian_density"),
                                    {name: out}, title)
  # The file name only: results must not depend on where the workdir lives.
  return {"png": os.path.basename(png),
          **{k: out[k] for k in ("mean", "mean_stderr", "dimension", "num_probes", "steps",
                                 "sigma")}}


def _flat_named(tree: PyTree) -> Dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {masks.path_name(p): np.asarray(v) for p, v in leaves}


def record(ctx: measures.ModelContext, c, out) -> Dict[str, Any]:
  del ctx, c
  result = out[0] if out else {}
  return {"hessian": {k: v for k, v in result.items() if k != "layers"}}


def figures(ctx: measures.StageContext, c) -> Dict[str, str]:
  """Histograms of the diagonals, captioned with how each was computed."""
  # Only exact or trusted diagonals: an estimate with relative SE > 0.3 is
  # noise, and a histogram of noise must not be read as a comparison.
  trusted = [m for m in ctx.analysed if m.summary["hessian"].get("trusted")]
  if not trusted:
    return {}
  captions = sorted({m.summary["hessian"]["caption"] for m in trusted})
  return {"hessian_hist": plots.plot_hessian_histograms(
      os.path.join(ctx.out_dir, "hessian_hist"), {m.model.name: m.outputs["hessian"][1]
                                                  for m in trusted},
      c.hist_bins, title="\n".join(captions))}


def cost(config, h, sizes: measures.Sizes) -> measures.Cost:
  """Per detailed model, in train-step examples on the Hessian batch (a
  Hessian-vector product is a forward-over-backward, ~2 train steps; the GGN
  diagonal one backward pass per class): the diagonal by its resolved method
  (Hutchinson's probes and Lanczos stop early where they converge: upper
  bounds), Lanczos for the net and, with layer_eigenvalues, for each kernel,
  SLQ, and the exact diagonal beside an estimate where the net is small
  enough. Counted as if every parameter were kept."""
  del config
  method = curvature.resolve_method(h.method, sizes.module)
  split = sizes.examples[h.split]
  batch = min(split, h.batch_size_examples * h.num_batches) if h.num_batches else split
  params = jax.tree.leaves(sizes.variables["params"])
  num_params = sum(int(np.prod(p.shape)) for p in params)
  kernels = sum(len(p.shape) >= 2 for p in params)
  ggn = sizes.num_classes if method in ("ggn", "ggn+residual") else 0
  probes = h.max_probes if method in ("hutchinson", "ggn+residual") else 0
  exact = num_params if method == "exact" or num_params <= h.exact_max_params else 0
  lanczos = h.lanczos_iters * (1 + (kernels if h.layer_eigenvalues else 0))
  density = h.density_probes * h.density_steps if h.density else 0
  hvps = probes + exact + lanczos + density
  return measures.Cost(train_examples={"hvps": (2 * hvps + ggn) * batch})


MEASURE = measures.Measure(
    name="hessian", section="hessian", check=check, records=("hessian",), run=run, record=record,
    figures=figures, detail_only=True, splits=lambda c: (c.split,), cost=cost)
