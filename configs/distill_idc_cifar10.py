"""IDC on CIFAR-10 (Kim et al. 2022), the seed paper's distilled data.

  python launch/main.py --config configs/distill_idc_cifar10.py --workdir runs/idc_c10 --config.distill.ipc=10

ConvNet-3 instance norm width 128, multi-formation factor 2, MSE gradient
matching with DSA, the network trained on real data between updates (IDC's
default), real batches of 128 per class, 2000 iterations. Needs CIFAR-10
prepared for tfds and an accelerator.
"""
from configs import default
from configs.parts import distill as distill_part


def get_config():
  config = default.get_config()
  config.stages = ("distill",)
  config.data.name = "cifar10"
  config.distill = distill_part.get_section()
  d = config.distill
  d.method, d.ipc = "idc", 10
  d.model.name, d.model.width, d.model.norm = "convnet", 128, "instance"
  d.augment.strategy = "color_crop_cutout_flip_scale_rotate"
  d.unroll = False  # accelerator: rolled scans keep compile time flat
  d.idc.update(dict(iterations=2000, factor=2, distance="mse", inner_data="real",
                    batch_real=128, inner_steps=100, batch_inner=128, lr_net=0.01,
                    net_reset_every=100, optimizer="adam", lr_images=0.005))
  d.eval.num_seeds, d.eval.vmap_seeds = 5, True
  d.eval.spec.epochs = 1000
  d.eval.spec.augment.dsa_strategy = "color_crop_cutout_flip_scale_rotate"
  d.eval.spec.augment.cutmix_prob = 0.5  # IDC evaluates with CutMix
  return config
