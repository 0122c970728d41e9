"""What a run writes: whole files written atomically, DIR/metrics.jsonl and TensorBoard.

Every result file (JSON, JSONL, markdown, npz, PNG) goes through
atomic_write: a private temporary file beside the destination, renamed over
it. A reader, a kill or a full disk never leaves a torn file: the
destination holds the old complete version or the new one, and the
temporary file is removed when the write fails.
"""
import json
import os
import threading
from typing import Any, Callable, Dict, IO, List, Sequence

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


def atomic_write(path: str, write: Callable[[IO], Any], binary: bool = False) -> str:
  """Calls write(file) on a temporary file and renames it to `path`; returns path.

  The temporary name is private to this process and thread, so concurrent
  writers of one path (array jobs writing a shared manifest) never mix.
  No fsync: the guarantee is against kills and failed writes, not power loss.
  """
  tmp = f"{path}.tmp{os.getpid()}-{threading.get_ident()}"
  try:
    with open(tmp, "wb" if binary else "w") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_text(path: str, text: str) -> str:
  return atomic_write(path, lambda f: f.write(text))


def write_json(path: str, obj: Any, sort_keys: bool = True) -> str:
  """JSON with numpy scalars and arrays as numbers and lists."""
  return atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=_jsonable,
                                                sort_keys=sort_keys))


def write_jsonl(path: str, rows: Sequence[Dict[str, Any]]) -> str:
  """One JSON object per line, the whole file at once: never a torn or repeated row."""
  return write_text(path, "".join(json.dumps(r, sort_keys=True, default=_jsonable) + "\n"
                                  for r in rows))


def _cell(value: Any) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   cell: Callable[[Any], str] = _cell) -> str:
  """A GitHub markdown table; floats to 4 significant digits unless `cell` says otherwise."""
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def write_npz(path: str, **arrays) -> str:
  """Arrays as an uncompressed npz (np.savez), read back without pickles."""
  return atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_jsonl(path: str) -> List[Dict[str, Any]]:
  """The rows of a JSONL file; [] when it does not exist."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _scalars(metrics: Dict[str, Any]) -> Dict[str, float]:
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def _flat_scalars(tree: Any, prefix: str = "") -> Dict[str, float]:
  """Numeric leaves of nested dicts as 'a/b/c' -> value (lists are left out)."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat_scalars(v, f"{prefix}/{k}" if prefix else str(k)))
    return out
  return _scalars({prefix: tree}) if prefix else {}


class MetricsLog:
  """Training curves and stage metrics: DIR/metrics.jsonl, TensorBoard event files
  in DIR (`tensorboard --logdir DIR`), and a log line per row."""

  def __init__(self, workdir: str, filename: str = "metrics.jsonl"):
    self.workdir = workdir
    self.path = os.path.join(workdir, filename)
    self._writer = None

  def _tensorboard(self):
    if self._writer is None:
      import tensorboardX  # pylint: disable=g-import-not-at-top  # only where metrics are written
      self._writer = tensorboardX.SummaryWriter(self.workdir)
    return self._writer

  def _add_scalars(self, prefix: str, step: int, scalars: Dict[str, float]) -> None:
    writer = self._tensorboard()
    for name, value in scalars.items():
      writer.add_scalar(f"{prefix}/{name}", value, int(step))
    writer.flush()  # a killed run keeps every row it logged

  def write(self, stage: str, step: int, metrics: Dict[str, Any]) -> None:
    """One row. String values (e.g. the analysed model's name) go into the
    TensorBoard tag, so rows of several models at one step stay apart."""
    if not is_lead_process():
      return
    row = {"stage": stage, "step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row, default=_jsonable) + "\n")
    scalars = _scalars(metrics)
    names = [str(v) for v in metrics.values() if isinstance(v, str)]
    self._add_scalars("/".join([stage] + names), step, scalars)
    shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    logging.info("[%s] step %d %s", stage, step, shown)

  def write_summary(self, stage: str, summary: Dict[str, Any]) -> None:
    """A finished stage's numeric results, as TensorBoard scalars 'STAGE/summary/...'."""
    if is_lead_process():
      self._add_scalars(f"{stage}/summary", 0, _flat_scalars(summary))

  def logger(self, stage: str):
    return lambda step, metrics: self.write(stage, step, metrics)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def quiet_library_logs() -> None:
  """Keeps orbax's and tfds's INFO chatter out of the console; warnings still show."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  def keep(record):
    noisy = any(lib in record.pathname for lib in ("orbax", "tensorflow_datasets"))
    return not noisy or record.levelno >= std_logging.WARNING

  logging.get_absl_handler().addFilter(keep)
