"""REPAIR (Jordan et al., ICLR 2023): reset an interpolated net's channel statistics.

Between two solutions, theta(alpha) = (1 - alpha) A + alpha B, each hidden
channel's variance over examples collapses: matched channels of A and B are
correlated, but not perfectly. REPAIR measures each hidden channel's mean and
std over training images (and positions) in A and in B, and maps the
interpolated net's channel to mean (1 - alpha) mu_A + alpha mu_B and std
(1 - alpha) sd_A + alpha sd_B by a per-channel affine map folded into the layer
that emits the channel (its weight leaf scaled on the channel axis):

  weight *= k,  bias = (bias - mu) k + target_mu,  k = target_sd / sd.

Each correction changes every later layer's statistics, so layers are corrected
in the order the net calls them, one pass over the images each (XLA drops the
layers after the one measured). Statistics are exact over the images, chunked
`chunk_examples` at a time, so memory is one chunk's activations.

Where REPAIR acts follows from the model's norm (registry), so no model is named:
  none      each hidden Conv/Dense output (not the classifier head). A layer
            without a bias (ResNet's convs) gets the scale only: its std reaches
            the target, its mean is scaled with it, so its mean/std (the share
            of examples above the ReLU's threshold) stays the interpolated net's.
  layer     each norm's output, folded into the norm's scale and bias: these are
            what enter the ReLU, and a correction before the norm would be
            divided by each example's own std over all channels.
  batch     refused: bn_mode='reset' recomputes the running statistics.
  instance  refused: REPAIR provably changes nothing (docs/connectivity.md).
"""
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import execution as execution_lib
from lmcjax import interpolate as interpolate_lib
from lmcjax import masks
from lmcjax import models
from lmcjax import train
from lmcjax import validate

PyTree = Any
Path = Tuple[str, ...]
# A channel whose std would need more than this gain to reach its target is
# constant on the images (dead): it is moved to its target mean but not
# rescaled, which would blow rounding noise up into a feature.
MAX_GAIN = 1e4
# The parameter leaf that marks the layers measured: Conv/Dense or norm outputs.
LAYER_LEAVES = {"linear": "kernel", "norm": "scale"}
# Which layers REPAIR corrects, by the model's norm.
_REPAIRED = {"none": "linear", "layer": "norm"}
_REFUSALS = {
    "batch": "REPAIR does not apply to BatchNorm nets: use bn_mode='reset', which recomputes "
             "their running statistics at each alpha",
    "instance": "REPAIR changes nothing under instance norm: the norm standardises each "
                "example's channel, undoing any rescaling before it (up to eps), and after it "
                "each channel's mean and std are the interpolated bias and |scale|, already "
                "REPAIR's target where the endpoints' scales share a sign (docs/connectivity.md)",
}


def check_applies(module: nn.Module) -> None:
  """One line saying why REPAIR does not apply to this model, if it does not."""
  norm = models.info(module).norm
  validate.require(norm not in _REFUSALS, f"{type(module).__name__}: {_REFUSALS.get(norm)}")
  validate.require(norm in _REPAIRED, f"REPAIR is not worked out for {norm!r} norm")


def _node(params: PyTree, path: Path):
  for name in path:
    if not isinstance(params, Mapping) or name not in params:
      return None
    params = params[name]
  return params


def _replace(tree: PyTree, path: Path, value: PyTree) -> PyTree:
  """tree with the node at path replaced (plain dicts: lmcjax's params trees)."""
  if not path:
    return value
  return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def _is_layer(params: PyTree, path: Path, leaf: str, classifier: str) -> bool:
  """A submodule (not the classifier head) that owns the parameter `leaf`."""
  node = _node(params, path)
  return (bool(path) and path[0] != classifier and isinstance(node, Mapping)
          and leaf in node and not isinstance(node[leaf], Mapping))


def _outputs(module: nn.Module, variables: PyTree, images, wanted: Callable[[Path], bool]):
  """{path: output} of each module call that `wanted` picks, in call order (the
  calls are intercepted, so no model's layer names are listed here)."""
  outputs = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = tuple(context.module.path)
    if context.method_name == "__call__" and wanted(path):
      validate.require(path not in outputs, f"layer {'/'.join(path)} is called twice: REPAIR "
                       "needs one output per layer")
      outputs[path] = out
    return out

  with nn.intercept_methods(interceptor):
    module.apply(variables, images, train=False)
  return outputs


def _layers(module: nn.Module, variables: PyTree, image_shape, kind: str) -> Tuple[Path, ...]:
  """The layers of `kind` in call order; images that do not fit the model are one line."""
  leaf, classifier = LAYER_LEAVES[kind], models.info(module).classifier
  wanted = lambda path: _is_layer(variables["params"], path, leaf, classifier)
  order = []
  trace = lambda v, x: order.extend(_outputs(module, v, x, wanted))
  try:  # abstract: no compute
    jax.eval_shape(trace, variables, jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32))
  except (flax.errors.FlaxError, TypeError, ValueError) as e:
    if isinstance(e, validate.InputError):
      raise
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    first = first.split(" (https://")[0]  # flax appends its error page
    raise validate.InputError(f"images of shape {tuple(image_shape)} do not fit the model: "
                              f"{first}") from None
  return tuple(order)


def _chunk_moments(y, valid):
  """(count, mean, m2) per channel (last axis) over y's valid rows and positions;
  centred within the chunk, so float32 keeps the variance of a channel whose
  mean is far larger than its std."""
  weight = valid.astype(y.dtype).reshape((-1,) + (1,) * (y.ndim - 1))
  count = jnp.sum(valid.astype(y.dtype)) * int(np.prod(y.shape[1:-1]))
  axes = tuple(range(y.ndim - 1))
  mean = jnp.sum(y * weight, axes) / count
  return count, mean, jnp.sum(jnp.square((y - mean) * weight), axes)


def _combine(counts, means, m2s):
  """Mean and (population) variance of the union of chunks, from each chunk's
  (count, mean, m2): Chan et al.'s parallel formula."""
  total = jnp.sum(counts)
  mean = jnp.sum(counts[:, None] * means, axis=0) / total
  m2 = jnp.sum(m2s, axis=0) + jnp.sum(counts[:, None] * jnp.square(means - mean), axis=0)
  return mean, m2 / total


def _moments(module, variables, blocks, layers: Tuple[Path, ...]) -> Dict[str, Tuple]:
  """{'a/b': (mean, var)} over all images of each layer's channels; blocks are
  train.example_chunks' (images, valid) chunks, one per lax.map step."""

  def per_chunk(block):
    x, valid = block
    out = _outputs(module, variables, x, set(layers).__contains__)
    return {"/".join(p): _chunk_moments(out[p], valid) for p in layers}

  return {name: _combine(*m) for name, m in jax.lax.map(per_chunk, blocks).items()}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _moments_program(module, layers, variables, blocks):
  return _moments(module, variables, blocks, layers)


def _fold(params: PyTree, path: Path, mean, var, target_mean, target_sd) -> PyTree:
  """The layer at path with its output channels mapped to the target statistics."""
  node = _node(params, path)
  for name, leaf in node.items():
    validate.require(leaf.shape[-1:] == mean.shape, f"{'/'.join(path)}/{name} has shape "
                     f"{leaf.shape}, not {mean.shape[0]} channels on its last axis")
  sd = jnp.sqrt(var)
  live = sd * MAX_GAIN > target_sd
  gain = jnp.where(live, target_sd / jnp.where(live, sd, 1.0), 1.0)
  new = {name: (leaf - mean) * gain + target_mean if name == "bias" else leaf * gain
         for name, leaf in node.items()}
  return _replace(params, path, new)


def _repair_at(module, layers, args, alpha):
  """The interpolated params at alpha with every layer repaired, in call order."""
  params_a, params_b, rest, mask, blocks, stats_a, stats_b = args
  params = interpolate_lib.interpolate(params_a, params_b, alpha, mask)
  for path in layers:
    name = "/".join(path)
    (mean_a, var_a), (mean_b, var_b) = stats_a[name], stats_b[name]
    target_mean = (1 - alpha) * mean_a + alpha * mean_b
    target_sd = (1 - alpha) * jnp.sqrt(var_a) + alpha * jnp.sqrt(var_b)
    mean, var = _moments(module, {**rest, "params": params}, blocks, (path,))[name]
    params = _fold(params, path, mean, var, target_mean, target_sd)
  # Gains are finite, so a masked weight stays 0; the mask makes that explicit.
  return params if mask is None else masks.apply(params, mask)


@functools.lru_cache(maxsize=16)
def _path_program(module, layers, chunk_alphas: int, execution: str):
  return execution_lib.map_points(functools.partial(_repair_at, module, layers), chunk_alphas,
                                  execution)


def _blocks(images, chunk_examples: int):
  validate.positive("chunk_examples", chunk_examples)
  validate.require(np.ndim(images) >= 2 and np.shape(images)[0] > 0,
                   f"REPAIR needs a non-empty batch of images, got shape {np.shape(images)}")
  return train.example_chunks((jnp.asarray(images, jnp.float32),), chunk_examples)


def _repaired_kind(module: nn.Module) -> str:
  """The kind of layer REPAIR corrects in this model; one line where it does not apply."""
  check_applies(module)
  return _REPAIRED[models.info(module).norm]


def repaired_layers(module: nn.Module, variables: PyTree, image_shape) -> Tuple[Path, ...]:
  """The layers REPAIR corrects in this model, in call order (variables may be
  abstract: nothing is computed)."""
  return _layers(module, variables, image_shape, _repaired_kind(module))


def channel_statistics(module: nn.Module, variables: PyTree, images, *, layers: str = "repaired",
                       chunk_examples: int = 256) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """{layer path: (mean, std)} per output channel over the images and positions.

  layers: 'repaired' (the layers REPAIR corrects in this model), 'linear'
  (every hidden Conv/Dense output) or 'norm' (every norm's output, after its
  affine map). Any registered model, BatchNorm ones in eval mode included.
  """
  validate.choice("layers", layers, ("repaired",) + tuple(LAYER_LEAVES))
  if layers == "repaired":
    layers = _repaired_kind(module)
  blocks = _blocks(images, chunk_examples)
  found = _layers(module, variables, blocks[0].shape[2:], layers)
  stats = _moments_program(module, found, variables, blocks)
  return {name: (np.asarray(m), np.sqrt(np.asarray(v))) for name, (m, v) in stats.items()}


def repair_path(module: nn.Module, variables_a: PyTree, variables_b: PyTree, alphas, images, *,
                mask: Optional[PyTree] = None, chunk_examples: int = 256, chunk_alphas: int = 8,
                execution: str = "auto") -> PyTree:
  """The variables of the interpolated net at each alpha, REPAIRed, alpha on axis 0.

  Args:
    variables_a, variables_b: the endpoints' {'params', ...} trees.
    alphas: vector of interpolation coefficients.
    images: (N, H, W, C) training images the statistics are measured on.
    mask: multiplies the weights; masked weights are exactly zero at every alpha.
    chunk_examples: images per forward pass (memory: one chunk's activations).
    chunk_alphas, execution: how the alphas run (execution.map_points): vmapped
      `chunk_alphas` at a time in one program, or one compiled call per alpha.
  """
  check_applies(module)
  interpolate_lib.check_endpoints(variables_a, variables_b, mask)
  alphas = interpolate_lib.check_alphas(alphas)
  validate.positive("chunk_alphas", chunk_alphas)
  blocks = _blocks(images, chunk_examples)
  layers = repaired_layers(module, variables_a, blocks[0].shape[2:])
  rest = {k: v for k, v in variables_a.items() if k != "params"}
  # The targets are the statistics of the nets at alpha 0 and 1: the masked endpoints.
  masked = lambda v: v["params"] if mask is None else masks.apply(v["params"], mask)
  stats_a, stats_b = (_moments_program(module, layers, {**rest, "params": masked(v)}, blocks)
                      for v in (variables_a, variables_b))
  program = _path_program(module, layers, chunk_alphas,
                          execution_lib.resolve(execution, variables_a["params"]))
  params = program((variables_a["params"], variables_b["params"], rest, mask, blocks, stats_a,
                    stats_b), alphas)
  stacked_rest = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(alphas),) + jnp.shape(x)), rest)
  return {**stacked_rest, "params": params}


def repair(module: nn.Module, variables_a: PyTree, variables_b: PyTree, alpha, images, *,
           mask: Optional[PyTree] = None, chunk_examples: int = 256) -> PyTree:
  """The variables of the interpolated net at one alpha, REPAIRed (repair_path)."""
  validate.require(np.ndim(alpha) == 0, f"alpha must be a number, got shape {np.shape(alpha)}")
  path = repair_path(module, variables_a, variables_b, [alpha], images, mask=mask,
                     chunk_examples=chunk_examples, chunk_alphas=1)
  return execution_lib.take(path, 0)
