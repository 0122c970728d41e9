"""Synthetic (distilled) sets: the npz file format, validation and IDC decoding.

A file holds `images` (float32 NHWC, normalised with the real dataset's
statistics, as trained on), `labels` (int32) and `meta_json` (a 0-d unicode
array with method, ipc, dataset, mean, std, factor, model, iterations). It is
read with allow_pickle=False.
"""
import json
import os
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lmcjax import data
from lmcjax import logs
from lmcjax import validate
from lmcjax import workdir as workdir_lib

REQUIRED_META = ("method", "ipc", "dataset", "mean", "std", "factor")


def save(path: str, images, labels, meta: Dict[str, Any]) -> None:
  """Writes a synthetic set atomically."""
  missing = [k for k in REQUIRED_META if k not in meta]
  validate.require(not missing, f"synthetic-set metadata lacks {missing}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  logs.write_npz(path, images=np.asarray(images, np.float32), labels=np.asarray(labels, np.int32),
                 meta_json=np.array(json.dumps(meta, sort_keys=True)))


def load(path: str) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
  """Reads (images, labels, meta) with no pickles and checks internal consistency."""
  arrays = data.read_npz(path, ("images", "labels", "meta_json"), "distilled set")
  images, labels = arrays["images"], arrays["labels"]
  try:
    meta = json.loads(str(arrays["meta_json"]))
  except ValueError as e:
    raise validate.InputError(f"{path}: meta_json is not JSON ({e})") from e
  validate.require(images.ndim == 4, f"{path}: images must be NHWC, got shape {images.shape}")
  validate.require(labels.shape == (images.shape[0],),
                   f"{path}: labels shape {labels.shape} does not match {images.shape[0]} images")
  return images.astype(np.float32), labels.astype(np.int32), meta


def check_compatible(path: str, images, labels, meta, dataset) -> None:
  """One-line errors when a synthetic set does not fit the real dataset."""
  factor = int(meta.get("factor", 1))
  validate.require(tuple(images.shape[1:]) == tuple(dataset.image_shape),
                   f"{path}: image shape {tuple(images.shape[1:])} != dataset "
                   f"{dataset.name} image shape {tuple(dataset.image_shape)}")
  bad = labels[(labels < 0) | (labels >= dataset.num_classes)]
  validate.require(bad.size == 0, f"{path}: label {bad[:1].tolist()} outside "
                   f"[0, {dataset.num_classes}) of {dataset.name}")
  present = np.unique(labels)
  validate.require(present.size == dataset.num_classes,
                   f"{path}: has {present.size} classes, {dataset.name} has {dataset.num_classes}")
  for key, want in (("mean", dataset.mean), ("std", dataset.std)):
    got = tuple(meta.get(key, ()))
    validate.require(len(got) == len(want) and np.allclose(got, want, atol=1e-3),
                     f"{path}: normalisation {key}={got} != {dataset.name}'s {tuple(want)}")
  validate.require(factor >= 1, f"{path}: factor must be >= 1, got {factor}")


def decode_multiformation(images: jnp.ndarray, labels: jnp.ndarray,
                          factor: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """IDC multi-formation: each stored image holds factor x factor crops, each
  upsampled back to full size, so N stored images give N * factor^2 images."""
  if factor == 1:
    return images, labels
  n, h, w, c = images.shape
  ch, cw = h // factor, w // factor
  crops = images[:, :ch * factor, :cw * factor].reshape(n, factor, ch, factor, cw, c)
  crops = crops.transpose(0, 1, 3, 2, 4, 5).reshape(n * factor * factor, ch, cw, c)
  full = jax.image.resize(crops, (crops.shape[0], h, w, c), method="bilinear")
  return full, jnp.repeat(labels, factor * factor)


def stage_path(workdir: str, override: str = "") -> str:
  """The set the imp and analysis stages read: `override` (their distilled_path
  option) or the one the distill stage wrote."""
  return override or workdir_lib.distilled_set(workdir)


def load_checked(path: str, dataset) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
  """The stored set, without pickles, checked against the real dataset."""
  images, labels, meta = load(path)
  check_compatible(path, images, labels, meta, dataset)
  return images, labels, meta


def load_decoded(path: str, dataset) -> Tuple[jnp.ndarray, jnp.ndarray, Dict[str, Any]]:
  """(images, labels, meta) as trained on: checked, IDC-decoded device arrays."""
  images, labels, meta = load_checked(path, dataset)
  images, labels = decode_multiformation(jnp.asarray(images), jnp.asarray(labels),
                                         int(meta.get("factor", 1)))
  return images, labels, meta
