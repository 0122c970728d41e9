"""The model registry: each model is registered once, with what it is.

A registration carries everything the rest of lmcjax needs to know about a
model, so that no other module names a model class or infers a property from a
naming pattern:

- its builder and config fields with their defaults (config.model holds
  exactly these fields, so a field that only another model reads cannot be set
  by mistake and silently ignored);
- its normalisation kind, from which follows whether it keeps running
  statistics (BatchNorm's `batch_stats`);
- whether its layers are piecewise linear in each weight (ReLU, linear or max
  pooling), from which, with its norm, follows whether its GGN diagonal is its
  Hessian diagonal (`ggn_is_hessian_diagonal`);
- its classifier head, by name (pruning scopes and distribution matching);
- its permutation structure: `"sequential"` where it follows from the module
  tree, or a function that declares it (residual streams share one).

Properties that depend on a config field (ConvNet's norm) are functions of the
built module, so they are read off the object every caller holds.
"""
import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import flax.linen as nn
import ml_collections

from lmcjax import validate

NORMS = ("instance", "batch", "layer", "none")
# A property is a value or a function of the built module.
Property = Union[Any, Callable[[nn.Module], Any]]


@dataclasses.dataclass(frozen=True)
class Registration:
  """What a model is. Every field but `check` must be given.

  Attributes:
    name: config.model.name.
    build: (num_classes, **fields) -> the flax module.
    defaults: its config fields beyond `name`, with their defaults.
    norm: one of NORMS, or module -> one of NORMS.
    piecewise_linear: whether, norm aside, the logits are piecewise linear in
      each single weight (ReLU, linear or max pooling).
    classifier: the top-level params key of the classifier head, or module -> it.
    permutation: "sequential" (derived from the module tree: each layer reads
      the units of the layer called before it), or a function (module,
      variables) -> lmcjax.connectivity.structure.PermutationStructure
      declaring which axes of which leaves share a hidden-unit permutation
      (raising NotImplementedError where it is not declared).
    check: (cfg, section) -> None, one-line errors for bad field values.
  """
  name: str
  build: Callable[..., nn.Module]
  defaults: Mapping[str, Any]
  norm: Property
  piecewise_linear: bool
  classifier: Property
  permutation: Union[str, Callable[..., Any]]
  check: Optional[Callable[[Any, str], None]] = None
  model_class: type = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """A built module's properties, read off its registration."""
  norm: str
  keeps_running_stats: bool
  classifier: str
  ggn_is_hessian_diagonal: bool
  curvature_reason: str


_BY_NAME: Dict[str, Registration] = {}
_BY_CLASS: Dict[type, Registration] = {}


def register(model_class: type, registration: Registration) -> Registration:
  """Adds a model. A missing property, a duplicate name or a class of another
  registration with other properties is one line."""
  name = registration.name
  for field in dataclasses.fields(Registration):
    if field.name not in ("check", "model_class"):
      validate.require(getattr(registration, field.name) is not None,
                       f"model {name!r} is registered without its {field.name!r} property")
  validate.require(name not in _BY_NAME, f"model {name!r} is registered twice")
  validate.require(isinstance(registration.norm, str) and registration.norm in NORMS
                   or callable(registration.norm),
                   f"model {name!r}: norm {registration.norm!r} is not one of {NORMS} "
                   "or a function of the module")
  validate.require(registration.permutation == "sequential" or callable(registration.permutation),
                   f"model {name!r}: permutation must be 'sequential' or a function declaring it")
  registration = dataclasses.replace(registration, model_class=model_class)
  _BY_NAME[name] = registration
  # Several names may build one class (mlp and lenet300): their properties are
  # functions of the module, so any of them describes it.
  _BY_CLASS.setdefault(model_class, registration)
  return registration


def unregister(name: str) -> None:
  """Removes a model (tests that register a toy model clean up with it)."""
  registration = _BY_NAME.pop(name)
  if _BY_CLASS.get(registration.model_class) is registration:
    del _BY_CLASS[registration.model_class]


def names() -> Tuple[str, ...]:
  return tuple(_BY_NAME)


def get(name: str, section: str = "model") -> Registration:
  """The registration of config.model.name; an unknown name is one line."""
  validate.choice(f"{section}.name", name, names())
  return _BY_NAME[name]


def _resolve(prop: Property, module: nn.Module):
  return prop(module) if callable(prop) else prop


def registration_of(module: nn.Module) -> Registration:
  """The registration of a built module; an unregistered class is one line."""
  registration = _BY_CLASS.get(type(module))
  validate.require(registration is not None,
                   f"{type(module).__name__} is not a registered lmcjax model "
                   "(lmcjax.models.register)")
  return registration


def info(module: nn.Module) -> ModelInfo:
  """Every property of a built module, from its registration."""
  registration = registration_of(module)
  norm = _resolve(registration.norm, module)
  exact, reason = _curvature(type(module).__name__, norm, registration.piecewise_linear)
  return ModelInfo(norm=norm, keeps_running_stats=norm == "batch",
                   classifier=_resolve(registration.classifier, module),
                   ggn_is_hessian_diagonal=exact, curvature_reason=reason)


def _curvature(name: str, norm: str, piecewise_linear: bool) -> Tuple[bool, str]:
  """Whether diag(GGN) is the exact diagonal of the eval-mode loss's Hessian, and why.

  H = GGN + sum_c (dL/df_c) d2f_c. When the logits are piecewise linear in
  each single weight (ReLU, linear or max pooling, eval-mode BatchNorm, which
  is a fixed affine map), d2f_c/dw_i^2 vanishes almost everywhere, so the
  residual's diagonal does. Instance and layer norm divide by statistics of
  the example itself, so a weight before them enters the logits nonlinearly.
  """
  if not piecewise_linear:
    return False, f"{name} is registered with layers that are not piecewise linear"
  if norm in ("instance", "layer"):
    return False, (f"{name} with {norm} norm normalises by each example's own statistics, "
                   "so its weights enter the logits nonlinearly")
  bn = " and eval-mode BatchNorm (a fixed affine map)" if norm == "batch" else ""
  return True, f"{name}: ReLU, linear or max pooling{bn}; piecewise linear in each weight"


def defaults(name: str) -> Dict[str, Any]:
  """config.model fields of a model and their defaults."""
  return dict(get(name).defaults)


def check_config(cfg, section: str = "model") -> None:
  """One line naming the bad field or value, before any compute."""
  registration = get(cfg.name, section)
  expected, given = set(registration.defaults), set(cfg.keys()) - {"name"}
  fields = ", ".join(registration.defaults) or "none"
  if given - expected:
    raise validate.InputError(f"{section}.{sorted(given - expected)[0]} is not a field of model "
                              f"{cfg.name!r} (its fields: {fields})")
  if expected - given:
    raise validate.InputError(
        f"{section} for {cfg.name!r} lacks {', '.join(sorted(expected - given))}: build it with "
        f"configs/parts/model.py get({cfg.name!r}), e.g. --config=configs/default.py:{cfg.name}")
  if registration.check is not None:
    registration.check(cfg, section)


def create(cfg, num_classes: int) -> nn.Module:
  """Builds the model named by config.model."""
  check_config(cfg)
  fields = {k: v for k, v in cfg.items() if k != "name"}
  return get(cfg.name).build(num_classes, **fields)


def info_for_config(cfg) -> ModelInfo:
  """Properties of the model a config.model would build (building a flax
  module is a dataclass construction: no parameters are made)."""
  return info(create(cfg, num_classes=2))


def config(name: str, **overrides) -> ml_collections.ConfigDict:
  """config.model for `name` with its defaults, updated by overrides."""
  if name not in _BY_NAME:  # check_config gives the one-line error
    return ml_collections.ConfigDict(dict(name=name, **overrides))
  return ml_collections.ConfigDict(dict(name=name, **dict(get(name).defaults, **overrides)))
