"""config.imp: iterative magnitude pruning with rewinding (lmcjax/imp.py).

Defaults fit the default experiment (LeNet-300-100 on MNIST-5k, 2 CPU cores):
4 rounds reach 59% sparsity, and the real-data training of every round is
config.train, so the IMP stage costs about (sources x 5) short trainings.
"""
import ml_collections

from lmcjax.configs.parts import train as train_part


def distilled_train_spec() -> ml_collections.ConfigDict:
  """Training on the distilled set, as in the paper (SGD lr 0.01, momentum 0.9,
  weight decay 5e-4, batch 64, DSA + CutMix) but 300 epochs instead of 1000:
  on a 10-image-per-class MNIST set that is ~470 steps, enough to fit it, and
  keeps the default IMP stage within minutes on CPU."""
  spec = train_part.train_spec(epochs=300, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9,
                            weight_decay=5e-4, schedule="constant")
  spec.augment.kind = "dsa"  # the strategy is per dataset: configs/parts/augment.py
  spec.augment.cutmix_prob = 0.5
  return spec


def get_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      # Which masks to find, each with its own IMP run (declared in
      # lmcjax/mask_sources.py):
      #   real: classic IMP, every round trains on the real training set;
      #   distilled: every round trains on the distilled set (distilled_train);
      #   subset: every round trains on the real images the distilled set
      #     started from (distill.init='real'), exactly as 'distilled' trains:
      #     same distilled_train, seeds and decoding. It separates "few images"
      #     from "optimised images";
      #   combined: the first combined_distilled_rounds rounds on distilled data, then real;
      #   random: random masks with the real source's per-layer counts at each
      #     round when 'real' is also listed, otherwise global random pruning.
      # 'distilled' and 'subset' read the distill stage's output (synthetic.npz
      # and starting.npz beside it): list 'distill' before 'imp' in
      # config.stages, or set distilled_path ('subset': to a set saved with its
      # starting images).
      sources=("real", "random", "distilled"),
      rounds=4,  # masks 0..rounds; round k has sparsity 1 - 0.8^k (59% at 4)
      prune_fraction=0.2,  # of the remaining prunable weights, per round
      method="global",  # global | layerwise magnitude ranking
      # The rewind point: init (both 0), or step k / epoch e of the dense
      # real-data run of config.train (the 'train' stage's run: same seeds).
      rewind_step=0,
      rewind_epochs=0.0,
      # From a rewind point at step j of a T-step run: 'continue' trains the
      # remaining T - j steps with the schedule continued at j and a fresh
      # optimizer (Frankle et al. 2020, open_lth); 'restart' trains a whole
      # T-step run from theta_j. The two agree at j = 0.
      rewind_schedule="continue",
      # Real-data retraining of the distilled, combined and random sources
      # (the real source always trains on real data): 'all' rounds, only the
      # rounds the analysis stage reads ('analysed'), or 'none'.
      retrain_rounds="all",
      # True: every round restarts every variable from the rewind point:
      # prunable weights (times the mask), biases, norm scales and BatchNorm
      # statistics. False reproduces the seed paper's code, which rewound only
      # the prunable weights and carried the other parameters and BN
      # statistics over from the end of the previous round's training.
      rewind_non_prunable=True,
      distilled_path="",  # '' = the distill stage's DIR/distill/synthetic.npz
      combined_distilled_rounds=2,
      distilled_train=distilled_train_spec(),
      # Delete a round's mid-training checkpoints once its results are saved.
      keep_train_checkpoints=False,
  ))
