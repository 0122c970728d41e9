"""Every PNG figure lmcjax draws, each saved beside the numbers that draw it.

Every `plot_*(stem, ...)` writes STEM.png and STEM.json (or the numbers are
in a file named in its docstring), so a figure can be redrawn or checked
without recomputing anything. This is the one module that sets up matplotlib.
"""
import os
from typing import Any, Dict, List, Sequence

import matplotlib
matplotlib.use("Agg")  # no display on CPU hosts and in tests
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from lmcjax import logs  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(fig, stem: str, dpi: int = 110, pad: float = 1.08) -> str:
  """Writes STEM.png atomically (logs.atomic_write) and frees the figure."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  fig.tight_layout(pad=pad)
  try:
    return logs.atomic_write(stem + ".png", lambda f: fig.savefig(f, format="png", dpi=dpi),
                             binary=True)
  finally:
    plt.close(fig)


def plot_interpolation(stem: str, curves: List[Dict[str, Any]], metric: str = "error") -> str:
  """Several interpolation curves in one figure.

  curves: [{'label', 'alphas', metric}] (pairs, sparsities, splits).
  """
  logs.write_json(stem + ".json", {"metric": metric, "curves": curves})
  fig, ax = plt.subplots(figsize=(6, 4))
  for c in curves:
    ax.plot(c["alphas"], np.asarray(c[metric]) * (100 if metric == "error" else 1),
            label=c["label"], lw=1.2)
  ax.set_xlabel("interpolation coefficient alpha")
  ax.set_ylabel("error (%)" if metric == "error" else metric)
  ax.legend(fontsize=6, ncol=2)
  return _save(fig, stem)


def plot_ci_lines(stem: str, series: Dict[str, List[Dict[str, float]]], xlabel: str,
                  ylabel: str, title: str = "", scale: float = 100.0,
                  save_numbers: bool = True) -> str:
  """One line per series with 95% CI error bars.

  series: {label: [{'x', 'estimate', 'low', 'high'}]}; values are scaled by
  `scale` (fractions to percent). save_numbers=False when the caller keeps
  richer numbers in STEM.json itself.
  """
  if save_numbers:
    logs.write_json(stem + ".json", {"xlabel": xlabel, "ylabel": ylabel, "scale": scale,
                                     "series": series})
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for label, rows in series.items():
    rows = sorted(rows, key=lambda r: r["x"])
    x = np.asarray([r["x"] for r in rows])
    y = scale * np.asarray([r["estimate"] for r in rows])
    err = scale * np.abs(np.asarray([[r["estimate"] - r["low"], r["high"] - r["estimate"]]
                                     for r in rows]).T)
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.axhline(0, color="grey", lw=0.5)
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  return _save(fig, stem)


def plot_instability(stem: str, curves: Dict[str, List[Dict[str, Any]]], split: str) -> str:
  """Error barrier against the rewind epoch, one line per model (Frankle et al.
  Fig. 3). The numbers are the analysis' STEM.json, so none are written here."""
  series = {name: [{"x": p["epoch"], **{k: p["error_barrier_ci"][k]
                                        for k in ("estimate", "low", "high")}} for p in curve]
            for name, curve in curves.items()}
  return plot_ci_lines(stem, series, "rewind epoch", f"{split} error barrier (%), 95% CI",
                       "instability vs rewind point", save_numbers=False)


def plot_hessian_histograms(stem: str, values: Dict[str, np.ndarray], bins: int = 50,
                            title: str = "") -> str:
  """Histograms of the Hessian diagonal (unpruned entries), one per model.

  The x axis is symlog: diagonals span orders of magnitude around zero. The
  title says how the diagonals were computed (method, examples).
  """
  all_values = np.concatenate([np.asarray(v) for v in values.values()])
  limit = max(float(np.max(np.abs(all_values))) if all_values.size else 1.0, 1e-12)
  edges = np.concatenate([-np.geomspace(limit, limit * 1e-6, bins // 2),
                          np.geomspace(limit * 1e-6, limit, bins // 2)])
  hist = {name: np.histogram(v, bins=edges)[0].tolist() for name, v in values.items()}
  logs.write_json(stem + ".json", {"edges": edges.tolist(), "counts": hist, "title": title,
                                   "num_entries": {k: int(np.size(v)) for k, v in values.items()}})
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, counts in hist.items():
    ax.stairs(counts, edges, label=name)
  ax.set_xscale("symlog", linthresh=limit * 1e-6)
  ax.tick_params(axis="x", labelsize=6, rotation=45)
  ax.set_yscale("log")
  ax.set_xlabel("Hessian diagonal entry")
  ax.set_ylabel("count")
  ax.set_title(title, fontsize=6)
  ax.legend(fontsize=7)
  return _save(fig, stem)


def plot_spectral_density(stem: str, densities: Dict[str, Dict[str, Any]], title: str = "") -> str:
  """Hessian spectral densities (hessian.spectral_density), one curve per model.

  The y axis is log, as PyHessian's plots: the mass near zero dwarfs the outliers.
  """
  logs.write_json(stem + ".json", {"title": title, "densities": {
      name: {k: np.asarray(v).tolist() if k in ("grid", "density") else v for k, v in d.items()}
      for name, d in densities.items()}})
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, d in densities.items():
    density = np.asarray(d["density"])
    ax.semilogy(d["grid"], np.maximum(density, density.max() * 1e-12), label=name, lw=1.2)
  ax.set_xlabel("eigenvalue")
  ax.set_ylabel("density")
  ax.set_title(title, fontsize=7)
  ax.legend(fontsize=7)
  return _save(fig, stem)


def plot_landscape(stem: str, grid: Dict[str, np.ndarray], metric: str = "error",
                   title: str = "") -> str:
  """Contours of a 2-D grid (or a curve for 1-D) with the solutions marked.

  The grid itself is expected at STEM.npz (landscape.save_grid).
  """
  z = np.asarray(grid[metric]) * (100 if metric == "error" else 1)
  fig, ax = plt.subplots(figsize=(5, 4))
  names, coords = list(grid["point_names"]), np.asarray(grid["point_coords"])
  if z.ndim == 1:
    ax.plot(grid["axis0"], z)
    ax.set_xlabel("direction 0")
    ax.set_ylabel(metric)
  else:
    filled = ax.contourf(grid["axis0"], grid["axis1"], z, levels=20, cmap="viridis")
    fig.colorbar(filled, ax=ax, label=f"{metric}{' (%)' if metric == 'error' else ''}")
    for name, (cx, cy) in zip(names, coords):
      ax.plot(cx, cy, "w*", ms=10, mec="k")
      ax.annotate(str(name), (cx, cy), textcoords="offset points", xytext=(4, 4), color="w",
                  fontsize=8)
    ax.set_xlabel("direction 0")
    ax.set_ylabel("direction 1")
  ax.set_title(title, fontsize=9)
  return _save(fig, stem)


def plot_accuracy_vs_sparsity(stem: str, rows: List[Dict[str, Any]], sources: Sequence[str]) -> str:
  """IMP's retrained test accuracy against sparsity, one line per mask source.

  rows: imp.jsonl's rows (which hold the numbers).
  """
  fig, ax = plt.subplots(figsize=(6, 4))
  for source in sources:
    mine = [r for r in rows if r["source"] == source and r["test_accuracy"] is not None]
    if mine:
      ax.plot([100 * r["sparsity"] for r in mine], [100 * r["test_accuracy"] for r in mine],
              marker="o", label=source)
  ax.set_xlabel("sparsity (% of prunable weights removed)")
  ax.set_ylabel("test accuracy after retraining (%)")
  ax.grid(alpha=0.3)
  if ax.get_lines():
    ax.legend(title="mask source")
  return _save(fig, stem, dpi=120)


def plot_image_grid(stem: str, images, labels, mean, std, max_per_class: int = 10) -> str:
  """One row per class of up to max_per_class images (normalised NHWC), de-normalised.

  The images are the distilled set's npz beside it.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  classes = np.unique(labels)
  cols = min(max_per_class, max(int(np.sum(labels == c)) for c in classes))
  fig, axes = plt.subplots(len(classes), cols, figsize=(cols, len(classes)), squeeze=False)
  pixels = np.clip(images * np.asarray(std) + np.asarray(mean), 0.0, 1.0)
  for r, c in enumerate(classes):
    row = pixels[labels == c]
    for j in range(cols):
      ax = axes[r, j]
      ax.axis("off")
      if j < len(row):
        img = row[j]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
  return _save(fig, stem, dpi=80, pad=0.1)


def curve_label(model: str, pair: Sequence[int], split: str, bn_mode: str) -> str:
  bn = "" if bn_mode == "interpolate" else f" bn-{bn_mode}"
  return f"{model} {pair[0]}-{pair[1]} {split}{bn}"
