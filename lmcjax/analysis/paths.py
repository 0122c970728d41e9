"""Aligned paths between two nets, shared by the cross-seed and mask-transfer
measures: their BN modes and config checks, what a pair's paths cost, the
paths themselves (naive, or after weight or activation matching, each with
the running statistics interpolated or corrected) and the barrier CIs.
"""
import dataclasses
from typing import Any, Dict, List, Tuple

import ml_collections
import numpy as np

from lmcjax import interpolate
from lmcjax import models
from lmcjax import rng
from lmcjax import stats
from lmcjax import validate
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import interpolation
from lmcjax.analysis import measures
from lmcjax.connectivity import permute
from lmcjax.connectivity import repair

PyTree = Any
# The error barrier in both definitions (lmcjax.interpolate), each with a CI.
ERROR_BARRIERS = ("error_barrier", "error_barrier_chord")


def bn_modes(module, requested) -> Tuple[str, ...]:
  """The running-statistics modes of every path: `requested`, or by default
  'interpolate' and the correction the model's norm admits."""
  if requested:
    return tuple(requested)
  if models.info(module).keeps_running_stats:
    return ("interpolate", "reset")
  try:
    repair.check_applies(module)
  except validate.InputError:
    return ("interpolate",)  # instance norm: nothing to correct
  return ("interpolate", "repair")


def check_bn_modes(module, requested, what: str) -> None:
  """One line for a mode that does not apply to the model."""
  for mode in requested:
    validate.choice(f"{what} entry", mode, interpolate.BN_MODES)
    if mode == "repair":
      try:
        repair.check_applies(module)
      except validate.InputError as e:
        raise validate.InputError(f"{what} entry 'repair': {e}") from None
    if mode == "reset":
      validate.require(models.info(module).keeps_running_stats, f"{what} entry 'reset': "
                       "the model keeps no BatchNorm statistics to reset (use 'repair')")


def check_paths(config, name: str) -> None:
  """The fields both measures share: inits, split, alphas, BN modes, chunks."""
  c = config.analysis[name]
  inits_lib.check_section(config, name)
  validate.choice(f"analysis.{name}.split", c.split, measures.SPLITS)
  validate.require(c.num_alphas >= 2, f"analysis.{name}.num_alphas must be >= 2, "
                   f"got {c.num_alphas!r}")
  check_bn_modes(inits_lib.built_model(config)[0], c.bn_modes, f"analysis.{name}.bn_modes")
  for field in ("correction_batches", "correction_batch_size_examples", "chunk_alphas"):
    validate.positive(f"analysis.{name}.{field}", c[field])


def pair_cost(c, sizes: measures.Sizes, alignments: Tuple[str, ...]) -> int:
  """Forward examples of one pair's paths (`Paths.measure`): per alignment,
  activation matching's statistics (both nets over the training split) where
  it aligns, and a path per BN mode. Weight matching sees no examples."""
  n = sizes.examples["train"]
  statistics = interpolation.statistics_examples(n, c.correction_batch_size_examples,
                                                 c.correction_batches)
  path = sum(interpolation.path_cost(sizes, c.num_alphas, c.split, mode, statistics)
             for mode in bn_modes(sizes.module, c.bn_modes))
  return len(alignments) * path + 2 * n * alignments.count("activation_matching")


@dataclasses.dataclass
class Paths:
  """Aligns and interpolates pairs of nets of one model, for one measure."""
  ctx: measures.StageContext
  c: ml_collections.ConfigDict
  inits: inits_lib.Inits
  name: str

  def __post_init__(self):
    s = self.ctx.setup
    self.modes = bn_modes(s.model, self.c.bn_modes)
    self.alphas = interpolate.default_alphas(self.c.num_alphas)
    self.bn_images = None
    if any(mode != "interpolate" for mode in self.modes):
      self.bn_images = interpolate.bn_batches(
          s.x_train, self.c.correction_batch_size_examples, self.c.correction_batches,
          rng.named_key(s.config.seeds.data_order, "analysis", self.name, "bn"))

  def align(self, alignment: str, a, b, mask_a, mask_b, key_path) -> Tuple[PyTree, Any]:
    """(b with its units aligned to a's, the matching's objective)."""
    if alignment == "naive":
      return b, None
    # Imported when used: they import scipy.optimize (see inits.mask_into_basin).
    from lmcjax.connectivity import activation_matching  # pylint: disable=g-import-not-at-top
    from lmcjax.connectivity import weight_matching  # pylint: disable=g-import-not-at-top
    structure = self.inits.structure
    if alignment == "weight_matching":
      key = rng.named_key(self.ctx.setup.config.seeds.init, "analysis", self.name, *key_path)
      perm, objective = weight_matching.weight_matching(
          structure, a, b, mask_a=mask_a, mask_b=mask_b, key=key,
          max_iterations=self.c.weight_matching_iterations)
      objective = objective["inner_product"]
    else:
      perm, objective = activation_matching.activation_matching(
          self.ctx.setup.model, structure, a, b, self.inits.matching_images(), mask_a=mask_a,
          mask_b=mask_b, chunk_examples=self.c.chunk_examples)
      objective = float(np.mean(list(objective.values())))
    params, batch_stats, _ = permute.permute(structure, perm, b["params"], b["batch_stats"])
    return {"params": params, "batch_stats": batch_stats}, objective

  def measure(self, a, b, mask_a, mask_b, alignments, key_path) -> List[Dict[str, Any]]:
    """One record per alignment and BN mode: the path from a to aligned b.

    The endpoints are masked already; the path is not (an aligned b's mask
    is a permuted one, so the path runs over the union of the supports)."""
    s, a_cfg = self.ctx.setup, self.ctx.analysis
    out = []
    for alignment in alignments:
      aligned, objective = self.align(alignment, a, b, mask_a, mask_b, key_path)
      for mode in self.modes:
        path = interpolate.evaluate_path(
            s.model, a, aligned, self.alphas, *self.ctx.splits[self.c.split], bn_mode=mode,
            bn_images=self.bn_images, eval_batch_size=s.config.eval_batch_size,
            chunk_alphas=self.c.chunk_alphas, execution=a_cfg.execution)
        out.append({"alignment": alignment, "bn_mode": mode, "objective": objective, **path})
    return out


def barrier_cis(s, pairs: List[Dict[str, Any]]) -> Dict[str, Any]:
  """Per (alignment/bn_mode): each pair's barriers and a CI over the pairs,
  which share nets (stats.barrier_ci says so)."""
  out = {}
  for key in dict.fromkeys(f"{p['alignment']}/{p['bn_mode']}" for p in pairs):
    mine = [p for p in pairs if f"{p['alignment']}/{p['bn_mode']}" == key]
    entry = {"loss_barrier_mean": float(np.mean([p["loss_barrier"] for p in mine]))}
    for barrier in ERROR_BARRIERS:
      values = [p[barrier] for p in mine]
      entry[f"{barrier}s"] = values
      entry[f"{barrier}_ci"] = stats.barrier_ci({s.config.seeds.init: values})
    out[key] = entry
  return out


def without_curves(pairs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
  drop = ("alphas", "loss", "error", "accuracy")
  return [{k: v for k, v in p.items() if k not in drop} for p in pairs]


