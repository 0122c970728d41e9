"""Figures: one panel per model, and a mask source keeps its colour in every figure."""
import os
import subprocess
import sys

from matplotlib import colors
import numpy as np
import pytest

from lmcjax import plots

PAIRS = ((0, 1), (0, 2), (1, 2))


def _curves(models, splits=("test",), num_alphas=5):
  """Interpolation curves as lmcjax.analysis builds them: one per model, pair and split."""
  alphas = np.linspace(0.0, 1.0, num_alphas)
  return [{"label": plots.curve_label(model, pair, split, "interpolate"),
           "alphas": alphas.tolist(),
           "error": (0.05 + 0.01 * (k + 1) * np.sin(np.pi * alphas) + 0.002 * p).tolist()}
          for k, model in enumerate(models) for split in splits
          for p, pair in enumerate(PAIRS)]


def _line_colour(ax):
  """The colour of the one data line of a panel, as an RGBA tuple."""
  (line,) = ax.get_lines()
  return colors.to_rgba(line.get_color())


def test_interpolation_draws_one_panel_per_model_with_mean_and_band():
  models = ["dense", "real_r01", "distilled_r01", "random_r01", "real_r03"]
  fig = plots.draw_interpolation(_curves(models, splits=("test", "train")))
  assert len(fig.axes) == len(models)
  assert [ax.get_title().split(" ")[0] for ax in fig.axes] == models
  for ax in fig.axes:
    # One mean line per split, and one band (a filled polygon) per split.
    assert len(ax.get_lines()) == 2
    assert len(ax.collections) == 2
  # The mean line is the mean over the 3 pairs, in percent.
  curves = [c for c in _curves(models) if c["label"].startswith("real_r01 ")]
  expected = 100 * np.mean([c["error"] for c in curves], axis=0)
  np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), expected)
  # The band spans the pairs' min to max, which the legend says.
  legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
  assert "band: min to max over pairs" in legend_texts


def test_plot_interpolation_writes_png_and_numbers(tmp_path):
  stem = str(tmp_path / "interpolation")
  path = plots.plot_interpolation(stem, _curves(["dense", "real_r01"]))
  assert path == stem + ".png" and (tmp_path / "interpolation.png").stat().st_size > 0
  assert (tmp_path / "interpolation.json").exists()


def test_a_source_keeps_its_colour_across_figures():
  # Two figures with different sources in different orders: matplotlib's colour
  # cycle would give 'real' the first colour in one and the second in the other.
  first = plots.draw_interpolation(_curves(["real_r01", "distilled_r01", "random_r01"]))
  second = plots.draw_interpolation(_curves(["dense", "random_r05", "real_r05"]))
  real = _line_colour(first.axes[0])
  assert _line_colour(second.axes[2]) == real
  assert _line_colour(first.axes[2]) == _line_colour(second.axes[1])  # random
  assert len({_line_colour(ax) for ax in first.axes}) == 3  # sources differ

  # The same colour in the other figures of a run: barriers and accuracy vs sparsity.
  point = {"x": 20.0, "estimate": 0.01, "low": 0.005, "high": 0.02}
  ci = plots.draw_ci_lines({"distilled": [point], "real": [point]}, "sparsity (%)", "barrier (%)")
  by_label = {bars.get_label(): colors.to_rgba(bars.lines[0].get_color())
              for bars in ci.axes[0].containers}
  assert by_label["real"] == real
  rows = [{"source": s, "sparsity": 0.2, "test_accuracy": 0.9} for s in ("random", "real")]
  acc = plots.draw_accuracy_vs_sparsity(rows, ("random", "real"))
  by_label = {line.get_label(): colors.to_rgba(line.get_color())
              for line in acc.axes[0].get_lines()}
  assert by_label["real"] == real


def test_models_of_one_source_share_its_colour_and_differ_in_line_style():
  point = {"x": 0.0, "estimate": 0.01, "low": 0.005, "high": 0.02}
  fig = plots.draw_ci_lines({m: [point]
                             for m in ("dense", "real_r01", "real_r03", "distilled_r01")},
                            "rewind epoch", "barrier (%)")
  lines = {bars.get_label(): bars.lines[0] for bars in fig.axes[0].containers}
  colour = {m: colors.to_rgba(line.get_color()) for m, line in lines.items()}
  assert colour["real_r01"] == colour["real_r03"] == colors.to_rgba(plots.source_colour("real"))
  assert lines["real_r01"].get_linestyle() != lines["real_r03"].get_linestyle()
  assert len({colour["dense"], colour["real_r01"], colour["distilled_r01"]}) == 3


@pytest.mark.parametrize("name,source", [("real_r03", "real"), ("distilled_r12", "distilled"),
                                         ("dense", "dense"), ("random", "random"),
                                         ("my_method_r02", "my_method")])
def test_model_source(name, source):
  assert plots.model_source(name) == source


def test_an_unlisted_source_gets_a_stable_colour():
  assert plots.source_colour("my_method") == plots.source_colour("my_method_r04")
  assert plots.source_colour("my_method") not in {plots.source_colour(s) for s in
                                                  ("dense", "real", "distilled", "random")}


def test_drawing_leaves_the_matplotlib_backend_alone(tmp_path):
  # A notebook's inline backend must survive `import lmcjax` and a saved figure:
  # plots never imports pyplot nor switches the backend.
  code = ("import sys, matplotlib; before = matplotlib.rcParams['backend']; "
          "from lmcjax import plots; "
          f"plots.plot_ci_lines({str(tmp_path / 'ci')!r}, "
          "{'real': [{'x': 0, 'estimate': 0, 'low': 0, 'high': 0}]}, 'x', 'y'); "
          "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
          "assert matplotlib.rcParams['backend'] == before, matplotlib.rcParams['backend']")
  subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "svg"})
  assert (tmp_path / "ci.png").stat().st_size > 0
