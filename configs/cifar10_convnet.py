"""The paper's CIFAR-10 setting with ConvNet-3 (width 128, instance norm).

  python launch/prepare_data.py --dataset=cifar10          # once, with network
  python launch/main.py --config configs/cifar10_convnet.py --workdir runs/c10_convnet

Needs the [tfds] extra (TensorFlow reads the prepared files).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "cifar10"
  config.model.update(name="convnet", depth=3, width=128, norm="instance", pooling="avg")
  # Real-data training as in the paper: SGD lr 0.01, momentum 0.9, weight decay
  # 5e-4, batch 64, x0.2 at 2/3 and 5/6 of training, DSA + CutMix.
  config.train.update(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64,
                      schedule="multistep", milestones=(2 / 3, 5 / 6), gamma=0.2,
                      epochs=60)  # the paper does not pin the epoch count; 60 converges
  config.train.augment.update(kind="dsa", cutmix_prob=0.5, cutmix_beta=1.0)
  config.log_every_steps = 200
  config.checkpoint_every_steps = 2000
  return config
