"""Orbax round trips: exact values, tree checks, resumable train state."""
import chex
import jax
import pytest

from lmcjax import checkpoints
from lmcjax import train
from lmcjax import validate
from test_train import _setup


def test_tree_round_trip_is_exact(tmp_path):
  state, _, _ = _setup("convnet", norm="batch")
  tree = {"params": state.params, "batch_stats": state.batch_stats}
  checkpoints.save_tree(str(tmp_path / "t"), tree)
  chex.assert_trees_all_equal(checkpoints.load_tree(str(tmp_path / "t"), tree), tree)


def test_mismatched_tree_is_a_one_line_error(tmp_path):
  state, _, _ = _setup("mlp")
  checkpoints.save_tree(str(tmp_path / "t"), state.params)
  other, _, _ = _setup("convnet")
  with pytest.raises(validate.InputError, match="does not match the model"):
    checkpoints.load_tree(str(tmp_path / "t"), other.params, what="mask")
  with pytest.raises(validate.InputError, match="checkpoint not found"):
    checkpoints.load_tree(str(tmp_path / "missing"), state.params)


def test_state_checkpointer_resumes_the_exact_state(tmp_path):
  state, step, batch = _setup(momentum=0.9)
  step = jax.jit(step)
  for _ in range(3):
    state, _ = step(state, batch, None)
  ckpt = checkpoints.StateCheckpointer(str(tmp_path / "c"), every_steps=1)
  ckpt.save(3, state)
  fresh, _, _ = _setup(momentum=0.9)
  restored = checkpoints.StateCheckpointer(str(tmp_path / "c"), 1).restore_latest(fresh)
  chex.assert_trees_all_equal(restored, state)
  assert isinstance(restored, train.TrainState) and int(restored.step) == 3
