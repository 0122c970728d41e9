"""Which axes of which leaves share a hidden-unit permutation, per model.

A net's function is unchanged when the units of a hidden layer are reordered
together with everything indexed by them: the layer's kernel output axis and
bias, the per-channel scale, bias and running statistics of the norm after
it, and the next layer's kernel input axis. A `PermutationStructure` lists
those axes for every permutation of a net.

It comes from the model registry. `permutation="sequential"` derives it from
the module tree: the Conv/Dense/norm layers are traced in call order on an
abstract input, each hidden layer's outputs are one permutation, and each
layer's input carries the permutation of the layer called before it (the
classifier's outputs are never permuted). A model whose layers do not feed
each other in call order (residual additions) declares its wiring with a
function (module, variables) -> PermutationStructure, usually
`from_wiring(...)` (lmcjax/models/resnet.py).
"""
import dataclasses
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from flax.core import FrozenDict
import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmcjax import validate
from lmcjax.models import layers as model_layers
from lmcjax.models import registry

LeafPath = Tuple[str, ...]  # ('params', 'BasicBlock_0', 'Conv_0', 'kernel')
ModulePath = Tuple[str, ...]  # ('BasicBlock_0', 'Conv_0')
# Side of the abstract input the structure is traced on: large enough for any
# stack of poolings; nothing is computed (jax.eval_shape), and channels, not
# spatial sizes, make the structure.
_TRACE_SIDE = 512


class PermutedAxis(NamedTuple):
  """Axis `axis` of a leaf is permuted by `perm`. With tiles > 1 the axis is a
  row-major flatten of (tiles, size): a dense kernel's H*W*C input axis after
  a conv, whose C part alone is permuted, the same way in every tile."""
  axis: int
  perm: str
  tiles: int = 1


@dataclasses.dataclass(frozen=True)
class PermutationStructure:
  """A net's permutations. Hashable, so jitted functions take it as static.

  Attributes:
    model: the registered model's name (for messages).
    sizes: permutation name -> number of units, in call order.
    axes: leaf path ('params' or 'batch_stats', module names..., leaf name)
      -> the axes of that leaf permuted, and by which permutation.
    activations: permutation name -> module paths whose outputs, after ReLU,
      observe its units (activation matching pools over them).
  """
  model: str
  sizes: Mapping[str, int]
  axes: Mapping[LeafPath, Tuple[PermutedAxis, ...]]
  activations: Mapping[str, Tuple[ModulePath, ...]]


@dataclasses.dataclass(frozen=True)
class _Layer:
  """One traced Conv/Dense ('linear') or per-channel norm ('norm') call."""
  path: ModulePath
  kind: str
  leaves: Mapping[LeafPath, Tuple[int, ...]]  # own leaves, collection first
  in_size: int  # kernel input features, or the norm's channels
  out_size: int
  flattened_input: bool  # a 2-D input flattened from a larger activation


def structure_of(module: nn.Module, variables) -> PermutationStructure:
  """The permutation structure of a built, registered model.

  Args:
    module: the flax module (models.create).
    variables: {'params': ..., 'batch_stats': ...} (batch_stats may be absent
      or empty); only their shapes are read.
  Returns:
    A PermutationStructure. An undeclared or unsupported structure is one line
    naming the model.
  """
  registration = registry.registration_of(module)
  validate.require(isinstance(variables, Mapping) and "params" in variables,
                   f"model {registration.name!r}: variables must be a dict with 'params'")
  if registration.permutation == "sequential":
    return _sequential(module, variables, registration.name)
  try:
    declared = registration.permutation(module, variables)
  except NotImplementedError as e:
    raise validate.InputError(f"model {registration.name!r} does not declare its permutation "
                              f"structure ({e})") from None
  validate.require(isinstance(declared, PermutationStructure),
                   f"model {registration.name!r}: its permutation function returned "
                   f"{type(declared).__name__}, not a PermutationStructure")
  return declared


def from_wiring(module: nn.Module, variables, wiring: Mapping[str, Tuple[Optional[str],
                                                                          Optional[str]]],
                activations: Mapping[str, Tuple[str, ...]]) -> PermutationStructure:
  """A structure from each Conv/Dense layer's (input perm, output perm).

  Args:
    module, variables: as for structure_of.
    wiring: every Conv/Dense layer's path ('BasicBlock_0/Conv_0') -> (the
      permutation of its input units, that of its output units); None where
      they are not permuted (the net's input, the classifier's outputs).
    activations: permutation -> module paths whose outputs observe its units.
      A Conv/Dense path stands for its output after the norm that follows it.
  Norms take the permutation of the Conv/Dense layer called just before them.
  """
  name = registry.registration_of(module).name
  traced = _trace(module, variables, name)
  linear = [layer for layer in traced if layer.kind == "linear"]
  wiring = {_path(key): value for key, value in wiring.items()}
  _require_same_layers(name, {layer.path for layer in linear}, set(wiring))
  sizes = _sizes(name, linear, wiring)
  axes: Dict[LeafPath, List[PermutedAxis]] = {}
  norm_after: Dict[ModulePath, ModulePath] = {}
  last: Optional[_Layer] = None
  for layer in traced:
    if layer.kind == "linear":
      _linear_axes(name, layer, wiring[layer.path], sizes, axes)
      last = layer
    elif last is not None and wiring[last.path][1] is not None:
      perm = wiring[last.path][1]
      validate.require(layer.in_size == sizes[perm],
                       f"model {name!r}: norm {_show(layer.path)} has {layer.in_size} channels "
                       f"after {_show(last.path)}'s {sizes[perm]}")
      axes.update({leaf: [PermutedAxis(0, perm)] for leaf in layer.leaves})
      norm_after[last.path] = layer.path
  points = {perm: tuple(norm_after.get(_path(p), _path(p)) for p in paths)
            for perm, paths in activations.items()}
  missing = [perm for perm in sizes if not points.get(perm)]
  validate.require(not missing, f"model {name!r}: no activations observe permutation "
                                f"{missing[:1]}; declare them")
  return PermutationStructure(
      model=name, sizes=FrozenDict(sizes),
      axes=FrozenDict({leaf: tuple(v) for leaf, v in axes.items()}),
      activations=FrozenDict({perm: points[perm] for perm in sizes}))


def _sequential(module: nn.Module, variables, name: str) -> PermutationStructure:
  """Each hidden Conv/Dense layer's outputs are one permutation, read by the
  next layer called; the classifier (the last layer) is never permuted."""
  linear = [layer.path for layer in _trace(module, variables, name) if layer.kind == "linear"]
  validate.require(bool(linear), f"model {name!r} has no Conv/Dense layer to permute")
  classifier = registry.info(module).classifier
  validate.require(linear[-1] == (classifier,),
                   f"model {name!r}: its classifier {classifier!r} is not its last layer "
                   f"({_show(linear[-1])}); declare its permutation")
  wiring, current = {}, None
  for path in linear:
    out = None if path == linear[-1] else _show(path)
    wiring[_show(path)] = (current, out)
    current = out
  return from_wiring(module, variables, wiring,
                     {_show(path): (_show(path),) for path in linear[:-1]})


def _trace(module: nn.Module, variables, name: str) -> List[_Layer]:
  """The Conv/Dense/norm calls of one abstract forward pass, in call order.

  Only shapes matter, so the input is a dummy (_TRACE_SIDE^2 x 3) and a
  layer whose input features differ from its kernel (the first layer; a dense
  layer after a flatten at the dummy's spatial size) gets zeros of its
  kernel's width instead: the trace records what the layer was given.
  """
  traced: List[_Layer] = []

  def record(next_fun, args, kwargs, context):
    own = _own_leaves(context.module) if context.method_name == "__call__" else {}
    if not own:  # containers and parameter-free modules
      return next_fun(*args, **kwargs)
    x, path = args[0] if args else None, tuple(context.module.path)
    validate.require(all(layer.path != path for layer in traced),
                     f"model {name!r}: layer {_show(path)} is called twice (shared weights), "
                     "which a permutation structure does not support")
    kind = _kind(context.module, x, own) if hasattr(x, "shape") else None
    validate.require(kind is not None,
                     f"model {name!r}: layer {_show(path)} ({type(context.module).__name__}) is "
                     "not supported by permutation structures; declare its permutation")
    if kind == "linear":
      kernel = own[("params", "kernel")]
      layer = _Layer(path, kind, _leaf_paths(path, own), kernel[-2], kernel[-1],
                     flattened_input=x.ndim == 2 and x.shape[-1] != kernel[-2])
      if x.shape[-1] != kernel[-2]:
        x = jnp.zeros(x.shape[:-1] + (kernel[-2],), x.dtype)
    else:
      layer = _Layer(path, kind, _leaf_paths(path, own), x.shape[-1], x.shape[-1], False)
    traced.append(layer)
    return next_fun(x, *args[1:], **kwargs)

  example = jnp.zeros((1, _TRACE_SIDE, _TRACE_SIDE, 3), jnp.float32)
  try:
    with nn.intercept_methods(record):
      jax.eval_shape(lambda v: module.apply(v, example, train=False), dict(variables))
  except flax.errors.FlaxError as e:  # variables of another model, missing batch_stats
    raise validate.InputError(f"variables do not fit model {name!r}: "
                              f"{str(e).splitlines()[0]}") from None
  return traced


def _own_leaves(module: nn.Module) -> Dict[Tuple[str, str], Tuple[int, ...]]:
  """(collection, leaf name) -> shape of the arrays a module holds itself."""
  return {(collection, leaf): tuple(value.shape)
          for collection, tree in module.variables.items() if collection != "intermediates"
          for leaf, value in tree.items() if not isinstance(value, Mapping)}


def _kind(module: nn.Module, x, own) -> Optional[str]:
  """'linear', 'norm', or None for a layer whose units cannot be permuted
  one by one (grouped convolutions, groups of channels normalised together)."""
  channels = x.shape[-1]
  if isinstance(module, (nn.Dense, nn.Conv)):
    grouped = getattr(module, "feature_group_count", 1) != 1
    return None if grouped or set(leaf for _, leaf in own) - {"kernel", "bias"} else "linear"
  per_channel = all(shape == (channels,) for shape in own.values())
  if isinstance(module, nn.BatchNorm):
    return "norm" if per_channel and module.axis in (-1, x.ndim - 1) else None
  if isinstance(module, nn.GroupNorm):
    groups = module.num_groups or channels // module.group_size
    return "norm" if per_channel and groups in (1, channels) else None
  if isinstance(module, model_layers.InstanceNorm):
    return "norm" if per_channel else None
  return None


def _linear_axes(name, layer, wired, sizes, axes) -> None:
  """A Conv/Dense kernel's input and output axes, and its bias."""
  perm_in, perm_out = wired
  kernel = ("params",) + layer.path + ("kernel",)
  ndim = len(layer.leaves[kernel])
  if perm_in is not None:
    validate.require(perm_in in sizes, f"model {name!r}: {_show(layer.path)} reads permutation "
                                       f"{perm_in!r}, which no layer produces")
    axes.setdefault(kernel, []).append(
        PermutedAxis(ndim - 2, perm_in, _tiles(name, layer, sizes[perm_in])))
  if perm_out is not None:
    axes.setdefault(kernel, []).append(PermutedAxis(ndim - 1, perm_out))
    bias = ("params",) + layer.path + ("bias",)
    if bias in layer.leaves:
      axes[bias] = [PermutedAxis(0, perm_out)]


def _tiles(name: str, layer: _Layer, units: int) -> int:
  """How many copies of `units` a kernel's input axis holds: 1, or H*W after
  a flatten of (H, W, units), channels innermost (NHWC, row-major)."""
  if layer.in_size == units:
    return 1
  validate.require(layer.flattened_input and layer.in_size % units == 0,
                   f"model {name!r}: {_show(layer.path)} takes {layer.in_size} inputs, which is "
                   f"not a flatten of the {units} units before it")
  return layer.in_size // units


def _sizes(name: str, linear: List[_Layer], wiring) -> Dict[str, int]:
  """Permutation -> units, from the layers that produce it (which must agree)."""
  sizes: Dict[str, int] = {}
  for layer in linear:
    perm = wiring[layer.path][1]
    if perm is not None:
      validate.require(sizes.setdefault(perm, layer.out_size) == layer.out_size,
                       f"model {name!r}: {_show(layer.path)} has {layer.out_size} outputs, "
                       f"permutation {perm!r} has {sizes[perm]} units")
  return sizes


def _require_same_layers(name: str, traced, declared) -> None:
  """The wiring names exactly the traced Conv/Dense layers."""
  for paths, problem in ((traced - declared, "is missing from its permutation wiring"),
                         (declared - traced, "is named by its permutation wiring but not called")):
    validate.require(not paths, f"model {name!r}: layer {_show(min(paths or [()]))} {problem}")


def _leaf_paths(path: ModulePath, own) -> Dict[LeafPath, Tuple[int, ...]]:
  return {(collection,) + path + (leaf,): shape for (collection, leaf), shape in own.items()}


def _path(name: str) -> ModulePath:
  return tuple(name.split("/")) if isinstance(name, str) else tuple(name)


def _show(path: ModulePath) -> str:
  return "/".join(path)
