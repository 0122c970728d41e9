"""What the importers share: the named dataset, normalisation, layout and labels.

lmcjax's convention (lmcjax/synthetic.py, lmcjax/data.py): a distilled set is float32
NHWC, standardised per channel as (pixel - mean) / std on [0, 1] pixels with
data.NORMALISATION's statistics of the real dataset, i.e. exactly what a network
trains on. Each importer first brings its source to [0, 1] pixels with the source's
own preprocessing, then standardises with lmcjax's statistics. The two differ in
places (FRePo's CIFAR-10 std is (0.2470, 0.2435, 0.2616), MTT and DATM standardise
CIFAR-100 with CIFAR-10's statistics), so images are converted, never relabelled.
"""
import dataclasses
from typing import Any, Callable, Dict, Tuple

import numpy as np

from lmcjax import data
from lmcjax import validate

# Image shape and class count of each dataset lmcjax names, so that an import is
# checked without loading the dataset (tfds files may not be prepared where one imports).
_SHAPES = {
    "mnist": ((28, 28, 1), 10), "mnist5k": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10), "digits": ((8, 8, 1), 10),
    "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
    "svhn_cropped": ((32, 32, 3), 10),
}
# MNIST-5k is MNIST's own digits: a source's MNIST preprocessing applies to it.
_SOURCE_NAME = {"mnist5k": "mnist"}
SOFT_LABEL_MODES = ("position", "argmax")
SOFT_LABELS_HELP = "how soft labels become classes: 'position' (class-sorted, default) or 'argmax'"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """The fields of a data.Dataset that synthetic.check_compatible reads."""
  name: str
  image_shape: Tuple[int, int, int]
  num_classes: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]


def dataset_spec(name: str) -> DatasetSpec:
  """The named dataset's shape, classes and lmcjax normalisation."""
  validate.choice("--dataset", name, tuple(_SHAPES))
  shape, classes = _SHAPES[name]
  mean, std = data.NORMALISATION[name]
  return DatasetSpec(name, shape, classes, tuple(mean), tuple(std))


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What the command line names; '' / 0 means not given."""
  images: str = ""
  labels: str = ""
  lr_file: str = ""
  checkpoint: str = ""
  zca: str = ""
  lr: float = 0.0
  factor: int = 0
  image_space: str = ""
  soft_labels: str = ""  # '' = 'position'


@dataclasses.dataclass
class Imported:
  """A set in lmcjax's convention, and what its metadata adds (factor, lr, source)."""
  images: np.ndarray
  labels: np.ndarray
  meta: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Format:
  """A published format: how to read it and which Inputs it reads (field: what it is)."""
  name: str
  read: Callable[[Inputs, DatasetSpec], Imported]
  required: Dict[str, str]
  optional: Dict[str, str]
  source: str


def source_stats(table: Dict[str, Tuple], method: str, spec: DatasetSpec,
                 hint: str = "") -> Tuple[np.ndarray, np.ndarray]:
  """The (mean, std) a source standardised `spec`'s dataset with."""
  name = _SOURCE_NAME.get(spec.name, spec.name)
  validate.require(name in table, f"{method} standardises {sorted(table)}, not "
                   f"{spec.name}: its preprocessing of {spec.name} is unknown{hint}")
  mean, std = table[name]
  return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def nchw_to_nhwc(images: np.ndarray, path: str) -> np.ndarray:
  """torch's (N, C, H, W) as lmcjax's (N, H, W, C)."""
  validate.require(images.ndim == 4, f"{path}: unknown layout: images must be 4-D (N, C, H, W),"
                   f" got shape {images.shape}")
  return images.transpose(0, 2, 3, 1)


def unstandardise(images: np.ndarray, mean, std) -> np.ndarray:
  return images * np.asarray(std, np.float32) + np.asarray(mean, np.float32)


def standardise(pixels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
  """[0, 1] pixels as lmcjax trains on them."""
  out = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
  return out.astype(np.float32)


def check_images(images: np.ndarray, spec: DatasetSpec, path: str) -> None:
  """Float NHWC of the dataset's image shape, all finite."""
  validate.require(np.issubdtype(images.dtype, np.floating),
                   f"{path}: images must be floating point, got {images.dtype}")
  validate.require(images.ndim == 4 and tuple(images.shape[1:]) == spec.image_shape,
                   f"{path}: image shape {tuple(images.shape[1:])} != {spec.name}'s "
                   f"{spec.image_shape} (NHWC)")
  validate.require(bool(np.isfinite(images).all()), f"{path}: images hold NaN or inf")


def _check_class_count(labels: np.ndarray, spec: DatasetSpec, path: str) -> None:
  classes = int(labels.max()) + 1 if labels.size else 0
  validate.require(labels.size == 0 or labels.min() >= 0, f"{path}: negative label "
                   f"{int(labels.min())}")
  validate.require(classes <= spec.num_classes, f"{path}: labels name {classes} classes, "
                   f"{spec.name} has {spec.num_classes}")


def labels_of(raw: np.ndarray, num_images: int, spec: DatasetSpec, mode: str,
              path: str) -> Tuple[np.ndarray, Dict[str, Any]]:
  """Integer labels, and how they were read, from hard labels (N,) or soft ones (N, C).

  lmcjax trains on hard labels. A soft row (DATM's logits, FRePo's and RCIG's learned
  targets) becomes the class its image was distilled for: every one of these methods
  stores images class-sorted, ipc per class (mode 'position'), or, with 'argmax',
  the class its soft label scores highest. The metadata records how often the two agree.
  """
  mode = mode or "position"
  validate.choice("--soft_labels", mode, SOFT_LABEL_MODES)
  validate.require(raw.shape[:1] == (num_images,), f"{path}: {raw.shape[0] if raw.ndim else 0}"
                   f" labels for {num_images} images")
  if raw.ndim == 1:
    validate.require(np.issubdtype(raw.dtype, np.integer), f"{path}: 1-D labels must be "
                     f"integer class indices, got {raw.dtype}")
    _check_class_count(raw, spec, path)
    return raw.astype(np.int32), {"labels": "hard"}
  validate.require(raw.ndim == 2 and np.issubdtype(raw.dtype, np.floating), (
      f"{path}: unknown label layout {raw.shape} {raw.dtype}: expected class indices (N,) "
      "or soft labels (N, classes)"))
  validate.require(raw.shape[1] == spec.num_classes, f"{path}: soft labels have "
                   f"{raw.shape[1]} classes, {spec.name} has {spec.num_classes}")
  argmax = raw.argmax(axis=1).astype(np.int32)
  ipc, rest = divmod(num_images, spec.num_classes)
  validate.require(mode == "argmax" or rest == 0, (
      f"{path}: {num_images} images do not split into {spec.num_classes} classes of equal "
      "size, so their classes cannot be read from their positions; pass --soft_labels=argmax"))
  labels = argmax if mode == "argmax" else np.repeat(np.arange(spec.num_classes, dtype=np.int32),
                                                     ipc)
  position = np.arange(num_images) // max(ipc, 1)
  agree = float(np.mean(argmax == position)) if rest == 0 else None
  return labels, {"labels": f"soft -> {mode}", "soft_label_argmax_agrees_with_position": agree}


def per_class_count(labels: np.ndarray) -> int:
  """ipc as the distill stage counts it: the largest class's stored images."""
  return int(np.bincount(labels).max()) if labels.size else 0
