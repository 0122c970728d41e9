"""Dataset distillation as jit-compiled pure functions (the 'distill' stage).

core: synthetic-set pytree, init, the inner-training primitive, embeddings;
methods: gradient matching (DC/DSA, IDC), distribution matching (DM),
trajectory matching (MTT); experts: MTT's expert trajectories;
evaluate: K fresh nets vmapped over seeds; stage: config, loop, files.
"""
