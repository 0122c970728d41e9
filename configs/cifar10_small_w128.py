"""configs/cifar10_small.py on an accelerator: ConvNet-3 width 128, the paper's width.

  python launch/sweep.py --config configs/cifar10_small_w128.py --workdir runs/c10w128 --job_index I
  python launch/aggregate.py --workdir runs/c10w128

The same study with the paper's network, on the whole tfds CIFAR-10 (no
subsets), copies trained as one vmapped program and the full instability
curve. Branch execution 'auto' picks the vmapped scan on GPU/TPU.
"""
from lmcjax.configs import cifar10_small


def get_config():
  config = cifar10_small.get_config()
  config.data.train_subset, config.data.test_subset = 0, 0
  config.model.width = 128
  config.distill.model.width = 128
  config.distill.unroll = False  # unrolled scans only pay off on XLA:CPU
  config.distill.dm.iterations = 20_000  # DM's published schedule
  config.train.epochs = 30
  a = config.analysis
  a.rounds = (1, 3, 5, 7, 9)  # 20% to 87% sparse
  config.imp.rounds = 9
  a.chunk_alphas = 8
  # 32 grid points x 1,000 images of 32x32x128 activations made an ~90 GiB
  # program on an H100 (XLA's rematerialisation warning); 8 fits well.
  a.landscape.update(resolution=21, chunk_points=8)
  a.instability.rewind_epochs = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
  config.sweep.axes = (("seeds.init", (0, 1, 2, 3, 4)),)
  return config
