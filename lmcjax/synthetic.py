"""Synthetic (distilled) sets: the npz file format, validation and IDC decoding.

A file holds `images` (float32 NHWC, normalised with the real dataset's
statistics, as trained on), `labels` (int32) and `meta_json` (a 0-d unicode
array with method, ipc, dataset, mean, std, factor, model, iterations). It is
read with allow_pickle=False.

A distilled set may carry the images it started from: its meta's `starting`
names a file beside it in the same format (the distill stage writes
DIR/distill/starting.npz, its set before any optimisation step), which the
IMP source 'subset' trains on.
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
STARTING_FILE = "starting.npz"


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


def save_distilled(path: str, images, labels, meta: Dict[str, Any], starting=None) -> None:
  """Writes a distilled set and, when `starting` (its initial images) is given,
  STARTING_FILE beside it, first, so the set's `starting` always resolves."""
  meta = {k: v for k, v in meta.items() if k != "starting"}
  if starting is not None:
    start_meta = {**meta, "iterations": 0, "starting_of": os.path.basename(path)}
    start_meta.pop("lr", None)  # a learned lr belongs to the optimised set
    save(os.path.join(os.path.dirname(os.path.abspath(path)), STARTING_FILE), starting, labels,
         start_meta)
    meta["starting"] = STARTING_FILE
  save(path, images, labels, meta)


def starting_path(path: str) -> str:
  """The file of the images the distilled set at `path` started from (one line if none)."""
  _, _, meta = load(path)
  name = meta.get("starting")
  validate.require(bool(name), f"{path} carries no starting images (its meta names no "
                   "'starting' file: an external set, or one distilled before the distill "
                   "stage saved them; rerun the distill stage)")
  start = os.path.join(os.path.dirname(os.path.abspath(path)), name)
  validate.require(os.path.isfile(start), f"{path} names starting images {start!r}, "
                   "which do not exist")
  return start


def load_starting(path: str, dataset) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
  """The images the distilled set at `path` started from, checked against it and
  the dataset: same labels, same stored shape, same decoding, real images."""
  images, labels, meta = load_checked(path, dataset)
  start = starting_path(path)
  s_images, s_labels, s_meta = load_checked(start, dataset)
  validate.require(s_images.shape == images.shape and np.array_equal(s_labels, labels),
                   f"{start}: starting images {s_images.shape} do not match the distilled set "
                   f"{path} {images.shape} image for image (shape and labels)")
  validate.require(int(s_meta.get("factor", 1)) == int(meta.get("factor", 1)),
                   f"{start}: factor {s_meta.get('factor', 1)} != the distilled set's "
                   f"{meta.get('factor', 1)}")
  validate.require(s_meta.get("init", "real") == "real", f"{start}: the distilled set started "
                   f"from {s_meta.get('init')!r}, not from real images")
  return s_images, s_labels, s_meta


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


def decoded(images, labels, meta) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """A stored set as trained on: IDC-decoded device arrays."""
  return decode_multiformation(jnp.asarray(images), jnp.asarray(labels),
                               int(meta.get("factor", 1)))


def load_decoded(path: str, dataset) -> Tuple[jnp.ndarray, jnp.ndarray, Dict[str, Any]]:
  """(images, labels, meta) as trained on: checked, IDC-decoded device arrays."""
  images, labels, meta = load_checked(path, dataset)
  return (*decoded(images, labels, meta), meta)
