"""Dataset distillation as jit-compiled pure functions (the 'distill' stage).

core: synthetic-set pytree, init, the inner-training primitive, embeddings;
methods: the problem, the method record and the outer step; registry: the
registered methods, each in its own module: gradient matching (DC/DSA, IDC),
distribution matching (DM), trajectory matching (MTT; experts: its expert
trajectories); evaluate: K fresh nets vmapped over seeds; stage: config, loop,
files. A new method is one module that calls registry.register, imported here.
"""
# Importing the built-in methods registers them.
from lmcjax.distill import gradient_matching as _gradient_matching
from lmcjax.distill import distribution_matching as _distribution_matching
from lmcjax.distill import trajectory_matching as _trajectory_matching

del _gradient_matching, _distribution_matching, _trajectory_matching
