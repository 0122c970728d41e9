"""The landscape measure (config.analysis.landscape): loss and error on planes
through a model's copies (Garipov et al.'s three points, four seeds) or along
random directions from copy 0 (Li et al.).

Per model: landscape_KIND.npz (the raw grid) and .png; records 'landscape':
{kind: {npz, png, min_error, max_error}}.
"""
import os
from typing import Any, Dict

from lmcjax import execution as execution_lib
from lmcjax import landscape
from lmcjax import plots
from lmcjax import rng
from lmcjax import validate
from lmcjax.analysis import measures

# Copies each plane passes through (the random directions start from copy 0).
_NEEDS = {"three_point": 3, "four_seed": 4, "random_1d": 1, "random_2d": 1}


def check(config) -> None:
  c, num_branches = config.analysis.landscape, config.analysis.num_branches
  for kind in c.kinds:
    validate.choice("analysis.landscape.kinds entry", kind, landscape.KINDS)
    validate.require(num_branches >= _NEEDS[kind], f"analysis.landscape kind {kind!r} needs "
                     f"num_branches >= {_NEEDS[kind]}, got {num_branches}")
  validate.choice("analysis.landscape.split", c.split, measures.SPLITS)
  validate.require(c.resolution >= 2,
                   f"analysis.landscape.resolution must be >= 2, got {c.resolution!r}")
  validate.positive("analysis.landscape.chunk_points", c.chunk_points)
  validate.non_negative("analysis.landscape.margin", c.margin)
  validate.positive("analysis.landscape.span", c.span)


def cost(config, c, sizes: measures.Sizes) -> measures.Cost:
  """Per detailed model: every grid point of each plane (or line), on c.split."""
  del config
  points = sum(c.resolution ** (1 if kind == "random_1d" else 2) for kind in c.kinds)
  return measures.Cost(forward_examples={"grid": points * sizes.examples[c.split]})


def run(ctx: measures.ModelContext, c) -> Dict[str, Any]:
  s, a, name = ctx.setup, ctx.analysis, ctx.model.name
  params = [execution_lib.take(ctx.stacked["params"], i) for i in range(a.num_branches)]
  stats0 = execution_lib.take(ctx.stacked["batch_stats"], 0)
  key = rng.named_key(s.config.seeds.init, "analysis", name, "landscape")
  out = {}
  for kind in c.kinds:
    if kind == "three_point":
      plane = landscape.three_point_plane(*params[:3])
    elif kind == "four_seed":
      plane = landscape.four_seed_plane(*params[:4])
    else:
      plane = landscape.random_plane(key, params[0], 1 if kind == "random_1d" else 2, ctx.mask,
                                     c.skip_bias_and_norm)
    grid = landscape.evaluate_grid(
        s.model, plane, landscape.grid_axes(plane, c.resolution, c.margin, c.span), stats0,
        *ctx.splits[c.split], mask=ctx.mask, chunk=c.chunk_points,
        eval_batch_size=s.config.eval_batch_size, execution=a.execution)
    stem = os.path.join(ctx.out_dir, f"landscape_{kind}")
    landscape.save_grid(stem + ".npz", grid, kind)
    plots.plot_landscape(stem, grid, "error", f"{name} {kind} ({c.split} error)")
    out[kind] = {"npz": stem + ".npz", "png": stem + ".png",
                 "min_error": float(grid["error"].min()), "max_error": float(grid["error"].max())}
  return out


def record(ctx: measures.ModelContext, c, out) -> Dict[str, Any]:
  del ctx, c
  return {"landscape": out or {}}


MEASURE = measures.Measure(
    name="landscape", section="landscape", check=check, records=("landscape",), run=run,
    record=record, detail_only=True, splits=lambda c: (c.split,), cost=cost)
