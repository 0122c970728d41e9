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


def eval_spec():
  """Training K fresh nets on the distilled set: the DC/DM evaluation protocol
  (SGD lr 0.01, momentum 0.9, weight decay 5e-4, DSA, lr x0.1 at half) with 300
  instead of 1000 epochs so CPU evaluation takes seconds."""
  spec = train_part.train_spec(epochs=300, batch_size=256, optimizer="sgd", lr=0.01, momentum=0.9,
                            weight_decay=5e-4, schedule="multistep", milestones=(0.5,), gamma=0.1)
  spec.augment.kind = "dsa"  # the strategy is per dataset: configs/parts/augment.py
  return spec


def gradient_matching(**overrides) -> ml_collections.ConfigDict:
  """DC/DSA values (Zhao et al.): SGD lr 0.1 momentum 0.5 on images, real
  batches of 256 per class, a fresh net every outer_loop=10 updates, trained
  for 50 SGD steps (lr 0.01) on the synthetic set between updates (ipc 10)."""
  cfg = ml_collections.ConfigDict(dict(
      iterations=200, optimizer="sgd", lr_images=0.1, momentum=0.5,
      batch_real=256,
      distance="dc",  # dc (layer-wise 1 - cosine) | mse
      net_reset_every=10,
      inner_steps=50, inner_data="synthetic",  # synthetic (DC) | real (IDC)
      batch_inner=256, lr_net=0.01,
      factor=1,
  ))
  cfg.update(overrides)
  return cfg


def get_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      method="dm",  # dc | idc | mtt | dm
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
      log_every=25,
      # An external distilled set (synthetic.py npz, e.g. converted IDC/MTT
      # tensors): validated against the dataset, evaluated, no distillation.
      load_path="",
      dc=gradient_matching(),
      # IDC (Kim et al.): multi-formation factor 2, MSE gradient matching, the
      # network trained on real data between updates.
      idc=gradient_matching(distance="mse", inner_data="real", factor=2, lr_images=0.005,
                            optimizer="adam", inner_steps=10, batch_inner=128),
      mtt=ml_collections.ConfigDict(dict(
          iterations=200, optimizer="sgd", lr_images=100.0, momentum=0.5,
          lr_lr=1e-2, lr_init=0.01,  # learnable inner lr, stored as log-lr
          syn_steps=20, expert_epochs=2, max_start_epoch=4,
          batch_syn=0,  # 0 = all synthetic images every inner step
          remat=False,
          num_experts=4, lr_teacher=0.01, batch_teacher=256,
          expert_dir="",  # '' = DIR/distill/experts (reused when present)
      )),
      # DM (Zhao & Bilen): SGD lr 1 momentum 0.5, real batches of 256 per class.
      dm=ml_collections.ConfigDict(dict(
          iterations=200, optimizer="sgd", lr_images=1.0, momentum=0.5, batch_real=256)),
      # vmap_seeds: train the K nets as one vmapped program (accelerators);
      # XLA:CPU turns a vmapped conv into a slow grouped conv, so CPU runs
      # train them one by one (same keys, same results).
      # baseline: random real subsets of the same size, a new one per seed.
      # initial: also evaluate the set before distillation (what the method added).
      # learned_lr: MTT sets train with their learned inner lr, as in MTT's protocol.
      eval=ml_collections.ConfigDict(dict(num_seeds=3, baseline=True, initial=False,
                                          learned_lr=True, vmap_seeds=False, spec=eval_spec())),
  ))
