"""Dataset distillation as jit-compiled pure functions (the 'distill' stage).

core: synthetic-set pytree, init, the inner-training primitive, embeddings;
methods: gradient matching (DC/DSA, IDC), distribution matching (DM),
trajectory matching (MTT); experts: MTT's expert trajectories;
evaluate: K fresh nets vmapped over seeds; stage: config, loop, files.
"""
from lmcjax.distill.stage import CONFIG_FIELDS  # noqa: F401
from lmcjax.distill.stage import DEPENDS_ON  # noqa: F401
from lmcjax.distill.stage import OUTPUT_DIRS  # noqa: F401
from lmcjax.distill.stage import REPORT_ONLY_FIELDS  # noqa: F401
from lmcjax.distill.stage import check_config  # noqa: F401
from lmcjax.distill.stage import run_stage  # noqa: F401
