"""MTT on CIFAR-10 with the published hyperparameters (Cazenavette et al. 2022).

  python launch/main.py --config configs/distill_mtt_cifar10.py:10 --workdir runs/mtt_c10_ipc10

The argument after ':' is ipc (1, 10 or 50; default 10). Needs CIFAR-10
prepared for tfds (launch/prepare_data.py) and an accelerator. Published:
ConvNet-3 width 128 instance norm, syn_steps 50/30/30, expert_epochs 2,
max_start_epoch 2/20/40, lr_img 1e3/1e3/1e2 (SGD, momentum 0.5), lr_teacher
0.01, every synthetic image in each inner step, 5000 iterations, 100 experts.
Two departures: the inner lr is learned as a log-lr with Adam (distill.mtt.lr_lr;
MTT's SGD on the raw lr needs a per-ipc lr_lr of 1e-7/1e-5/1e-5), and there is
no ZCA whitening (images are channel-standardised). The distilled set is
evaluated with its learned lr (distill.eval.learned_lr), as MTT does.
"""
from lmcjax.configs import default
from lmcjax.configs.parts import distill as distill_part
from lmcjax.configs.parts import model as model_part

# ipc -> (syn_steps, max_start_epoch, lr_images, batch_syn)
PUBLISHED = {1: (50, 2, 1000.0, 0), 10: (30, 20, 1000.0, 0), 50: (30, 40, 100.0, 0)}


def get_config(ipc: str = "10"):
  ipc = int(ipc)
  syn_steps, max_start, lr_images, batch_syn = PUBLISHED[ipc]
  config = default.get_config()
  config.stages = ("distill",)
  config.data.name = "cifar10"
  config.distill = distill_part.get_section()
  d = config.distill
  d.method, d.ipc = "mtt", ipc
  d.model = model_part.get("convnet", width=128, norm="instance")
  d.augment.dsa_strategy = "color_crop_cutout_flip_scale_rotate"
  d.unroll = False  # accelerator: rolled scans keep compile time and memory flat
  d.mtt.update(dict(iterations=5000, optimizer="sgd", lr_images=lr_images, momentum=0.5,
                    syn_steps=syn_steps, expert_epochs=2, max_start_epoch=max_start,
                    batch_syn=batch_syn, remat=True, num_experts=100, lr_teacher=0.01,
                    batch_teacher=256, lr_init=0.01))
  d.eval.num_seeds = 5  # vmapped on an accelerator (distill.execution='auto')
  d.eval.spec.epochs = 1000
  d.eval.spec.augment.dsa_strategy = "color_crop_cutout_flip_scale_rotate"
  return config
