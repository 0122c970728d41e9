"""Orbax checkpoints: single trees (rewind points, masks) and resumable train state.

Saved states are plain dicts of arrays (flax state dicts), so they round-trip
exactly; restores are checked against the model's tree first.
"""
import os
from typing import Any, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from lmcjax import masks
from lmcjax import validate

PyTree = Any


def _plain(tree: PyTree) -> PyTree:
  return flax.serialization.to_state_dict(tree)


def _template(tree: PyTree) -> PyTree:
  return jax.tree.map(np.asarray, _plain(tree))


def save_tree(path: str, tree: PyTree) -> None:
  """Writes a pytree atomically (orbax renames a finished temp dir into place)."""
  path = os.path.abspath(path)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, _plain(tree), force=True)


def load_tree(path: str, like: PyTree, what: str = "checkpoint") -> PyTree:
  """Restores a tree saved by save_tree into the structure of `like`."""
  path = os.path.abspath(path)
  validate.require(os.path.isdir(path), f"{what} not found: {path}")
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    saved = getattr(meta, "item_metadata", meta)
    saved = getattr(saved, "tree", saved)
    masks.check_matches(saved, _plain(like), what=f"{what} {path}")
    restored = ckptr.restore(path, _template(like))
  return flax.serialization.from_state_dict(like, restored)


def exists(path: str) -> bool:
  return os.path.isdir(path)


class StateCheckpointer:
  """Periodic checkpoints of a TrainState in `directory`, for kill-safe resume."""

  def __init__(self, directory: str, every_steps: int, max_to_keep: int = 2):
    self.every_steps = every_steps
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             enable_async_checkpointing=False))

  def restore_latest(self, state: PyTree) -> Optional[PyTree]:
    step = self.manager.latest_step()
    if step is None:
      return None
    restored = self.manager.restore(step, args=ocp.args.StandardRestore(_template(state)))
    return flax.serialization.from_state_dict(state, restored)

  def due(self, step: int) -> bool:
    return self.every_steps > 0 and step % self.every_steps == 0

  def save(self, step: int, state: PyTree) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(_plain(state)), force=True)
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
