"""Pytrees from flax msgpack checkpoints (flax.training.checkpoints before orbax).

FRePo and RCIG save their distilled sets with flax.training.checkpoints.save_checkpoint
of their train state (FRePo lib/training/utils.py; RCIG distill_dataset.py), which
flax of 2022-23 wrote as one msgpack file `<dir>/checkpoint_<step>`. msgpack holds
only dicts, lists, numbers, strings and flax's array records (shape, dtype name,
bytes): reading it runs no code. A newer orbax checkpoint (a directory of files) is
refused with one line.
"""
import os
from typing import Any, Dict

from flax import serialization

from lmcjax import validate


def checkpoint_file(path: str) -> str:
  """`path` itself, or the one `checkpoint_*` file in the directory `path`."""
  validate.require(bool(path) and os.path.exists(path), f"checkpoint not found: {path!r}")
  if os.path.isfile(path):
    return path
  names = sorted(n for n in os.listdir(path) if n.startswith("checkpoint"))
  files = [n for n in names if os.path.isfile(os.path.join(path, n))]
  validate.require(files or not names, (
      f"{path}: {names[:3]} are directories: an orbax checkpoint, not the msgpack file "
      "FRePo and RCIG publish; restore it with orbax and pass its arrays' msgpack file"))
  validate.require(len(files) == 1, f"{path}: name one checkpoint file, the directory holds "
                   f"{len(files)} ({', '.join(files[:4]) or 'none'})")
  return os.path.join(path, files[0])


def load(path: str) -> Dict[str, Any]:
  """The checkpoint's state dict: nested dicts with numpy leaves."""
  path = checkpoint_file(path)
  with open(path, "rb") as f:
    raw = f.read()
  try:
    state = serialization.msgpack_restore(raw)
  except (ValueError, TypeError, KeyError) as e:  # msgpack's errors are ValueErrors
    raise validate.InputError(f"{path}: not a flax msgpack checkpoint, or truncated "
                              f"({type(e).__name__}: {e})") from e
  validate.require(isinstance(state, dict), f"{path}: a flax checkpoint holds a dict, found "
                   f"{type(state).__name__}")
  return state
