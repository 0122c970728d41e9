"""Data loading, validation and the offline datasets."""
import os
import time

import ml_collections
import numpy as np
import pytest

from lmcjax import data
from lmcjax import validate


def test_mnist5k_is_stratified_and_deterministic():
  a, b = data.load_mnist5k(), data.load_mnist5k()
  assert a.x_train.shape == (4000, 28, 28, 1) and a.x_test.shape == (1000, 28, 28, 1)
  assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(a.y_train), [400] * 10)
  np.testing.assert_array_equal(np.bincount(a.y_test), [100] * 10)
  np.testing.assert_array_equal(a.x_test, b.x_test)
  # No digit is in both splits.
  train_rows = {r.tobytes() for r in a.x_train.reshape(4000, -1)}
  assert not any(r.tobytes() in train_rows for r in a.x_test.reshape(1000, -1))


def test_digits_loads_as_uint8_images():
  d = data.load_digits()
  assert d.image_shape == (8, 8, 1) and d.num_classes == 10
  assert d.x_train.max() == 255 and len(d.x_train) + len(d.x_test) == 1797


def test_normalise_uses_channel_statistics():
  d = data.load_mnist5k()
  x = d.normalise(d.x_train)
  assert x.dtype == np.float32
  assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1.0) < 0.1


def _write_npz(tmp_path, **overrides):
  rng = np.random.default_rng(0)
  arrays = dict(x_train=rng.integers(0, 255, (20, 8, 8, 1), dtype=np.uint8),
                y_train=np.arange(20, dtype=np.int32) % 4,
                x_test=rng.integers(0, 255, (8, 8, 8, 1), dtype=np.uint8),
                y_test=np.arange(8, dtype=np.int32) % 4)
  arrays.update(overrides)
  path = os.path.join(tmp_path, "d.npz")
  np.savez(path, **arrays)
  return path


def test_npz_round_trip(tmp_path):
  d = data.load_npz(_write_npz(tmp_path))
  assert d.num_classes == 4 and d.image_shape == (8, 8, 1)


@pytest.mark.parametrize("overrides,match", [
    (dict(x_train=np.zeros((20, 8, 8), np.uint8)), "x_train must be NHWC"),
    (dict(x_train=np.zeros((20, 8, 8, 1), np.float32)), "x_train must be uint8"),
    (dict(y_train=np.arange(19, dtype=np.int32)), "y_train must be 1-D with 20 labels"),
    (dict(y_test=np.full(8, -1, np.int32)), r"y_test has label \[-1\]"),
    (dict(x_test=np.zeros((8, 9, 8, 1), np.uint8)), "image shape"),
])
def test_npz_validation_errors_name_the_bad_value(tmp_path, overrides, match):
  with pytest.raises(validate.InputError, match=match):
    data.load_npz(_write_npz(tmp_path, **overrides))


def test_npz_labels_out_of_declared_range(tmp_path):
  with pytest.raises(validate.InputError, match=r"label \[3\] outside \[0, 3\)"):
    data.load_npz(_write_npz(tmp_path), num_classes=3)


def test_npz_refuses_pickles(tmp_path):
  path = os.path.join(tmp_path, "p.npz")
  np.savez(path, x_train=np.array([object()], dtype=object), y_train=np.zeros(1),
           x_test=np.zeros(1), y_test=np.zeros(1))
  with pytest.raises(validate.InputError, match="not a plain-array npz"):
    data.load_npz(path)


def test_npz_missing_file_and_arrays(tmp_path):
  with pytest.raises(validate.InputError, match="npz file not found"):
    data.load_npz(os.path.join(tmp_path, "nope.npz"))
  path = os.path.join(tmp_path, "partial.npz")
  np.savez(path, x_train=np.zeros((1, 2, 2, 1), np.uint8))
  with pytest.raises(validate.InputError, match="missing arrays"):
    data.load_npz(path)


def _damaged(path, how):
  """A copy of `path` cut short or with one byte flipped, as a failed copy leaves it."""
  raw = open(path, "rb").read()
  raw = (raw[:len(raw) // 2] if how == "truncated"
         else raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:])
  out = f"{path}.{how}.npz"
  open(out, "wb").write(raw)
  return out


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty"])
def test_truncated_or_corrupt_npz_is_one_line(tmp_path, how):
  path = _write_npz(tmp_path)
  bad = _damaged(path, how) if how != "empty" else str(tmp_path / "empty.npz")
  if how == "empty":
    open(bad, "wb").close()
  with pytest.raises(validate.InputError, match="is truncated or corrupt") as e:
    data.load_npz(bad)
  assert bad in str(e.value) and "\n" not in str(e.value)


def test_labels_with_gaps_are_refused_unless_the_class_count_is_declared(tmp_path):
  gapped = dict(y_train=(np.arange(20, dtype=np.int32) % 10) * 5,
                y_test=(np.arange(8, dtype=np.int32) % 8) * 5)
  path = _write_npz(tmp_path, **gapped)
  with pytest.raises(validate.InputError, match=r"leave gaps .* read as 46 classes; relabel them "
                     r"0\.\.9, or declare .* config.data.num_classes = 46"):
    data.load_npz(path)
  assert data.load_npz(path, num_classes=46).num_classes == 46
  cfg = _data_cfg(name="npz", npz_path=path, num_classes=46)
  assert data.load(cfg).num_classes == 46
  with pytest.raises(validate.InputError, match="num_classes=10: declare it .* only for"):
    data.check_config(_data_cfg(name="digits", num_classes=10))


def test_unprepared_tfds_dataset_fails_fast_with_one_line(tmp_path):
  cfg = _data_cfg(name="cifar10", data_dir=str(tmp_path))
  start = time.perf_counter()
  with pytest.raises(validate.InputError) as err:
    data.load(cfg)
  assert time.perf_counter() - start < 5.0  # import included; the check itself is ms
  message = str(err.value)
  assert "cifar10" in message and str(tmp_path) in message and "prepare_data.py" in message
  assert "\n" not in message


def test_unknown_dataset():
  with pytest.raises(validate.InputError, match="data.name='imagenet42'"):
    data.load(_data_cfg(name="imagenet42"))


def _data_cfg(**kw):
  from lmcjax.configs import default  # pylint: disable=g-import-not-at-top
  cfg = default.get_config().data
  cfg.update(kw)
  return cfg


def test_subsets_are_stratified_seeded_and_checked(tmp_path):
  cfg = ml_collections.ConfigDict(dict(name="npz", npz_path=_write_npz(tmp_path), data_dir="",
                                       download=False, train_subset=8, test_subset=4,
                                       subset_seed=0))
  d = data.load(cfg)
  assert len(d.y_train) == 8 and np.bincount(d.y_train).tolist() == [2, 2, 2, 2]
  assert len(d.y_test) == 4 and np.bincount(d.y_test).tolist() == [1, 1, 1, 1]
  assert np.array_equal(data.load(cfg).x_train, d.x_train)  # seeded
  cfg.subset_seed = 1
  assert not np.array_equal(data.load(cfg).x_train, d.x_train)
  cfg.train_subset = 21
  with pytest.raises(validate.InputError,
                     match=r"data.train_subset=21 is larger than the split \(20"):
    data.load(cfg)


def test_subsets_of_a_fixed_split_are_refused():
  cfg = ml_collections.ConfigDict(dict(name="mnist5k", npz_path="", data_dir="", download=False,
                                       train_subset=100, test_subset=0, subset_seed=0))
  with pytest.raises(validate.InputError, match="data.train_subset=100 is not supported for "
                                                "data.name='mnist5k'"):
    data.check_config(cfg)
