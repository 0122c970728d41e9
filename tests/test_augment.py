"""Augmentation: determinism per key, siamese equality, shapes, CutMix labels."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import augment

KEY = jax.random.PRNGKey(3)


def _batch(n=6, size=16, channels=3, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, size, size, channels))


@pytest.mark.parametrize("op", augment.DSA_OPS)
def test_each_dsa_op_is_deterministic_per_key_and_keeps_shape(op):
  x = _batch()
  fn = jax.jit(lambda k, x: augment.dsa(k, x, op))
  a, b = fn(KEY, x), fn(KEY, x)
  chex.assert_trees_all_equal(a, b)
  assert a.shape == x.shape
  assert not np.array_equal(np.asarray(fn(jax.random.PRNGKey(4), x)), np.asarray(a)) or op == "flip"


def _rounding_atol(x, coordinate_ulps=2, taps=4):
  """How far float32 rounding lets two programs that transform x alike differ.

  Batches of 6 and of 2 compile to different programs: given identical
  thetas, XLA:CPU rounds the warp's source coordinates (a 3-term dot product
  per pixel, in [-1.3, 1.3]) 1 ulp (eps) apart on an AMD EPYC, and other
  CPUs may reorder other sums.
  A coordinate error of eps moves a bilinear tap by eps * size / 2 pixels,
  which moves the output by at most that times the largest step between
  neighbouring pixels (<= 2 max|x|) along each of the 2 axes; summing the
  taps adds about one ulp of max|x| each. The colour op's per-image means
  are off by a few ulps of max|x| at most, well inside this.
  """
  size, big = max(x.shape[1:3]), float(jnp.abs(x).max())
  eps = float(jnp.finfo(x.dtype).eps)
  return coordinate_ulps * eps * (size / 2) * 2 * (2 * big) + taps * eps * big


@pytest.mark.parametrize("op", augment.DSA_OPS)
def test_siamese_applies_the_same_transform_to_batches_of_any_size(op):
  real = _batch(6)
  synthetic = real[:2]
  out_real = augment.dsa(KEY, real, op, siamese=True)
  out_syn = augment.dsa(KEY, synthetic, op, siamese=True)
  # About 3e-5 here; a transform drawn apart (another angle, shift, box)
  # moves pixels by O(1).
  np.testing.assert_allclose(out_real[:2], out_syn, rtol=0, atol=_rounding_atol(real))


def test_non_siamese_draws_per_image_parameters():
  x = jnp.broadcast_to(_batch(1), (8, 16, 16, 3))  # identical images
  out = augment.dsa(KEY, x, "rotate", siamese=False)
  assert not np.allclose(out[0], out[1])


def test_flip_twice_is_identity_and_crop_by_zero_is_identity():
  x = _batch()
  np.testing.assert_array_equal(augment.flip(KEY, augment.flip(KEY, x)), x)
  np.testing.assert_allclose(augment.crop(KEY, x, pad_ratio=0.0), x, atol=1e-6)


def test_crop_is_an_integer_shift_with_zero_fill():
  x = _batch(1, size=8)
  out = augment.crop(KEY, x, pad_ratio=0.25)
  # Every output pixel is either 0 or exactly some input pixel.
  values = set(np.round(np.asarray(x).ravel(), 5)) | {0.0}
  assert set(np.round(np.asarray(out).ravel(), 5)) <= values


def test_dsa_all_mode_and_crop_flip_run_under_jit():
  x = _batch()
  out = jax.jit(lambda k, x: augment.dsa(k, x, mode="all"))(KEY, x)
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  assert jax.jit(augment.crop_flip)(KEY, x).shape == x.shape


def test_cutmix_labels_match_pasted_area():
  x = jnp.stack([jnp.full((8, 8, 1), float(i)) for i in range(4)])
  y = jax.nn.one_hot(jnp.arange(4), 4)
  for seed in range(5):
    mixed_x, mixed_y = augment.cutmix(jax.random.PRNGKey(seed), x, y, prob=1.0)
    np.testing.assert_allclose(mixed_y.sum(-1), 1.0, rtol=1e-6)
    for i in range(4):
      own_fraction = float(jnp.mean(mixed_x[i] == float(i)))
      np.testing.assert_allclose(mixed_y[i, i], own_fraction, atol=1e-6)


def test_cutmix_prob_zero_is_identity():
  x, y = _batch(4), jax.nn.one_hot(jnp.arange(4), 4)
  mx, my = augment.cutmix(KEY, x, y, prob=0.0)
  np.testing.assert_array_equal(mx, x)
  np.testing.assert_array_equal(my, y)
