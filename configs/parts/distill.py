"""config.distill: dataset distillation (lmcjax/distill), the 'distill' stage.

Defaults are the cheap pipeline default: DM at 10 images per class on a
narrow ConvNet-3 (instance norm), a few hundred outer iterations, on MNIST-5k
well under a minute on 2 CPU cores. Each method keeps its own tuned values in
its own subsection, so --config.distill.method=dc|idc|mtt|dm switches method
without retuning. Presets: configs/distill_*.py.
"""
import ml_collections

from lmcjax.configs.parts import model as model_part
from lmcjax.configs.parts import train as train_part
from lmcjax.distill import registry


def eval_spec():
  """Training K fresh nets on the distilled set: the DC/DM evaluation protocol
  (SGD lr 0.01, momentum 0.9, weight decay 5e-4, DSA, lr x0.1 at half) with 300
  instead of 1000 epochs so CPU evaluation takes seconds."""
  spec = train_part.train_spec(epochs=300, batch_size=256, optimizer="sgd", lr=0.01, momentum=0.9,
                            weight_decay=5e-4, schedule="multistep", milestones=(0.5,), gamma=0.1)
  spec.augment.kind = "dsa"  # the strategy is per dataset: configs/parts/augment.py
  return spec


def get_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      method="dm",  # any registered method: dc | idc | mtt | dm (lmcjax/distill/registry.py)
      ipc=10,  # stored images per class
      init="real",  # real (seeded samples of each class) | noise
      seed=0,  # every draw of the stage: init, batches, nets, experts, evaluation
      # The network distilled with; name '' means config.model. A norm with
      # running statistics (BatchNorm) is refused: inner loops are pure SGD.
      # ConvNet-3 of the papers has width 128; 32 keeps CPU runs fast.
      model=model_part.get("convnet", width=32),
      # Siamese DSA on real and synthetic batches; dsa_strategy is per
      # dataset (configs/parts/augment.py).
      augment=train_part.augment_spec("dsa"),
      # Unroll the per-class loop and inner SGD scans: XLA:CPU runs convs in a
      # while loop ~15x slower (measured); accelerator presets set False.
      unroll=True,
      # How independent nets run (MTT's experts, the evaluation's K seeds):
      # 'auto' vmaps them on accelerators and for dense nets, and trains a conv
      # net's one by one on XLA:CPU, where vmap turns each conv into a slow
      # grouped conv (same keys, same results); or 'vmapped' | 'sequential'.
      execution="auto",
      log_every=25,
      # An external distilled set (synthetic.py npz, e.g. converted IDC/MTT
      # tensors): validated against the dataset, evaluated, no distillation.
      load_path="",
      # Each method's own section, with its tuned values, as its module
      # registers it (lmcjax/distill/{gradient,distribution,trajectory}_matching.py):
      # DC/DSA, IDC (multi-formation factor 2, MSE gradient matching, the
      # network trained on real data between updates), MTT, DM.
      **{name: registry.get(name).section() for name in registry.names()},
      # baseline: random real subsets of the same size, a new one per seed.
      # initial: also evaluate the set before distillation (what the method added).
      # learned_lr: MTT sets train with their learned inner lr, as in MTT's protocol.
      eval=ml_collections.ConfigDict(dict(num_seeds=3, baseline=True, initial=False,
                                          learned_lr=True, spec=eval_spec())),
  ))
