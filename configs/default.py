"""Default experiment: the paper's comparison, offline, on real MNIST-5k digits.

Distils MNIST-5k (DM, 10 images per class), finds LeNet-300-100 masks by IMP
with real, distilled and random sources, trains SGD-noise branches of the dense
net and of each source's sparsest mask, measures barriers, a landscape plane
and the Hessian diagonal, and writes report.md. Minutes on 2 CPU cores.

  python launch/main.py --config configs/default.py --workdir runs/default

Another network: --config=configs/default.py:convnet (its defaults: configs/parts/model.py).
Overrides: --config.train.epochs=3 --config.seeds.init=1 --config.stages="('train',)"
"""
import ml_collections

from lmcjax.configs.parts import analysis as analysis_part
from lmcjax.configs.parts import augment as augment_part
from lmcjax.configs.parts import distill as distill_part
from lmcjax.configs.parts import imp as imp_part
from lmcjax.configs.parts import model as model_part
from lmcjax.configs.parts import parallel as parallel_part
from lmcjax.configs.parts import sweep as sweep_part
from lmcjax.configs.parts import train as train_part


def get_config(model: str = "lenet300") -> ml_collections.ConfigDict:
  """The default experiment; `model` is the config file's argument, e.g.
  --config=configs/default.py:convnet."""
  config = ml_collections.ConfigDict()
  config.stages = ("distill", "train", "imp", "analysis", "report")
  # Three independent seeds: SGD-noise experiments vary data order and
  # augmentation while the init stays fixed.
  config.seeds = ml_collections.ConfigDict(dict(init=0, data_order=0, augment=0))
  config.data = ml_collections.ConfigDict(dict(
      # mnist5k | digits | mnist | fashion_mnist | cifar10 | cifar100 | svhn_cropped | npz
      name="mnist5k",
      data_dir="",  # tfds data_dir; '' means $TFDS_DATA_DIR or ~/tensorflow_datasets
      download=False,  # never touch the network unless asked
      npz_path="",
      # Stratified, seeded subsets of a tfds or npz dataset's splits (0 = all),
      # e.g. 5000 / 1000 CIFAR-10 images for a CPU study.
      train_subset=0,
      test_subset=0,
      subset_seed=0,  # part of the data's definition, not an SGD-noise seed
  ))
  # mlp | lenet300 | convnet | resnet20 | resnet10 | resnet18 | vgg16 | alexnet,
  # with only that model's fields (configs/parts/model.py).
  config.model = model_part.get(model)
  config.train = train_part.train_spec()
  config.prune = ml_collections.ConfigDict(dict(
      # all_kernels (paper, output layer included) | hidden_kernels | conv_kernels
      scope="all_kernels",
  ))
  config.distill = distill_part.get_section()
  # The default's whole pipeline must fit in 5 minutes on 2 CPU cores:
  # evaluating the distilled set and its random-subset baseline (3 nets each)
  # for 120 instead of 300 epochs saves ~1 minute; both use the same protocol.
  config.distill.eval.spec.epochs = 120
  # DM's gain over its real init grows with iterations (MNIST-5k, ConvNet-3
  # w32, 300-epoch eval: 91.7% init, 94.5% at 200, 95.8% at 600); 400 costs
  # ~50 s on 2 cores.
  config.distill.dm.iterations = 400
  config.imp = imp_part.get_section()
  config.analysis = analysis_part.get_section()
  config.parallel = parallel_part.get_section()
  config.sweep = sweep_part.get_section()
  # No augmentation of real digits (LeNet on 4k digits reaches ~97% without
  # it), DSA without flip for distillation: digits are not mirror-invariant.
  augment_part.apply(config, "mnist5k")
  config.eval_batch_size = 1000
  config.log_every_steps = 100
  config.checkpoint_every_steps = 0
  return config
