"""Every PNG figure lmcjax draws, each saved beside the numbers that draw it.

Every `plot_*(stem, ...)` writes STEM.png and STEM.json (or the numbers are
in a file named in its docstring), so a figure can be redrawn or checked
without recomputing anything. This is the one module that draws with
matplotlib. It builds `matplotlib.figure.Figure` objects directly and never
imports pyplot, so importing lmcjax leaves the process's matplotlib backend
(a notebook's inline plots, say) as it was.
"""
import os
import re
from typing import Any, Dict, List, Sequence, Tuple
import zlib

from matplotlib import figure as mpl_figure
from matplotlib import lines as mpl_lines
from matplotlib import patches as mpl_patches
import numpy as np

from lmcjax import logs
from lmcjax import modelid


def _save(fig, stem: str, dpi: int = 110, pad: float = 1.08, layout: bool = True) -> str:
  """Writes STEM.png atomically (logs.atomic_write).

  layout=False keeps a layout the drawing function already set (room for a
  figure-level legend).
  """
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  if layout:
    fig.tight_layout(pad=pad)
  return logs.atomic_write(stem + ".png", lambda f: fig.savefig(f, format="png", dpi=dpi),
                           binary=True)


def _subplots(figsize: Tuple[float, float], rows: int = 1, cols: int = 1, **kwargs):
  """pyplot.subplots without pyplot: a Figure not registered with any backend
  (saved through Agg, freed when dropped)."""
  fig = mpl_figure.Figure(figsize=figsize)
  return fig, fig.subplots(rows, cols, **kwargs)


# Okabe-Ito colours (readable with colour-blindness). A mask source keeps its
# colour in every figure of a run, whichever sources a figure shows and in which
# order, so a reader matches lines across figures by colour alone.
_SOURCE_COLOURS = {"dense": "#000000", "real": "#0072B2", "distilled": "#D55E00",
                   "subset": "#CC79A7", "combined": "#009E73", "random": "#999999"}
# Sources without a fixed colour get one of these by a stable hash of the name
# (the same in every figure and process; two such sources may share one).
_OTHER_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#882255", "#44AA99")
# Models of one source in one figure (real_r01, real_r03, ...) differ by line style.
_LINESTYLES = ("-", "--", ":", "-.")


def model_source(name: str) -> str:
  """The mask source of an analysed model or series label: 'real_r03' -> 'real',
  'dense' -> 'dense', 'random' -> 'random'."""
  return modelid.ModelId.parse(name).source


def source_colour(source: str) -> str:
  """The colour of a mask source (or of a model name such as 'real_r03') in every figure."""
  source = model_source(source)
  if source in _SOURCE_COLOURS:
    return _SOURCE_COLOURS[source]
  return _OTHER_COLOURS[zlib.crc32(source.encode()) % len(_OTHER_COLOURS)]


def _line_styles(labels: Sequence[str]) -> Dict[str, Dict[str, str]]:
  """{label: {'color', 'linestyle'}}: colour by source, line style by the
  label's place among the labels of the same source."""
  seen: Dict[str, int] = {}
  styles = {}
  for label in labels:
    source = model_source(label)
    k = seen.get(source, 0)
    seen[source] = k + 1
    styles[label] = {"color": source_colour(source), "linestyle": _LINESTYLES[k % len(_LINESTYLES)]}
  return styles


def curve_label(model: str, pair: Sequence[int], split: str, bn_mode: str) -> str:
  """'real_r01 0-1 test' (' bn-MODE' appended when BN is not interpolated)."""
  bn = "" if bn_mode == "interpolate" else f" bn-{bn_mode}"
  return f"{model} {pair[0]}-{pair[1]} {split}{bn}"


def _curve_fields(curve: Dict[str, Any]) -> Tuple[str, str]:
  """(model, condition) of an interpolation curve: its 'model' and 'split' keys
  when given, else read back from a curve_label() label."""
  parts = curve["label"].split(" ", 2)
  is_label = len(parts) >= 2 and re.fullmatch(r"\d+-\d+", parts[1]) is not None
  model = curve.get("model", parts[0] if is_label else curve["label"])
  condition = curve.get("split", parts[2] if is_label and len(parts) == 3 else "")
  return model, condition


def _panel_grid(n: int, max_cols: int = 4, size: Tuple[float, float] = (2.7, 2.3)):
  """n panels sharing their axes, up to max_cols a row; the x axis is labelled
  on every panel with no panel below it."""
  rows = -(-n // max_cols)
  cols = -(-n // rows)  # balanced rows: 5 panels as 3 + 2, not 4 + 1
  fig, axes = _subplots((size[0] * cols, size[1] * rows + 0.5), rows, cols,
                        sharex=True, sharey=True, squeeze=False)
  for ax in axes.flat[n:]:
    ax.remove()
  for i, ax in enumerate(axes.flat[:n]):
    if i + cols >= n:
      ax.xaxis.set_tick_params(labelbottom=True)
  return fig, list(axes.flat[:n])


def draw_interpolation(curves: List[Dict[str, Any]], metric: str = "error"):
  """The figure of plot_interpolation, not saved: one panel per model, in the
  order the models first appear in `curves`."""
  scale = 100.0 if metric == "error" else 1.0
  groups: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
  for c in curves:
    model, condition = _curve_fields(c)
    groups.setdefault(model, {}).setdefault(condition, []).append(c)
  conditions = list(dict.fromkeys(cond for by in groups.values() for cond in by))
  dashes = {cond: _LINESTYLES[i % len(_LINESTYLES)] for i, cond in enumerate(conditions)}
  fig, axes = _panel_grid(max(len(groups), 1))
  cols = axes[0].get_subplotspec().get_gridspec().ncols
  for i, (ax, (model, by_condition)) in enumerate(zip(axes, groups.items())):
    colour = source_colour(model)
    for condition, pairs in by_condition.items():
      alphas = np.asarray(pairs[0]["alphas"], dtype=float)
      ys = scale * np.stack([np.interp(alphas, p["alphas"], p[metric]) for p in pairs])
      ax.fill_between(alphas, ys.min(0), ys.max(0), color=colour, alpha=0.2, lw=0)
      ax.plot(alphas, ys.mean(0), color=colour, linestyle=dashes[condition], lw=1.5)
    num_pairs = max(len(p) for p in by_condition.values())
    ax.set_title(f"{model} ({num_pairs} pair{'s' * (num_pairs != 1)})", fontsize=9,
                 color=colour)
    ax.grid(alpha=0.3)
    if i + cols >= len(groups):
      ax.set_xlabel("interpolation coefficient \u03b1")
    if i % cols == 0:
      ax.set_ylabel("error (%)" if metric == "error" else metric)
  handles = [mpl_lines.Line2D([], [], color="dimgrey", linestyle=dashes[cond],
                              label=f"{cond + ': ' if cond else ''}mean over pairs")
             for cond in conditions]
  handles.append(mpl_patches.Patch(color="dimgrey", alpha=0.3, label="band: min to max over pairs"))
  fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
  fig.tight_layout(rect=(0, 0.07, 1, 1))
  return fig


def plot_interpolation(stem: str, curves: List[Dict[str, Any]], metric: str = "error") -> str:
  """Interpolation curves between SGD-noise copies, one panel per model.

  curves: [{'label', 'alphas', metric}], one per pair of copies (and split),
  labelled by curve_label() or carrying 'model' and 'split' keys. Each panel
  shows the mean over the model's pairs with a min-to-max band, one line
  style per split, in the model's source colour. The curves are STEM.json.
  """
  logs.write_json(stem + ".json", {"metric": metric, "curves": curves})
  return _save(draw_interpolation(curves, metric), stem, layout=False)


def draw_ci_lines(series: Dict[str, List[Dict[str, float]]], xlabel: str, ylabel: str,
                  title: str = "", scale: float = 100.0, xticklabels: Sequence[str] = ()):
  """The figure of plot_ci_lines, not saved."""
  fig, ax = _subplots((5.5, 4))
  styles = _line_styles(list(series))
  xs = [r["x"] for rows in series.values() for r in rows]
  # Series side by side around each x, so equal estimates do not hide each other's bars.
  dodge = 0.012 * ((max(xs) - min(xs)) if xs and max(xs) > min(xs) else 1.0)
  for i, (label, rows) in enumerate(series.items()):
    rows = sorted(rows, key=lambda r: r["x"])
    x = np.asarray([r["x"] for r in rows]) + dodge * (i - (len(series) - 1) / 2)
    y = scale * np.asarray([r["estimate"] for r in rows])
    err = scale * np.abs(np.asarray([[r["estimate"] - r["low"], r["high"] - r["estimate"]]
                                     for r in rows]).T)
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label, **styles[label])
  if xticklabels:  # a categorical axis: x = 0, 1, ... name the categories
    ax.set_xticks(range(len(xticklabels)), list(xticklabels))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.axhline(0, color="grey", lw=0.5)
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8, title="bars: 95% CI", title_fontsize=7)
  return fig


def plot_ci_lines(stem: str, series: Dict[str, List[Dict[str, float]]], xlabel: str,
                  ylabel: str, title: str = "", scale: float = 100.0,
                  save_numbers: bool = True, xticklabels: Sequence[str] = ()) -> str:
  """One line per series with 95% CI error bars, coloured by mask source.

  series: {label: [{'x', 'estimate', 'low', 'high'}]}, labels being sources or
  model names ('real', 'real_r05'); values are scaled by `scale` (fractions
  to percent). xticklabels names the x values 0, 1, ... of a categorical axis.
  save_numbers=False when the caller keeps richer numbers in
  STEM.json itself.
  """
  if save_numbers:
    logs.write_json(stem + ".json", {"xlabel": xlabel, "ylabel": ylabel, "scale": scale,
                                     "title": title, "xticklabels": list(xticklabels),
                                     "series": series})
  return _save(draw_ci_lines(series, xlabel, ylabel, title, scale, xticklabels), stem)


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
  fig, ax = _subplots((6, 4))
  styles = _line_styles(list(hist))
  for name, counts in hist.items():
    ax.stairs(counts, edges, label=name, **styles[name])
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
  fig, ax = _subplots((6, 4))
  styles = _line_styles(list(densities))
  for name, d in densities.items():
    density = np.asarray(d["density"])
    ax.semilogy(d["grid"], np.maximum(density, density.max() * 1e-12), label=name, lw=1.2,
                **styles[name])
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
  fig, ax = _subplots((5, 4))
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


def draw_accuracy_vs_sparsity(rows: List[Dict[str, Any]], sources: Sequence[str]):
  """The figure of plot_accuracy_vs_sparsity, not saved."""
  fig, ax = _subplots((6, 4))
  for source in sources:
    mine = [r for r in rows if r["source"] == source and r["test_accuracy"] is not None]
    if mine:
      ax.plot([100 * r["sparsity"] for r in mine], [100 * r["test_accuracy"] for r in mine],
              marker="o", label=source, color=source_colour(source))
  ax.set_xlabel("sparsity (% of prunable weights removed)")
  ax.set_ylabel("test accuracy after retraining (%)")
  ax.grid(alpha=0.3)
  if ax.get_lines():
    ax.legend(title="mask source")
  return fig


def plot_accuracy_vs_sparsity(stem: str, rows: List[Dict[str, Any]], sources: Sequence[str]) -> str:
  """IMP's retrained test accuracy against sparsity, one line per mask source.

  rows: imp.jsonl's rows (which hold the numbers).
  """
  return _save(draw_accuracy_vs_sparsity(rows, sources), stem, dpi=120)


def plot_image_grid(stem: str, images, labels, mean, std, max_per_class: int = 10) -> str:
  """One row per class of up to max_per_class images (normalised NHWC), de-normalised.

  The images are the distilled set's npz beside it.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  classes = np.unique(labels)
  cols = min(max_per_class, max(int(np.sum(labels == c)) for c in classes))
  fig, axes = _subplots((cols, len(classes)), len(classes), cols, squeeze=False)
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
