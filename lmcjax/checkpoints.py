"""Orbax checkpoints: single trees (rewind points, masks) and resumable train state.

Saved states are plain dicts of arrays (flax state dicts), so they round-trip
exactly; restores are checked against the model's tree first.
"""
import os
import re
import shutil
from typing import Any, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from lmcjax import masks
from lmcjax import validate

PyTree = Any
# The files orbax writes last for a tree and for a manager's step: a directory
# without them is an unfinished or damaged copy.
TREE_METADATA = "_METADATA"
STEP_METADATA = "_CHECKPOINT_METADATA"


def _plain(tree: PyTree) -> PyTree:
  return flax.serialization.to_state_dict(tree)


def _template(tree: PyTree) -> PyTree:
  return jax.tree.map(np.asarray, _plain(tree))


def _as_os_error(path: str, error: ValueError) -> Optional[OSError]:
  """The OSError behind a failed tensorstore write (a full disk, a file-size
  limit), which orbax reports as a ValueError naming the errno; else None."""
  code = re.search(r"os_error_code='(\d+)'", str(error))
  return OSError(int(code.group(1)), os.strerror(int(code.group(1))), path) if code else None


def save_tree(path: str, tree: PyTree) -> None:
  """Writes a pytree atomically: orbax writes it inside a staging directory,
  and the finished tree then replaces `path`.

  A failed write (a full disk) raises OSError, removes what it wrote, and
  leaves an earlier tree at `path` as it was (orbax's force=True would delete
  it first).
  """
  path = os.path.abspath(path)
  staging, replaced = f"{path}.saving", f"{path}.replaced"
  shutil.rmtree(staging, ignore_errors=True)
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(staging, "tree"), _plain(tree))
    if os.path.isdir(path):
      shutil.rmtree(replaced, ignore_errors=True)
      os.replace(path, replaced)
    os.replace(os.path.join(staging, "tree"), path)
  except ValueError as e:
    failure = _as_os_error(path, e)
    if failure is None:
      raise
    raise failure from e
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if os.path.isdir(path):  # else the earlier tree stays in `replaced`
      shutil.rmtree(replaced, ignore_errors=True)


def _unreadable(what: str, path: str, error: BaseException) -> validate.InputError:
  """One line for a checkpoint that orbax or tensorstore cannot read."""
  detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  return validate.InputError(f"{what} {path} is truncated or corrupt ({detail[:300]}); "
                             "restore it from a copy, or move it aside to recompute it")


def load_tree(path: str, like: PyTree, what: str = "checkpoint") -> PyTree:
  """Restores a tree saved by save_tree into the structure of `like`.

  One line, before any use, when the directory is missing, truncated or
  corrupt, or holds a tree that is not `like`'s (another model or mask).
  """
  path = os.path.abspath(path)
  validate.require(os.path.isdir(path), f"{what} not found: {path}")
  # Checked here, so that orbax does not log its own warnings before ours.
  if not os.path.isfile(os.path.join(path, TREE_METADATA)):
    raise _unreadable(what, path, ValueError(f"no {TREE_METADATA} file"))
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    saved = getattr(meta, "item_metadata", meta)
    saved = getattr(saved, "tree", saved)
    if saved is None:  # orbax found no readable tree metadata
      raise _unreadable(what, path, ValueError("no readable tree metadata"))
    masks.check_matches(saved, _plain(like), what=f"{what} {path}")
    _check_arrays_readable(path, what, path)
    try:
      restored = ckptr.restore(path, _template(like))
    except (ValueError, OSError, KeyError) as e:  # tensorstore reports bad data as ValueError
      raise _unreadable(what, path, e) from e
  return flax.serialization.from_state_dict(like, restored)


def exists(path: str) -> bool:
  return os.path.isdir(path)


def _check_newest_step(directory: str) -> None:
  """A newest step directory without its metadata (its contents lost) is our
  one line; orbax would log warnings of its own before failing."""
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
  if steps and not os.path.isfile(os.path.join(directory, str(max(steps)), STEP_METADATA)):
    raise _unreadable(f"training checkpoint at step {max(steps)} in", directory,
                      ValueError(f"no {STEP_METADATA} file"))


def _ocdbt_roots(directory: str):
  """The OCDBT databases orbax wrote under `directory` (each names its
  per-process subdatabases, which are not listed again)."""
  for root, dirs, files in os.walk(directory):
    if "manifest.ocdbt" in files and not os.path.basename(root).startswith("ocdbt.process_"):
      yield root
    dirs[:] = [d for d in dirs if not d.startswith("ocdbt.process_")]


def _check_arrays_readable(directory: str, what: str, shown: str) -> None:
  """Reads every stored array chunk once, synchronously; a truncated or
  corrupt one is our one line. Orbax's restore would fail on it too, but it
  leaves the other reads pending, and they later call into its closed asyncio
  loop: "Exception ignored ... Event loop is closed" on stderr after our line."""
  for root in _ocdbt_roots(directory):
    try:
      store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{root}/"}).result()
      for key in store.list().result():
        store.read(key).result()
    except ValueError as e:  # tensorstore's errors (OUT_OF_RANGE, DATA_LOSS, ...)
      raise _unreadable(what, shown, e) from e


class StateCheckpointer:
  """Periodic checkpoints of a TrainState in `directory`, for kill-safe resume."""

  def __init__(self, directory: str, every_steps: int, max_to_keep: int = 2):
    self.every_steps = every_steps
    _check_newest_step(os.path.abspath(directory))  # before orbax reads it
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             enable_async_checkpointing=False))

  def restore_latest(self, state: PyTree) -> Optional[PyTree]:
    step = self.manager.latest_step()
    if step is None:
      return None
    what = f"training checkpoint at step {step} in"
    directory = str(self.manager.directory)
    _check_arrays_readable(os.path.join(directory, str(step)), what, directory)
    try:
      restored = self.manager.restore(step, args=ocp.args.StandardRestore(_template(state)))
    except (ValueError, OSError, KeyError) as e:
      raise _unreadable(what, directory, e) from e
    return flax.serialization.from_state_dict(state, restored)

  def due(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state: PyTree) -> None:
    try:
      self.manager.save(step, args=ocp.args.StandardSave(_plain(state)), force=True)
      self.manager.wait_until_finished()
    except ValueError as e:
      failure = _as_os_error(str(self.manager.directory), e)
      if failure is None:
        raise
      raise failure from e

  def close(self) -> None:
    self.manager.close()
