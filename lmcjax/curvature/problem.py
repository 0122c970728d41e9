"""The loss whose curvature is studied: a model at a point, on fixed examples.

Every curvature function takes a LossProblem first, instead of the five
arrays (model, params, batch_stats, images, labels) plus the example batch
size and the mask that each call used to be handed separately.
"""
import dataclasses
from typing import Any, Optional

import jax

from lmcjax import masks
from lmcjax import validate

PyTree = Any


@dataclasses.dataclass(frozen=True, eq=False)
class LossProblem:
  """The eval-mode cross-entropy of `model` at `params`, averaged over (images, labels).

  batch_size_examples: examples per chunk of the loss (memory, not the math).
  mask: 0/1 tree like params, or None. Pruned coordinates are held at zero,
  so the Hessian studied is the sparse subnetwork's: its rows and columns
  there are excluded, not estimated.
  Construction checks the input (a one-line validate.InputError); it reads
  only shapes, so a problem may also be built from tracers inside a jit.
  eq=False: fields are arrays, compared by identity.
  """
  model: Any
  params: PyTree
  batch_stats: PyTree
  images: Any
  labels: Any
  batch_size_examples: int = 1000
  mask: Optional[PyTree] = None

  def __post_init__(self):
    validate.positive("batch_size_examples", self.batch_size_examples)
    validate.require(self.images.shape[0] > 0, "cannot compute a Hessian on an empty split")
    validate.require(self.labels.shape[:1] == self.images.shape[:1],
                     f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
    if self.mask is not None:
      masks.check_matches(self.mask, self.params)

  @property
  def num_examples(self) -> int:
    return int(self.images.shape[0])

  def operands(self):
    """(params, batch_stats, images, labels): the array arguments of the jitted programs."""
    return self.params, self.batch_stats, self.images, self.labels

  def with_mask(self, mask: Optional[PyTree]) -> "LossProblem":
    return dataclasses.replace(self, mask=mask)


def loss_batches(key, images, labels, batch_size_examples: int, num_batches: int):
  """The examples the loss averages over: num_batches seeded batches (0 = all).

  A seeded permutation, not the stored order, because a split may be sorted
  by class.
  """
  validate.positive("loss_batches batch_size_examples", batch_size_examples)
  validate.non_negative("loss_batches num_batches", num_batches)
  n = int(images.shape[0])
  validate.require(n > 0, "cannot compute a Hessian on an empty split")
  count = n if num_batches == 0 else min(n, batch_size_examples * num_batches)
  idx = jax.random.permutation(key, n)[:count]
  return images[idx], labels[idx]
