"""Per-dataset augmentation defaults, the one place that sets them.

Real-data training (config.train, and so IMP retraining and branches) uses the
dataset's standard augmentation; distillation and every training on a
distilled set use DSA with the dataset's DSA strategy. Digits are not
mirror-invariant, so the MNIST family has no flip; natural images do.
"""
NO_FLIP_DSA = "color_crop_cutout_scale_rotate"
FLIP_DSA = "color_crop_cutout_flip_scale_rotate"

# dataset -> (real-data augmentation kind, DSA strategy)
DEFAULTS = {
    "mnist5k": ("none", NO_FLIP_DSA),
    "mnist": ("none", NO_FLIP_DSA),
    "fashion_mnist": ("none", NO_FLIP_DSA),
    "digits": ("none", NO_FLIP_DSA),
    "svhn_cropped": ("crop_flip", NO_FLIP_DSA),  # DSA's SVHN strategy: digits again
    "cifar10": ("crop_flip", FLIP_DSA),
    "cifar100": ("crop_flip", FLIP_DSA),
}


def apply(config, dataset: str) -> None:
  """Sets every augmentation field of config for `dataset` (a DEFAULTS key)."""
  real_kind, strategy = DEFAULTS[dataset]
  for real_spec in (config.train, config.analysis.branch_train):
    real_spec.augment.kind = real_kind
  config.distill.augment.dsa_strategy = strategy
  for distilled_spec in (config.distill.eval.spec, config.imp.distilled_train):
    distilled_spec.augment.kind = "dsa"
    distilled_spec.augment.dsa_strategy = strategy
