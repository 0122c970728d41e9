"""The distillation-method registry: each method registered once, with what it is.

A registration carries its builder, its config section (config.distill.NAME,
with its tuned defaults), the check of that section, its multi-formation factor
and its cost estimate, so the stage, configs/parts/distill.py and
bench/estimate_cost.py never branch on a method's name. A new method is one
module that calls `register` plus its import in lmcjax/distill/__init__.py.
"""
import dataclasses
from typing import Any, Callable, Dict, Tuple

import ml_collections

from lmcjax import validate


@dataclasses.dataclass(frozen=True)
class DistillMethod:
  """Attributes:
    name: config.distill.method.
    section: () -> its config section with defaults. Every section holds
      iterations, optimizer ('sgd' | 'adam'), lr_images and momentum, which the
      stage checks for every method.
    check: (section, 'distill.NAME') -> None: one-line errors for its own fields.
    build: (problem, section, key_fn, files_dir, log) -> (Method, outer
      optax transformation, extra learnable leaves beside 'images'). key_fn(*path)
      gives the method's named keys.
    factor: section -> multi-formation factor (IDC decodes each stored image
      into factor^2 training images); 1 for the others.
    train_examples: (section, num_classes, images_per_class, num_train) ->
      train-step-equivalent examples of the whole outer loop (cost estimate).
  """
  name: str
  section: Callable[[], ml_collections.ConfigDict]
  check: Callable[[Any, str], None]
  build: Callable[..., Tuple[Any, Any, Dict[str, Any]]]
  factor: Callable[[Any], int]
  train_examples: Callable[[Any, int, int, int], float]


_METHODS: Dict[str, DistillMethod] = {}


def register(method: DistillMethod) -> DistillMethod:
  """Adds a method; a missing property or a duplicate name is one line."""
  for field in dataclasses.fields(DistillMethod):
    validate.require(getattr(method, field.name) is not None,
                     f"distillation method {method.name!r} is registered without its "
                     f"{field.name!r} property")
  validate.require(method.name not in _METHODS,
                   f"distillation method {method.name!r} is registered twice")
  _METHODS[method.name] = method
  return method


def unregister(name: str) -> None:
  """Removes a method (tests that register a toy method clean up with it)."""
  del _METHODS[name]


def names() -> Tuple[str, ...]:
  return tuple(_METHODS)


def get(name: str) -> DistillMethod:
  """The registration of config.distill.method; an unknown name is one line."""
  validate.choice("distill.method", name, names())
  return _METHODS[name]
