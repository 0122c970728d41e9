"""Fast offline distillation of MNIST-5k (4k train digits) at 10 images per class.

  python launch/main.py --config configs/distill_mnist5k.py --workdir runs/distill_dm
  python launch/main.py --config configs/distill_mnist5k.py --workdir runs/distill_dc --config.distill.method=dc
  (likewise method=idc | mtt)

ConvNet-3 with instance norm as in the papers, but width 32 instead of 128 so
that each method runs in minutes on 2 CPU cores. The evaluation trains 3 fresh
nets on the distilled set and on a random real subset of the same size.
"""
from configs import default
from configs.parts import distill as distill_part


def get_config():
  config = default.get_config()
  config.stages = ("distill",)
  config.distill = distill_part.get_section()
  d = config.distill
  d.method, d.ipc = "dm", 10
  d.model.name, d.model.width = "convnet", 32
  # Iterations sized for minutes on CPU (the papers run 1k-20k on a GPU).
  d.dm.iterations = 300
  # DC: 10 net updates of 10 SGD steps per fresh net (DC's ipc-10 schedule
  # has 50 steps; 10 keeps the unrolled step's compile time short on CPU).
  d.dc.update(dict(iterations=100, inner_steps=10, net_reset_every=10, batch_real=128))
  d.idc.update(dict(iterations=100, batch_real=128))
  # MTT: 4 experts over 6 epochs, starts in the first 4 epochs, 2-epoch targets.
  d.mtt.update(dict(iterations=100, syn_steps=10, expert_epochs=2, max_start_epoch=4))
  d.log_every = 10
  return config
