"""config.analysis: linear mode connectivity of IMP's subnetworks (lmcjax/analysis/).

For the dense net and each target mask, the stage trains num_branches copies
from IMP's rewind point that differ only in SGD noise, then measures every
pairwise interpolation barrier, a loss landscape plane, and the Hessian
diagonal of the first copy. Defaults fit LeNet-300-100 on MNIST-5k on 2 CPU
cores: about a minute per analysed model.

The top-level fields from num_alphas to bn_reset_batch_size are the
interpolation measure's; each sub-section but branch_train is the section of
the measure of that name (lmcjax/analysis/measures.py). A measure registered
outside lmcjax adds its own: analysis.SECTION = measures.default_section(NAME).
"""
import ml_collections

from lmcjax.analysis import measures
from lmcjax.configs.parts import train as train_part


def get_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      # Where the copies start: IMP's rewind point ('rewind', the paper),
      # the config's init ('init'), or step start_epoch of the dense run
      # ('epoch'). Each is a state of the dense run (lmcjax/dense.py), so none
      # needs the IMP stage. With imp.rewind_schedule='continue' copies from
      # step j train the remaining steps with the schedule continued at j
      # (Frankle et al. 2020; open_lth); 'restart' trains whole runs from it.
      start="rewind",
      start_epoch=0.0,
      # IMP rounds analysed for every source in imp.sources (round k has
      # sparsity 1 - 0.8^k), e.g. (1, 3, 5); () = the last round. Explicit
      # 'source:round' targets (e.g. 'real:4') replace them.
      rounds=(),
      targets=(),
      # Landscapes and the Hessian for 'all' analysed models, or only the
      # dense net and each source's sparsest analysed mask.
      detail_models="all",
      # How the copies train and how alphas, grid points, Hessian probes and
      # exact diagonal entries are evaluated: 'auto' = one jitted call per
      # copy/alpha/point/probe driven from Python for convnets on CPU (XLA:CPU
      # runs vmapped parameter copies as grouped convolutions and gradient
      # convolutions inside lax.scan/map with a naive kernel), one vmapped
      # program otherwise; or 'vmapped' | 'sequential' (execution.resolve).
      execution="auto",
      include_dense=True,
      num_branches=3,  # >= 3 for the three-point plane, >= 4 for the four-seed plane
      chunk_copies=4,  # copies per vmapped training program (memory bound)
      # True: copies train exactly like IMP's rounds (config.train); False:
      # with branch_train (then only from init or with a 'restart' schedule).
      reuse_config_train=True,
      branch_train=train_part.train_spec(),
      # Interpolation: 31 alphas from 0 to 1 as in the seed paper's plots.
      # alpha_min < 0 or alpha_max > 1 extrapolates (logged); barriers use [0, 1].
      num_alphas=31,
      alpha_min=0.0,
      alpha_max=1.0,
      chunk_alphas=8,  # models held at once per vmapped evaluation (execution 'vmapped')
      eval_splits=("test", "train"),  # any of train | test | distilled
      # BatchNorm models: interpolate the running statistics (seed paper)
      # and/or recompute them on training batches at each alpha (BN reset).
      # 'repair' (REPAIR, Jordan et al. 2023) is for nets without BatchNorm,
      # which then get 'interpolate' and 'repair'; a BatchNorm net with it is
      # refused (use 'reset'). Both measure statistics on bn_reset_batches
      # batches of bn_reset_batch_size training images.
      bn_modes=("interpolate", "reset"),
      bn_reset_batches=8,
      bn_reset_batch_size=256,
      distilled_path="",  # '' = the distill stage's DIR/distill/synthetic.npz
      # Frankle et al. (2020), Fig. 3: the error barrier between num_copies
      # SGD-noise copies against the rewind epoch, for the dense net and each
      # source's mask at `rounds` (() = its sparsest analysed round).
      instability=ml_collections.ConfigDict(dict(
          enabled=False,
          rewind_epochs=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
          num_copies=3,
          include_dense=True,
          rounds=(),
          split="test",
          num_alphas=11,
      )),
      # Paul et al. (2023): the barrier between IMP's solutions of rounds k
      # and k+1 of each source (imp.retrain_rounds='all'); its fields and
      # their comments: lmcjax/analysis/successive_rounds.py DEFAULTS.
      successive_rounds=measures.default_section("successive_rounds"),
      # Entezari et al. (2022), Ainsworth et al. (2023): barriers between nets
      # from different init seeds under one mask, naive and after weight or
      # activation matching, with REPAIR or BN reset (off by default: it trains
      # num_inits - 1 more dense runs); lmcjax/analysis/cross_seed.py DEFAULTS.
      cross_seed=measures.default_section("cross_seed"),
      # Adnan et al. (2025): each source's mask trained from a new init, as it
      # is and permuted into the new init's basin (off by default);
      # lmcjax/analysis/mask_transfer.py DEFAULTS.
      mask_transfer=measures.default_section("mask_transfer"),
      landscape=ml_collections.ConfigDict(dict(
          # three_point | four_seed | random_1d | random_2d
          kinds=("three_point", "random_2d"),
          split="test",
          resolution=21,
          margin=0.25,  # of the solutions' span, around planes through solutions
          span=1.0,  # +- this many direction lengths for random directions
          chunk_points=32,  # grid points per vmapped evaluation (execution 'vmapped')
          skip_bias_and_norm=True,  # Li et al.'s 'biasbn' option
      )),
      hessian=ml_collections.ConfigDict(dict(
          enabled=True,
          split="train",
          batch_size_examples=500,
          num_batches=2,  # 0 = the whole split
          # auto: the exact GGN diagonal where it is the exact Hessian diagonal
          # (ReLU nets without instance/layer norm: LeNet, eval-mode BN nets),
          # else GGN + a Hutchinson estimate of the residual. Also: ggn |
          # ggn+residual | hutchinson | exact (one HVP per parameter, tiny nets).
          method="auto",
          chunk_examples=50,  # examples per vmapped GGN call: chunk x classes x params floats
          # Hutchinson (method hutchinson, or the residual of ggn+residual).
          max_probes=64,
          chunk_probes=8,  # probes per vmapped call, and between stopping-rule checks
          tol=0.05,  # stop once the relative standard error is below this
          # Top eigenvalues: Lanczos until each Ritz residual is <= lanczos_tol * |lambda|.
          lanczos_k=1,
          lanczos_iters=60,
          lanczos_tol=1e-3,
          layer_eigenvalues=True,  # top eigenvalue of each kernel's diagonal block
          # Spectral density by stochastic Lanczos quadrature (PyHessian density()).
          density=True,
          density_probes=1,
          density_steps=40,
          exact_max_params=2000,  # also compare with the exact diagonal below this
          hist_bins=50,
      )),
  ))
