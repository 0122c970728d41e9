"""Metrics files: DIR/metrics.jsonl (one JSON object per logged step) and JSON summaries."""
import json
import os
from typing import Any, Dict

from absl import logging
import numpy as np


def _jsonable(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


def is_lead_process() -> bool:
  """In a multi-process run every process computes the same results; one writes them."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def write_json(path: str, obj: Dict[str, Any]) -> None:
  """Writes JSON atomically: a reader never sees a half-written file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=_jsonable, sort_keys=True)
  os.replace(tmp, path)


def read_json(path: str) -> Dict[str, Any]:
  with open(path) as f:
    return json.load(f)


class MetricsLog:
  """Appends one JSON object per logged step to DIR/metrics.jsonl and logs a line."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.path = os.path.join(workdir, filename)

  def write(self, stage: str, step: int, metrics: Dict[str, float]) -> None:
    if not is_lead_process():
      return
    row = {"stage": stage, "step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row, default=_jsonable) + "\n")
    shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    logging.info("[%s] step %d %s", stage, step, shown)

  def logger(self, stage: str):
    return lambda step, metrics: self.write(stage, step, metrics)


def quiet_library_logs() -> None:
  """Keeps orbax's and tfds's INFO chatter out of the console; warnings still show."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  def keep(record):
    noisy = any(lib in record.pathname for lib in ("orbax", "tensorflow_datasets"))
    return not noisy or record.levelno >= std_logging.WARNING

  logging.get_absl_handler().addFilter(keep)
