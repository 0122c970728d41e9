"""Pure, key-driven, jittable augmentation on normalised NHWC float batches.

DSA (Zhao & Bilen 2021) with the hyperparameters of its reference code, a
siamese mode that draws one set of parameters per call so that the same key
transforms a real and a synthetic batch identically (distillation matches the
two through the same transform), CIFAR crop+flip, and CutMix.
"""
import functools
from typing import Tuple

import jax
import jax.numpy as jnp

from lmcjax import validate

# DSA's ParamDiffAug defaults.
DSA_SCALE = 1.2
DSA_ROTATE_DEG = 15.0
DSA_CROP_PAD = 0.125
DSA_CUTOUT = 0.5
DSA_BRIGHTNESS = 1.0
DSA_SATURATION = 2.0
DSA_CONTRAST = 0.5
DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
KINDS = ("none", "crop_flip", "dsa")


def _uniform(key, batch, siamese, minval=0.0, maxval=1.0):
  """Per-image uniforms, or one shared draw broadcast over the batch."""
  draw = jax.random.uniform(key, (1 if siamese else batch,), minval=minval, maxval=maxval)
  return jnp.broadcast_to(draw, (batch,))


def affine_warp(images: jnp.ndarray, theta: jnp.ndarray) -> jnp.ndarray:
  """Bilinear warp of NHWC images by per-image 2x3 affine maps, zero fill.

  theta maps output coordinates to input coordinates in [-1, 1]^2 (x, y),
  as torch's affine_grid(align_corners=False) does in DSA.
  """
  _, h, w, _ = images.shape
  ys = (2 * jnp.arange(h) + 1) / h - 1
  xs = (2 * jnp.arange(w) + 1) / w - 1
  gy, gx = jnp.meshgrid(ys, xs, indexing="ij")
  grid = jnp.stack([gx, gy, jnp.ones_like(gx)], axis=-1)  # h, w, 3

  def warp_one(image, th):
    src = grid @ th.T  # h, w, 2 in (x, y)
    col = ((src[..., 0] + 1) * w - 1) / 2
    row = ((src[..., 1] + 1) * h - 1) / 2
    warp_channel = lambda ch: jax.scipy.ndimage.map_coordinates(
        ch, [row, col], order=1, mode="constant", cval=0.0)
    return jax.vmap(warp_channel, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(warp_one)(images, theta)


def _translation_theta(tx, ty):
  one, zero = jnp.ones_like(tx), jnp.zeros_like(tx)
  return jnp.stack([jnp.stack([one, zero, tx], -1), jnp.stack([zero, one, ty], -1)], -2)


def flip(key, x, siamese=False, prob=0.5):
  do = _uniform(key, x.shape[0], siamese) < prob
  return jnp.where(do[:, None, None, None], x[:, :, ::-1, :], x)


def crop(key, x, siamese=False, pad_ratio=DSA_CROP_PAD):
  """Random integer translation by up to pad_ratio of the size, zero padded."""
  b, h, w, _ = x.shape
  kx, ky = jax.random.split(key)
  sx = jnp.round(_uniform(kx, b, siamese, -1, 1) * pad_ratio * w)
  sy = jnp.round(_uniform(ky, b, siamese, -1, 1) * pad_ratio * h)
  return affine_warp(x, _translation_theta(2 * sx / w, 2 * sy / h))


def scale(key, x, siamese=False, ratio=DSA_SCALE):
  b = x.shape[0]
  kx, ky = jax.random.split(key)
  sx = _uniform(kx, b, siamese, 1 / ratio, ratio)
  sy = _uniform(ky, b, siamese, 1 / ratio, ratio)
  zero = jnp.zeros_like(sx)
  theta = jnp.stack([jnp.stack([sx, zero, zero], -1), jnp.stack([zero, sy, zero], -1)], -2)
  return affine_warp(x, theta)


def rotate(key, x, siamese=False, degrees=DSA_ROTATE_DEG):
  b = x.shape[0]
  angle = _uniform(key, b, siamese, -1, 1) * degrees * jnp.pi / 180
  cos, sin, zero = jnp.cos(angle), jnp.sin(angle), jnp.zeros_like(angle)
  theta = jnp.stack([jnp.stack([cos, sin, zero], -1), jnp.stack([-sin, cos, zero], -1)], -2)
  return affine_warp(x, theta)


def color(key, x, siamese=False):
  """DSA colour: brightness, then saturation, then contrast."""
  b = x.shape[0]
  kb, ks, kc = jax.random.split(key, 3)
  per_image = lambda v: v[:, None, None, None]
  x = x + per_image(_uniform(kb, b, siamese, -0.5, 0.5) * DSA_BRIGHTNESS)
  gray = x.mean(axis=-1, keepdims=True)
  x = (x - gray) * per_image(_uniform(ks, b, siamese) * DSA_SATURATION) + gray
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) * per_image(_uniform(kc, b, siamese) + DSA_CONTRAST) + mean


def cutout(key, x, siamese=False, ratio=DSA_CUTOUT):
  """Zeroes a square of side ratio*size at a random centre."""
  b, h, w, _ = x.shape
  kx, ky = jax.random.split(key)
  cy = jnp.floor(_uniform(ky, b, siamese) * h)[:, None, None]
  cx = jnp.floor(_uniform(kx, b, siamese) * w)[:, None, None]
  half_h, half_w = int(h * ratio + 0.5) // 2, int(w * ratio + 0.5) // 2
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = (jnp.abs(rows - cy) <= half_h) & (jnp.abs(cols - cx) <= half_w)
  return jnp.where(inside[..., None], 0.0, x)


_DSA_FNS = {"color": color, "crop": crop, "cutout": cutout, "flip": flip,
            "scale": scale, "rotate": rotate}


def parse_strategy(strategy: str) -> Tuple[str, ...]:
  ops = tuple(s for s in strategy.split("_") if s)
  for op in ops:
    validate.choice("augment.dsa_strategy op", op, DSA_OPS)
  validate.require(bool(ops), f"augment.dsa_strategy={strategy!r} names no operation")
  return ops


def dsa(key, x, strategy="color_crop_cutout_flip_scale_rotate", siamese=False,
        mode="single"):
  """Differentiable siamese augmentation.

  mode='single' applies one operation drawn uniformly from the strategy per
  call (DSA's default 'S' mode); mode='all' applies them all in order ('M').
  With siamese=True, calling twice with the same key applies the identical
  transform to two batches of any sizes.
  """
  ops = parse_strategy(strategy)
  choose_key, op_key = jax.random.split(key)
  if mode == "all":
    for i, op in enumerate(ops):
      x = _DSA_FNS[op](jax.random.fold_in(op_key, i), x, siamese)
    return x
  validate.choice("augment.dsa_mode", mode, ("single", "all"))
  branches = [functools.partial(_DSA_FNS[op], siamese=siamese) for op in ops]
  index = jax.random.randint(choose_key, (), 0, len(ops))
  return jax.lax.switch(index, branches, op_key, x)


def crop_flip(key, x, pad=4):
  """CIFAR-style random crop after `pad`-pixel zero padding, then a horizontal flip."""
  kc, kf = jax.random.split(key)
  return flip(kf, crop(kc, x, pad_ratio=pad / x.shape[2]))


def cutmix(key, x, y_soft, prob=0.5, beta=1.0):
  """CutMix (Yun et al. 2019) with probability `prob` per batch.

  Returns images and soft labels mixed by the pasted box's area fraction.
  """
  b, h, w, _ = x.shape
  k_apply, k_lam, k_perm, k_cx, k_cy = jax.random.split(key, 5)
  lam = jax.random.beta(k_lam, beta, beta)
  cut = jnp.sqrt(1.0 - lam)
  cy = jax.random.randint(k_cy, (), 0, h)
  cx = jax.random.randint(k_cx, (), 0, w)
  half_h, half_w = (cut * h / 2).astype(jnp.int32), (cut * w / 2).astype(jnp.int32)
  y0, y1 = jnp.clip(cy - half_h, 0, h), jnp.clip(cy + half_h, 0, h)
  x0, x1 = jnp.clip(cx - half_w, 0, w), jnp.clip(cx + half_w, 0, w)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  perm = jax.random.permutation(k_perm, b)
  mixed = jnp.where(box[None, :, :, None], x[perm], x)
  kept = 1.0 - box.mean()
  mixed_y = kept * y_soft + (1.0 - kept) * y_soft[perm]
  apply = jax.random.uniform(k_apply) < prob
  return jnp.where(apply, mixed, x), jnp.where(apply, mixed_y, y_soft)


def check_config(cfg) -> None:
  validate.choice("augment.kind", cfg.kind, KINDS)
  if cfg.kind == "dsa":
    parse_strategy(cfg.dsa_strategy)
    validate.choice("augment.dsa_mode", cfg.dsa_mode, ("single", "all"))
  validate.require(0.0 <= cfg.cutmix_prob <= 1.0,
                   f"augment.cutmix_prob must be in [0, 1], got {cfg.cutmix_prob!r}")
  validate.positive("augment.cutmix_beta", cfg.cutmix_beta)


def augment_images(key, x, cfg, siamese=False):
  """Applies config.augment's image transform (not CutMix) to a batch."""
  if cfg.kind == "dsa":
    return dsa(key, x, cfg.dsa_strategy, siamese=siamese, mode=cfg.dsa_mode)
  if cfg.kind == "crop_flip":
    return crop_flip(key, x)
  return x
