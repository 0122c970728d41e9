"""The train stage: the dense real-data run, saving every state a later stage rewinds to.

The run itself lives in lmcjax/dense.py (IMP's round 0 and every start point
read it); the steps to save are what the configured stages declare
(Stage.rewind_steps), collected by the pipeline as config.needs.rewind_steps.
"""
from typing import Any, Dict

from lmcjax import dense
from lmcjax import logs
from lmcjax import runtime
from lmcjax.stages import base


def check_config(config) -> None:
  del config  # pipeline.check_config checks config.train for every run


def run_stage(s, workdir: str, log: logs.MetricsLog) -> Dict[str, Any]:
  """Trains the dense model on real data with config.train, saving its rewind points."""
  steps = list(s.config.needs.rewind_steps)
  result = dense.final(s, workdir, log, steps)
  train_metrics = runtime.evaluate(s, result.state.params, result.state.batch_stats, "train")
  log.write("train", int(result.state.step), {"test_loss": result.test["loss"],
                                              "test_accuracy": result.test["accuracy"]})
  return {"test_accuracy": result.test["accuracy"], "test_loss": result.test["loss"],
          "train_accuracy": train_metrics["accuracy"], "train_loss": train_metrics["loss"],
          "num_test": int(s.x_test.shape[0]), "steps": int(result.state.step),
          "rewind_steps_saved": steps, **result.cost}


# The snapshots are keyed by their own inputs (dense.run_dir), so they are
# never moved aside. needs.rewind_steps says which states to save.
STAGE = base.Stage(
    "train", run_stage, check_config,
    reads=("seeds", "data", "model", "train", "prune", "eval_batch_size", "parallel",
           "needs.rewind_steps"))
