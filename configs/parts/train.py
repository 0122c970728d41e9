"""config.train and every other training spec (IMP's distilled training,
branches, distillation's evaluation): one schema, one place.

Lives in parts/ so that the other parts can build specs without importing
configs/default.py, which imports them.
"""
import ml_collections


def augment_spec(kind: str = "none") -> ml_collections.ConfigDict:
  """How a batch is augmented; one schema for training and distillation."""
  return ml_collections.ConfigDict(dict(
      kind=kind,  # none | crop_flip | dsa (distillation: none | dsa, siamese)
      dsa_strategy="color_crop_cutout_flip_scale_rotate",
      dsa_mode="single",  # DSA's default: one op per batch
      cutmix_prob=0.0,  # training only
      cutmix_beta=1.0,
  ))


def train_spec(**overrides) -> ml_collections.ConfigDict:
  """One training run's hyperparameters; IMP, distillation and branches reuse it."""
  spec = ml_collections.ConfigDict(dict(
      epochs=15,
      batch_size=64,
      optimizer="sgd",
      lr=0.05,
      momentum=0.9,
      nesterov=False,
      weight_decay=5e-4,
      schedule="multistep",
      # Decay at 2/3 and 5/6 of training by 0.2, as in the paper's retraining.
      milestones=(2 / 3, 5 / 6),
      gamma=0.2,
      warmup_epochs=0.0,
      augment=augment_spec(),
  ))
  spec.update(overrides)
  return spec
