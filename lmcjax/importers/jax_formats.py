"""FRePo and RCIG: distilled sets their JAX code saves as flax checkpoints.

FRePo (yongchaoz/FRePo): a flax checkpoint of its ProtoState (lib/training/utils.py
save_checkpoint; lib/datadistillation/frepo.py ProtoHolder), read as the README's
"Load checkpoint" does: `state['params']['x_proto']`, `['y_proto']`. x_proto: float32
(N, H, W, C), NHWC already, class-sorted (frepo.py init_proto), in the space of
lib/dataset/dataloader.py get_dataset: standardised with its data_stats, then, for
every dataset but MNIST and Fashion-MNIST, ZCA-whitened (preprocess_type
'normalize_zca', zca_reg 0.1) by the transform saved in
`<zca_path>/<dataset>_normalize_zca.npz` (whitening_transform,
rev_whitening_transform, zca_mean). y_proto: float32 (N, classes), learned targets
of an MSE loss, initialised as centred one-hot rows.

RCIG (yolky/RCIG): eval.py evaluates `restore_checkpoint(path, None)['ema_average']
['x_proto' | 'y_proto']`; the published distilled_images_final/0/cifar10_1/
checkpoint_15000 holds step, params {log_temp, x_proto, y_proto}, opt_state,
train_it, ema_hidden and ema_average. Its dataloader.py is FRePo's (same data_stats,
same ZCA file), so both are imported the same way from their own state key.

To undo the ZCA, lmcjax applies FRePo's ops.py preprocess_op_rev: flat images times
rev_whitening_transform plus zca_mean, then x * std + mean on [0, 1] pixels.
"""
import numpy as np

from lmcjax import data
from lmcjax import validate
from lmcjax.importers import common
from lmcjax.importers import flaxfile

# lib/dataset/dataloader.py data_stats (RCIG's dataloader.py has the same table).
FREPO_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# dataloader.py: preprocess_type 'standard' for these, 'normalize_zca' for the rest.
_NO_ZCA = ("mnist", "mnist5k", "fashion_mnist")
_ZCA_KEYS = ("rev_whitening_transform", "zca_mean")


def unwhiten(images: np.ndarray, zca_path: str) -> np.ndarray:
  """FRePo's ZCA-whitened images back to standardised ones (ops.py preprocess_op_rev)."""
  arrays = data.read_npz(zca_path, _ZCA_KEYS, "ZCA file")
  rev, zca_mean = arrays["rev_whitening_transform"], arrays["zca_mean"]
  dim = int(np.prod(images.shape[1:]))
  validate.require(rev.shape == (dim, dim) and zca_mean.shape == (dim,), (
      f"{zca_path}: rev_whitening_transform {rev.shape} and zca_mean {zca_mean.shape} do not "
      f"fit {images.shape[1:]} images (need ({dim}, {dim}) and ({dim},)); block-wise ZCA "
      "(ImageNette, ImageWoof) is not imported"))
  flat = images.reshape(len(images), dim).astype(np.float64) @ rev.astype(np.float64)
  return (flat + zca_mean).reshape(images.shape).astype(np.float32)


def _read_proto(method: str, state_key: str, inputs: common.Inputs,
                spec: common.DatasetSpec) -> common.Imported:
  path = inputs.checkpoint
  state = flaxfile.load(path)
  proto = state.get(state_key)
  validate.require(isinstance(proto, dict) and {"x_proto", "y_proto"} <= set(proto), (
      f"{path}: unknown layout: {method} keeps its set in state['{state_key}']['x_proto' | "
      f"'y_proto'], this checkpoint holds {sorted(state)[:6]}"))
  images, raw_labels = np.asarray(proto["x_proto"]), np.asarray(proto["y_proto"])
  common.check_images(images, spec, path)
  mean, std = common.source_stats(FREPO_STATS, method, spec)
  whitened = spec.name not in _NO_ZCA
  validate.require(whitened or not inputs.zca, f"{method} does not ZCA-whiten {spec.name}: "
                   "drop --zca")
  validate.require(not whitened or bool(inputs.zca), (
      f"{method} ZCA-whitens {spec.name}: pass --zca=<zca_path>/{spec.name}_normalize_zca.npz, "
      "the file its dataloader.py wrote (zca_path defaults to data/zca)"))
  if whitened:
    images = unwhiten(images, inputs.zca)
  labels, how = common.labels_of(raw_labels, len(images), spec, inputs.soft_labels, path)
  space = "zca" if whitened else "standardised"
  return common.Imported(common.standardise(common.unstandardise(images, mean, std), spec),
                         labels, {"factor": 1, "source": {"image_space": space, **how,
                                                          "state_key": state_key}})


def read_frepo(inputs: common.Inputs, spec: common.DatasetSpec) -> common.Imported:
  return _read_proto("frepo", "params", inputs, spec)


def read_rcig(inputs: common.Inputs, spec: common.DatasetSpec) -> common.Imported:
  return _read_proto("rcig", "ema_average", inputs, spec)


_CHECKPOINT = "the flax checkpoint file checkpoint_<step> (or its directory)"
_ZCA = ("the whitening file <zca_path>/<dataset>_normalize_zca.npz (zca_path defaults to "
        "data/zca), for the datasets it whitens")

FREPO = common.Format(
    "frepo", read_frepo, required={"checkpoint": _CHECKPOINT},
    optional={"zca": _ZCA, "soft_labels": common.SOFT_LABELS_HELP},
    source="yongchaoz/FRePo README, lib/dataset/dataloader.py, lib/dataset/ops.py")
RCIG = common.Format(
    "rcig", read_rcig, required={"checkpoint": _CHECKPOINT},
    optional={"zca": _ZCA, "soft_labels": common.SOFT_LABELS_HELP},
    source="yolky/RCIG eval.py, dataloader.py, distill_dataset.py")
