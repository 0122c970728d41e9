"""IDC, MTT and DATM: distilled sets their PyTorch code writes with torch.save.

IDC (snu-mllab/Efficient-Dataset-Condensation, condense.py, read back by test.py's
load_data_path): `torch.save([synset.data, synset.targets], '<save_dir>/data.pt')`.
data: float32 (N, C, H, W) in [0, 1] pixels (condense.py clamps it there; the
loader's transform_cifar / transform_mnist standardises it later, data.py), class-
sorted, ipc per class; targets: int64 (N,). The multi-formation factor is not
stored: test.py takes it as `-f`, and argument.py names the result folder
`..._factor{f}[_multi|_bound]..._ipc{ipc}`. Each stored image decodes (test.py
decode_zoom, decode_type 'single') into factor^2 crops upsampled bilinearly to
full size, which lmcjax's synthetic.decode_multiformation reproduces.

MTT (GeorgeCazenavette/mtt-distillation, distill.py): `logged_files/<dataset>/<run>/
images_best.pt` = torch.save(image_syn.cpu()), float32 (N, C, H, W), class-sorted,
in utils.get_dataset's space: standardised with CIFAR-10's mean/std, for CIFAR-100
too; or, with --zca, ZCA-whitened ([0, 1] pixels whitened by kornia's ZCAWhitening
fit on the training set), in which case `images_zca_<it>.pt` holds the un-whitened
[0, 1] pixels (import those with --image_space=pixel). `labels_best.pt`: int64 (N,).
distill.py does not save its learned lr syn_lr (only wandb logs it, Synthetic_LR):
pass it as --lr, or --lr_file for a fork that torch.saves it.

DATM (NUS-HPC-AI-Lab/DATM, distill/DATM.py): `logged_files/<dataset>/<ipc>/<model>/
<run>/Normal/{images,labels,lr}_best.pt`. Images as MTT's (utils/utils_baseline.py
get_dataset: the same statistics and ZCA); labels: float32 (N, classes) learned
logits, trained with a soft cross-entropy against their softmax; lr_best.pt: the
learned syn_lr, a 0-d float32 tensor.
"""
import os
import re

import numpy as np

from lmcjax import validate
from lmcjax.importers import common
from lmcjax.importers import torchfile

# utils.get_dataset of MTT and utils/utils_baseline.py of DATM: CIFAR-100 is
# standardised with CIFAR-10's statistics in both.
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
TRAJECTORY_STATS = {"cifar10": _CIFAR10_STATS, "cifar100": _CIFAR10_STATS}
IMAGE_SPACES = ("normalised", "pixel")


def _describe(value) -> str:
  if isinstance(value, np.ndarray):
    return f"a tensor of shape {value.shape}"
  if isinstance(value, (list, tuple)):
    return f"a {type(value).__name__} of {len(value)}"
  return type(value).__name__


def _idc_factor(inputs: common.Inputs, path: str) -> int:
  """--factor, else the `_factor{f}` of IDC's result folder name (argument.py)."""
  folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
  named = re.findall(r"_factor(\d+)(_multi|_bound)?", folder)
  validate.require(not any(kind for _, kind in named), (
      f"{path}: IDC's '{named[-1][1][1:] if named else ''}' decode is not lmcjax's; only "
      "decode_type 'single' (the default) is imported"))
  from_path = int(named[-1][0]) if named else 0
  validate.require(bool(inputs.factor or from_path), (
      f"{path}: IDC's data.pt does not store its multi-formation factor: pass --factor "
      "(2 for IDC on CIFAR, SVHN and MNIST, 1 for IDC-I)"))
  validate.require(not (inputs.factor and from_path) or inputs.factor == from_path,
                   f"--factor={inputs.factor} but {path}'s folder names factor {from_path}")
  factor = inputs.factor or from_path
  validate.require(factor >= 1, f"--factor must be >= 1, got {factor}")
  return factor


def read_idc(inputs: common.Inputs, spec: common.DatasetSpec) -> common.Imported:
  path = inputs.images
  stored = torchfile.load(path)
  validate.require(
      isinstance(stored, (list, tuple)) and len(stored) == 2
      and all(isinstance(v, np.ndarray) for v in stored),
      f"{path}: unknown layout: IDC's data.pt holds [images, labels], found {_describe(stored)}")
  images, raw_labels = stored
  factor = _idc_factor(inputs, path)
  pixels = common.nchw_to_nhwc(images, path)
  common.check_images(pixels, spec, path)
  h, w, _ = spec.image_shape
  # IDC pads a side that factor does not divide; lmcjax's decode crops it instead.
  validate.require(h % factor == 0 and w % factor == 0, (
      f"{path}: factor {factor} does not divide the {h}x{w} images, where IDC's decode "
      "pads and lmcjax's crops; only factors that divide the image size are imported"))
  labels, how = common.labels_of(raw_labels, len(pixels), spec, inputs.soft_labels, path)
  return common.Imported(common.standardise(pixels, spec), labels,
                         {"factor": factor, "source": {"image_space": "pixel", **how}})


def _learned_lr(inputs: common.Inputs) -> float:
  """MTT's / DATM's learned inner lr: --lr or the 0-d tensor of --lr_file; 0 if neither."""
  validate.require(not (inputs.lr and inputs.lr_file), "pass --lr or --lr_file, not both")
  lr = inputs.lr
  if inputs.lr_file:
    value = torchfile.tensor(inputs.lr_file, "the learned lr")
    validate.require(value.size == 1, f"{inputs.lr_file}: the learned lr is one number, got "
                     f"shape {value.shape}")
    lr = float(value.reshape(()))
  if lr or inputs.lr_file:
    validate.require(bool(np.isfinite(lr)) and lr > 0,
                     f"the learned lr must be a finite number > 0, got {lr}")
  return lr


def _read_trajectory(method: str, inputs: common.Inputs,
                     spec: common.DatasetSpec) -> common.Imported:
  space = inputs.image_space or "normalised"
  validate.choice("--image_space", space, IMAGE_SPACES)
  images = common.nchw_to_nhwc(torchfile.tensor(inputs.images, "images"), inputs.images)
  common.check_images(images, spec, inputs.images)
  if space == "normalised":
    mean, std = common.source_stats(
        TRAJECTORY_STATS, method, spec,
        "; pass --image_space=pixel with images in [0, 1] pixels (images_zca_<it>.pt)")
    images = common.unstandardise(images, mean, std)
  labels, how = common.labels_of(torchfile.tensor(inputs.labels, "labels"), len(images), spec,
                                 inputs.soft_labels, inputs.labels)
  meta = {"factor": 1, "source": {"image_space": space, **how}}
  lr = _learned_lr(inputs)
  if lr:
    meta["lr"] = lr
  return common.Imported(common.standardise(images, spec), labels, meta)


def read_mtt(inputs: common.Inputs, spec: common.DatasetSpec) -> common.Imported:
  return _read_trajectory("mtt", inputs, spec)


def read_datm(inputs: common.Inputs, spec: common.DatasetSpec) -> common.Imported:
  return _read_trajectory("datm", inputs, spec)


_SPACE = ("'normalised' (default: images_best.pt, standardised as MTT's utils.get_dataset "
          "does) or 'pixel' (images_zca_<it>.pt of a --zca run, [0, 1] pixels)")

IDC = common.Format(
    "idc", read_idc, required={"images": "IDC's data.pt"},
    optional={"factor": "the multi-formation factor (default: from the path's _factor<f>)",
              "soft_labels": common.SOFT_LABELS_HELP},
    source="snu-mllab/Efficient-Dataset-Condensation condense.py, test.py")
MTT = common.Format(
    "mtt", read_mtt, required={"images": "images_best.pt", "labels": "labels_best.pt"},
    optional={"lr": "the learned lr (wandb's Synthetic_LR)",
              "lr_file": "a 0-d tensor of the learned lr", "image_space": _SPACE,
              "soft_labels": common.SOFT_LABELS_HELP},
    source="GeorgeCazenavette/mtt-distillation distill.py, utils.py")
DATM = common.Format(
    "datm", read_datm,
    required={"images": "Normal/images_best.pt", "labels": "Normal/labels_best.pt"},
    optional={"lr_file": "Normal/lr_best.pt (the learned lr)", "lr": "the learned lr",
              "image_space": _SPACE, "soft_labels": common.SOFT_LABELS_HELP},
    source="NUS-HPC-AI-Lab/DATM distill/DATM.py, utils/utils_baseline.py")
