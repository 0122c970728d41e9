"""Connectivity beyond SGD-noise copies: permutation alignment and REPAIR.

  structure.py           structure_of(module, variables): each model's
                         permutation structure (from the model registry:
                         derived for sequential models, declared for residual
                         streams);
  permute.py             permute(structure, perm, params, batch_stats, mask):
                         params, running statistics and masks together;
  weight_matching.py     Git Re-Basin weight matching (Ainsworth et al. 2023);
  activation_matching.py activation matching, chunked over examples;
  repair.py              REPAIR (Jordan et al. 2023): per-channel statistics of
                         an interpolated net reset to the endpoints' interpolation.

Import the module you need (`from lmcjax.connectivity import weight_matching`);
importing this package imports nothing else. Design: docs/connectivity.md.
"""
