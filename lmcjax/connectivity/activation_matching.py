"""Activation matching (Ainsworth et al. 2023; Entezari et al. 2022).

Each of net B's units is matched to the unit of net A whose activations it
correlates with best, one linear assignment per permutation: maximise
sum_i corr(a_i, b_p[i]). The activations of a permutation are the outputs of
its structure's activation points after ReLU (a hidden layer's post-ReLU
output; for a residual stream, the stream after every block's addition and
ReLU, and after the stem, pooled). Every example, and every spatial position
of a conv activation, is one observation.

The correlations come from sums (of a, b, a^2, b^2 and a b^T per
permutation) accumulated in one jitted lax.scan over chunks of
`chunk_examples` examples, so memory beyond the images themselves does not
grow with the number of examples. Masked weights take part as zeros.
"""
import functools
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from lmcjax import masks
from lmcjax import validate
from lmcjax.connectivity.structure import PermutationStructure

PyTree = Any


def activation_matching(module: nn.Module, structure: PermutationStructure, variables_a: Mapping,
                        variables_b: Mapping, images, *, mask_a: Optional[PyTree] = None,
                        mask_b: Optional[PyTree] = None, chunk_examples: int = 256
                        ) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
  """Aligns net B's units to net A's by the correlation of their activations.

  Args:
    module: the flax module of both nets.
    structure: structure_of(module, variables_a).
    variables_a, variables_b: {'params': ..., 'batch_stats': ...}; both nets
      run in eval mode.
    images: (examples, ...) inputs of the module.
    mask_a, mask_b: 0/1 trees with the params' structure, or None (dense).
    chunk_examples: examples per step of the accumulation (memory, not result).
  Returns:
    (perm, objective): perm maps B's units onto A's, so permute(structure,
    perm, params_b) is B aligned to A; objective is, per permutation, the mean
    correlation of the matched pairs of units.
  """
  validate.positive("chunk_examples", chunk_examples)
  images = jnp.asarray(images)
  validate.require(images.ndim >= 2 and images.shape[0] > 0,
                   f"activation matching needs a batch of images, got shape {images.shape}")
  variables_a = _masked(variables_a, mask_a, "a")
  variables_b = _masked(variables_b, mask_b, "b")
  observations = _observations_per_example(module, structure, variables_a, images)
  examples = images.shape[0]
  sums = _sums(module, structure, variables_a, variables_b, images,
               min(chunk_examples, examples))
  perm, objective = {}, {}
  for name in structure.sizes:
    corr = correlation({k: np.asarray(v, np.float64) for k, v in sums[name].items()},
                       examples * observations[name])
    _, units = optimize.linear_sum_assignment(corr, maximize=True)
    perm[name] = units
    objective[name] = float(corr[np.arange(len(units)), units].mean())
  return perm, objective


def correlation(sums: Mapping[str, np.ndarray], count: int) -> np.ndarray:
  """corr[i, j] of A's unit i and B's unit j from the accumulated sums; a unit
  that never varies (dead after ReLU) correlates 0 with every unit."""
  mean_a, mean_b = sums["a"] / count, sums["b"] / count
  std_a = np.sqrt(np.maximum(sums["aa"] / count - mean_a**2, 0.0))
  std_b = np.sqrt(np.maximum(sums["bb"] / count - mean_b**2, 0.0))
  cov = sums["ab"] / count - np.outer(mean_a, mean_b)
  return np.clip(cov / np.maximum(np.outer(std_a, std_b), 1e-12), -1.0, 1.0)


def _masked(variables: Mapping, mask: Optional[PyTree], which: str) -> Dict[str, PyTree]:
  """The variables to run, masked; empty collections dropped."""
  validate.require(isinstance(variables, Mapping) and "params" in variables,
                   f"variables of net {which} must be a dict with 'params'")
  out = {k: v for k, v in variables.items() if k == "params" or v}
  if mask is not None:
    masks.check_matches(mask, out["params"], f"mask_{which}")
    out["params"] = masks.apply(out["params"], mask)
  return out


def _activations(module: nn.Module, structure: PermutationStructure, variables,
                 x) -> Dict[Tuple[str, ...], jax.Array]:
  """Module path -> its output after ReLU, for every activation point."""
  wanted = {path for paths in structure.activations.values() for path in paths}
  _, state = module.apply(
      variables, x, train=False, mutable=["intermediates"],
      capture_intermediates=lambda m, method: method == "__call__" and tuple(m.path) in wanted)
  out = {}
  for path in wanted:
    tree = state.get("intermediates", {})
    for key in path:
      tree = tree.get(key, {})
    validate.require("__call__" in tree, f"model {structure.model!r}: activation point "
                                         f"{'/'.join(path)} is not called")
    out[path] = nn.relu(tree["__call__"][0])
  return out


def _observations_per_example(module, structure, variables, images) -> Dict[str, int]:
  """Per permutation, the rows one example contributes (spatial positions
  summed over its activation points). Wrong-shaped images are one line."""
  try:
    shapes = jax.eval_shape(lambda v, x: _activations(module, structure, v, x), variables,
                            images[:1])
  except (TypeError, ValueError, flax.errors.FlaxError) as e:
    if isinstance(e, validate.InputError):
      raise
    raise validate.InputError(
        f"images of shape {tuple(images.shape[1:])} do not fit model {structure.model!r}: "
        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
  return {name: sum(int(np.prod(shapes[path].shape[1:-1])) for path in paths)
          for name, paths in structure.activations.items()}


@functools.partial(jax.jit, static_argnames=("module", "structure", "chunk_examples"))
def _sums(module, structure: PermutationStructure, variables_a, variables_b, images,
          chunk_examples: int) -> Dict[str, Dict[str, jax.Array]]:
  """Per permutation: sums of a, b, a^2, b^2 over observations and of a b^T.

  The last chunk is the last `chunk_examples` examples, so every chunk has one
  shape; examples an earlier chunk already counted get weight 0."""
  examples = images.shape[0]
  chunks = -(-examples // chunk_examples)

  def step(sums, index):
    start = jnp.minimum(index * chunk_examples, examples - chunk_examples)
    x = jax.lax.dynamic_slice_in_dim(images, start, chunk_examples)
    fresh = (start + jnp.arange(chunk_examples) >= index * chunk_examples).astype(jnp.float32)
    acts_a = _activations(module, structure, variables_a, x)
    acts_b = _activations(module, structure, variables_b, x)
    sums = dict(sums)
    for name, paths in structure.activations.items():
      for path in paths:
        sums[name] = _add(sums[name], acts_a[path], acts_b[path], fresh)
    return sums, None

  init = {name: {"a": jnp.zeros(size), "b": jnp.zeros(size), "aa": jnp.zeros(size),
                 "bb": jnp.zeros(size), "ab": jnp.zeros((size, size))}
          for name, size in structure.sizes.items()}
  sums, _ = jax.lax.scan(step, init, jnp.arange(chunks))
  return sums


def _add(sums, a, b, weight):
  """sums plus one chunk's weighted observations (examples x positions, units)."""
  units = a.shape[-1]
  weight = jnp.broadcast_to(weight.reshape((-1,) + (1,) * (a.ndim - 2)), a.shape[:-1]).reshape(-1)
  a = a.reshape(-1, units).astype(jnp.float32)
  b = b.reshape(-1, units).astype(jnp.float32)
  weighted_a = a * weight[:, None]
  dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
  return {"a": sums["a"] + weighted_a.sum(0), "b": sums["b"] + dot(weight, b),
          "aa": sums["aa"] + (weighted_a * a).sum(0), "bb": sums["bb"] + dot(weight, b * b),
          "ab": sums["ab"] + dot(weighted_a.T, b)}
