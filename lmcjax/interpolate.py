"""Linear interpolation between two solutions, evaluated at a vector of alphas.

theta(alpha) = (1 - alpha) theta_a + alpha theta_b. The alphas run as chosen
per backend (execution.resolve): on an accelerator one jitted program
vmaps over `chunk_alphas` alphas at a time and lax.maps over the chunks, so
memory is `chunk_alphas` parameter copies; on CPU a convolutional net runs one
jitted call per alpha, since vmapped parameter copies turn its convolutions
into grouped convolutions that XLA:CPU runs slowly (execution.map_points).

Barriers, of the error and of the loss (BARRIERS), in two definitions; each
max runs over the alphas in [0, 1]:
  error_barrier, loss_barrier: max_alpha f(alpha) - (f(0) + f(1)) / 2, the
    instability of Frankle et al. (2020), over the endpoints' mean.
  error_barrier_chord, loss_barrier_chord: max_alpha f(alpha) - ((1 - alpha)
    f(0) + alpha f(1)), over the chord (Entezari et al. 2022).
Both are >= 0 (alpha 0 and 1 are in the max). They differ by at most
|f(1) - f(0)| / 2: on a straight line between unequal endpoints the first is
half their gap and the second 0.

Running statistics along the path (bn_mode): 'interpolate' lerps BatchNorm's
running statistics as the seed paper did; 'reset' recomputes them on training
batches at each alpha, since interpolated weights make the interpolated
statistics stale; 'repair' is REPAIR (Jordan et al. 2023) for nets without
BatchNorm: each channel's statistics at alpha are reset to the endpoints'
interpolated ones, measured on the same training batches
(lmcjax.connectivity.repair, which refuses the nets it does not apply to).
"""
import functools
import itertools
from typing import Any, Dict, Optional, Sequence, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import execution as execution_lib
from lmcjax import masks
from lmcjax import models
from lmcjax import train
from lmcjax import validate

PyTree = Any
BN_MODES = ("interpolate", "reset", "repair")
# Both definitions of the barrier (module doc), of the error and of the loss.
BARRIERS = ("error_barrier", "error_barrier_chord", "loss_barrier", "loss_barrier_chord")


def interpolate(a: PyTree, b: PyTree, alpha, mask: Optional[PyTree] = None) -> PyTree:
  """(1 - alpha) a + alpha b, times the mask.

  This form (not a + alpha (b - a)) returns a at alpha 0 and b at alpha 1
  bit-exactly. The mask makes pruned weights exactly zero even if an
  endpoint was not masked.
  """
  out = jax.tree.map(lambda x, y: (1 - alpha) * x + alpha * y, a, b)
  return out if mask is None else masks.apply(out, mask)


def check_endpoints(end_a: PyTree, end_b: PyTree, mask: Optional[PyTree] = None) -> None:
  """One-line errors when the two endpoints (or the mask) do not share a tree."""
  masks.check_matches(end_b, end_a, what="interpolation endpoint b")
  if mask is not None:
    masks.check_matches(mask, end_a["params"], what="interpolation mask")


def check_alphas(alphas) -> np.ndarray:
  """Validates alphas; logs a line when some extrapolate beyond [0, 1]."""
  alphas = np.asarray(alphas, np.float32)
  validate.require(alphas.ndim == 1 and alphas.size > 0,
                   f"alphas must be a non-empty vector, got shape {alphas.shape}")
  validate.require(bool(np.all(np.isfinite(alphas))), f"alphas must be finite, got {alphas}")
  outside = alphas[(alphas < 0) | (alphas > 1)]
  if outside.size:
    logging.info("interpolation extrapolates beyond [0, 1] at alphas %s", outside.tolist())
  return alphas


def batch_statistics(model, params: PyTree, stats_like: PyTree, bn_images) -> PyTree:
  """BatchNorm population statistics of `params` on bn_images (K, B, ...).

  Each batch's moments come from a train-mode pass from zero running
  statistics: flax's update m*old + (1-m)*batch then gives (1-m)*batch. The
  K batch moments are averaged (PyTorch's cumulative average, momentum=None).
  """
  zeros = jax.tree.map(jnp.zeros_like, stats_like)
  from_zeros = lambda x: train.forward(model, params, zeros, x, train=True)[1]
  scaled = jax.tree.map(lambda s: jnp.mean(s, axis=0), jax.lax.map(from_zeros, bn_images))
  return jax.tree.map(lambda s: s / (1 - models.BN_MOMENTUM), scaled)


@functools.lru_cache(maxsize=16)
def _path_program(model, eval_batch_size: int, chunk_alphas: int, reset_bn: bool, execution: str):
  """(args, alphas) -> metrics per alpha; args = (end_a, end_b, mask, images, labels, bn_images)."""
  evaluate = train.make_eval_fn(model, eval_batch_size)

  def at_alpha(args, alpha):
    end_a, end_b, mask, images, labels, bn_images = args
    params = interpolate(end_a["params"], end_b["params"], alpha, mask)
    if reset_bn:
      stats = batch_statistics(model, params, end_a["batch_stats"], bn_images)
    else:
      stats = interpolate(end_a["batch_stats"], end_b["batch_stats"], alpha)
    return evaluate(params, stats, images, labels)

  return execution_lib.map_points(at_alpha, chunk_alphas, execution)


def _at(values: np.ndarray, alphas: np.ndarray, target: float) -> float:
  hit = np.flatnonzero(alphas == target)
  validate.require(hit.size > 0,
                   f"barriers need alpha {target} among the alphas, got {alphas.tolist()}")
  return float(values[hit[0]])


def curve_barriers(alphas, curve) -> Dict[str, float]:
  """One curve's barrier in both definitions (module doc): {'': over the
  endpoints' mean (Frankle et al.), '_chord': over the chord (Entezari et al.)}.

  The maxima run over alphas in [0, 1]; the endpoints are found by value, so
  extrapolated alphas may come in any order.
  """
  alphas, curve = np.asarray(alphas, np.float64), np.asarray(curve, np.float64)
  inside = (alphas >= 0) & (alphas <= 1)
  start, end = _at(curve, alphas, 0.0), _at(curve, alphas, 1.0)
  chord = (1 - alphas) * start + alphas * end
  return {"": float(np.max(curve[inside]) - (start + end) / 2),
          "_chord": float(np.max((curve - chord)[inside]))}


def barriers(alphas, loss, error) -> Dict[str, float]:
  """The BARRIERS of a path: each definition of the error's and the loss's barrier."""
  return {f"{name}_barrier{suffix}": value
          for name, curve in (("error", error), ("loss", loss))
          for suffix, value in curve_barriers(alphas, curve).items()}


def default_alphas(num: int = 31, low: float = 0.0, high: float = 1.0) -> np.ndarray:
  """`num` evenly spaced alphas from low to high, endpoints included."""
  validate.require(num >= 2, f"num_alphas must be >= 2 (the two endpoints), got {num!r}")
  return np.linspace(low, high, num, dtype=np.float32)


def _path_mode(model, end_a: PyTree, bn_mode: str, bn_images) -> str:
  """The statistics mode the path runs: 'reset' on a net without BatchNorm is
  'interpolate' (there is nothing to reset); 'repair' where REPAIR applies."""
  validate.choice("bn_mode", bn_mode, BN_MODES)
  if bn_mode == "repair":
    _repair_module().check_applies(model)
  elif bn_mode == "reset" and not jax.tree.leaves(end_a["batch_stats"]):
    return "interpolate"
  if bn_mode != "interpolate":
    validate.require(bn_images is not None and bn_images.shape[0] > 0 and bn_images.shape[1] > 0,
                     f"bn_mode={bn_mode!r} needs a non-empty (K, B, ...) array of training "
                     "batches")
  return bn_mode


def _repair_module():
  # Imported when used: lmcjax.connectivity.repair builds on this module.
  from lmcjax.connectivity import repair  # pylint: disable=g-import-not-at-top
  return repair


@functools.lru_cache(maxsize=16)
def _stacked_program(model, eval_batch_size: int, chunk_alphas: int, execution: str):
  """(args, indices) -> metrics of each alpha's given variables; args = (stacked
  {'params', 'batch_stats'} with the alpha on axis 0, images, labels)."""
  evaluate = train.make_eval_fn(model, eval_batch_size)

  def at_index(args, index):
    stacked, images, labels = args
    variables = execution_lib.take(stacked, index)
    return evaluate(variables["params"], variables["batch_stats"], images, labels)

  return execution_lib.map_points(at_index, chunk_alphas, execution)


def _repaired_metrics(model, end_a, end_b, alphas, images, labels, mask, bn_images, *,
                      eval_batch_size: int, chunk_alphas: int, execution: str):
  """Metrics per alpha of REPAIR's variables (masked by repair_path), their
  statistics measured on bn_images' examples."""
  examples = bn_images.reshape((-1,) + bn_images.shape[2:])
  stacked = _repair_module().repair_path(model, end_a, end_b, alphas, examples, mask=mask,
                                  chunk_examples=eval_batch_size, chunk_alphas=chunk_alphas,
                                  execution=execution)
  program = _stacked_program(model, eval_batch_size, chunk_alphas, execution)
  return program((stacked, images, labels), np.arange(alphas.size))


def evaluate_path(model, end_a: PyTree, end_b: PyTree, alphas, images, labels, *,
                  mask: Optional[PyTree] = None, bn_mode: str = "interpolate", bn_images=None,
                  eval_batch_size: int = 1000, chunk_alphas: int = 8,
                  execution: str = "auto") -> Dict[str, Any]:
  """Loss and error along the path from end_a to end_b, and its barriers.

  Args:
    end_a, end_b: {'params', 'batch_stats'} trees of one model.
    alphas: vector of interpolation coefficients; 0 and 1 must be among them.
    images, labels: the evaluation split (train, test or a distilled set).
    mask: pruned weights are zero at every alpha.
    bn_mode: 'interpolate' the running statistics, 'reset' them on bn_images,
      or 'repair' (nets without BatchNorm) from bn_images (module doc).
    bn_images: (K, B, H, W, C) training batches for 'reset' and 'repair'.
    chunk_alphas: alphas per vmapped call (memory: that many parameter copies).
    execution: 'auto' | 'vmapped' | 'sequential' (execution.resolve);
      chunk_alphas applies to 'vmapped' only.
  Returns:
    JSON-ready dict: alphas, loss, error, accuracy lists, the bn_mode run and
    the BARRIERS.
  """
  check_endpoints(end_a, end_b, mask)
  alphas = check_alphas(alphas)
  validate.positive("chunk_alphas", chunk_alphas)
  validate.positive("eval_batch_size", eval_batch_size)
  validate.require(images.shape[0] > 0, "cannot evaluate the interpolation on an empty split")
  mode = _path_mode(model, end_a, bn_mode, bn_images)
  execution = execution_lib.resolve(execution, end_a["params"])
  if mode == "repair":
    out = _repaired_metrics(model, end_a, end_b, alphas, images, labels, mask, bn_images,
                            eval_batch_size=eval_batch_size, chunk_alphas=chunk_alphas,
                            execution=execution)
  else:
    reset = mode == "reset"
    program = _path_program(model, eval_batch_size, chunk_alphas, reset, execution)
    out = program((end_a, end_b, mask, images, labels, bn_images if reset else None), alphas)
  out = jax.device_get(out)
  loss, accuracy = np.asarray(out["loss"], np.float64), np.asarray(out["accuracy"], np.float64)
  error = 1.0 - accuracy
  return {"alphas": alphas.tolist(), "loss": loss.tolist(), "error": error.tolist(),
          "accuracy": accuracy.tolist(), "bn_mode": mode, **barriers(alphas, loss, error)}


def pairwise(model, stacked_ends: PyTree, alphas, images, labels, **kwargs) -> Dict[str, Any]:
  """evaluate_path for every pair i < j of the copies stacked on axis 0.

  Returns {'pairs': [{i, j, **path}], 'summary': mean/max/std of each of the
  BARRIERS}. kwargs go to evaluate_path (mask, bn_mode, bn_images, ...).
  """
  num = jax.tree.leaves(stacked_ends)[0].shape[0]
  validate.require(num >= 2, f"pairwise barriers need >= 2 copies, got {num}")
  pairs = []
  for i, j in itertools.combinations(range(num), 2):
    path = evaluate_path(model, execution_lib.take(stacked_ends, i),
                         execution_lib.take(stacked_ends, j), alphas,
                         images, labels, **kwargs)
    pairs.append({"i": i, "j": j, **path})
  return {"pairs": pairs, "summary": summarise(pairs)}


def summarise(pairs: Sequence[Dict[str, Any]]) -> Dict[str, float]:
  """Mean, max and std over the pairs of each of the BARRIERS."""
  out = {}
  for name in BARRIERS:
    values = np.asarray([p[name] for p in pairs])
    out.update({f"{name}_mean": float(values.mean()), f"{name}_max": float(values.max()),
                f"{name}_std": float(values.std())})
  return out


def bn_batch_shape(num_examples: int, batch_size: int, num_batches: int) -> Tuple[int, int]:
  """(K, B) of bn_batches on a split of num_examples: as asked, within the split."""
  batch_size = min(batch_size, num_examples)
  return min(num_batches, num_examples // batch_size), batch_size


def bn_batches(images, batch_size: int, num_batches: int, key) -> jnp.ndarray:
  """(K, B, ...) training batches for the BN reset and REPAIR, drawn without replacement."""
  validate.positive("bn_reset_batch_size", batch_size)
  validate.positive("bn_reset_batches", num_batches)
  n = images.shape[0]
  validate.require(n > 0, "cannot recompute BatchNorm statistics on an empty split")
  num_batches, batch_size = bn_batch_shape(n, batch_size, num_batches)
  idx = jax.random.permutation(key, n)[:num_batches * batch_size]
  return images[idx].reshape((num_batches, batch_size) + images.shape[1:])

