"""Frankle-style rewinding, the dense run's rewind points, and the CPU branch path."""
import os

import chex
import jax
import numpy as np
import pytest

from lmcjax import branches
from lmcjax import checkpoints
from lmcjax.configs import default
from lmcjax.configs.parts import model as model_part
from lmcjax.configs.parts import train as train_part
from lmcjax import dense
from lmcjax import execution as execution_lib
from lmcjax import imp
from lmcjax import logs
from lmcjax import pipeline
from lmcjax import runtime
from lmcjax import train
from lmcjax import validate


def _config(model="mlp", momentum=0.9):
  """sklearn digits, 3 epochs with a milestone after epoch 1, crop+flip."""
  c = default.get_config()
  c.data.name = "digits"
  c.model = model_part.get(model, **(dict(hidden=(16,)) if model == "mlp" else
                                       dict(depth=1, width=4, norm="instance")))
  c.train = train_part.train_spec(epochs=3, batch_size=128, lr=0.05, momentum=momentum,
                               milestones=(0.4,), gamma=0.1)
  c.train.augment.kind = "crop_flip"
  c.log_every_steps = 0
  return c


def _equal(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# Float rounding between two XLA programs that train the same run: the tolerance
# of the vmapped branches in test_sequential_branches_are_train_run_bit_for_bit.
ROUNDING = dict(rtol=2e-4, atol=2e-5)


def _close(a, b) -> bool:
  return all(np.allclose(np.asarray(x), np.asarray(y), **ROUNDING)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_schedule_continues_at_the_rewind_step():
  spec = _config().train
  full = train.make_schedule(spec, 30)
  resumed = train.make_schedule(spec, 30, start_step=10)
  # The milestone at 0.4 * 30 = step 12 is crossed 2 steps into the resumed run.
  assert [float(resumed(i)) for i in range(4)] == [float(full(10 + i)) for i in range(4)]
  assert float(resumed(0)) == pytest.approx(0.05) and float(resumed(3)) == pytest.approx(0.005)


def test_continuing_the_dense_run_from_step_k_reproduces_it(tmp_path):
  # Plain SGD keeps no optimizer state, so a run resumed at step k of the
  # dense run, with its seed path, must end where the dense run ends: the
  # remaining T - k steps, the schedule at k, the same data and augmentation.
  s = runtime.setup(_config(momentum=0.0))
  n = int(s.x_train.shape[0])
  steps = train.total_steps(s.config.train, n)
  k = 7
  whole = dense.train_dense(s, str(tmp_path), save_steps=[k])
  start = dense.load(s, str(tmp_path), k)
  resumed = runtime.train_run(s, s.config.train, start["params"], start["batch_stats"], None,
                                 seed_path=dense.SEED_PATH, stage="resumed", start_step=k)
  assert int(resumed.state.step) == steps
  assert resumed.cost["examples_seen"] == (steps - k) * 128
  # Different XLA programs (the resumed schedule reads count + k); XLA:CPU's code differs per CPU.
  chex.assert_trees_all_close(resumed.state.params, whole.state.params, **ROUNDING)
  # Restarting the schedule instead (a whole run from theta_k) ends elsewhere.
  restarted = runtime.train_run(s, s.config.train, start["params"], start["batch_stats"], None,
                                   seed_path=dense.SEED_PATH, stage="restarted")
  assert not _close(restarted.state.params, whole.state.params)


def test_rewind_beyond_training_is_one_line(tmp_path):
  s = runtime.setup(_config())
  with pytest.raises(validate.InputError, match="beyond the .* steps"):
    runtime.train_run(s, s.config.train, s.init_params, s.init_batch_stats, None,
                         seed_path=("x",), stage="x", start_step=10_000)
  with pytest.raises(validate.InputError, match="rewind epoch 4 is beyond training"):
    dense.epoch_step(s.config, 1000, 4)


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_sequential_branches_are_train_run_bit_for_bit(model):
  s = runtime.setup(_config(model))
  start = {"params": s.init_params, "batch_stats": s.init_batch_stats}
  got = branches.train_branches(s, s.config.train, start["params"], start["batch_stats"], None,
                                prefix=("p",), num_copies=2, chunk=2, start_step=3,
                                execution="sequential")
  for i, path in enumerate(got.seed_paths):
    want = runtime.train_run(s, s.config.train, s.init_params, s.init_batch_stats, None,
                                seed_path=path, stage="want", start_step=3)
    assert _equal(jax.tree.map(lambda a: a[i], got.params), want.state.params)
  n = int(s.x_train.shape[0])
  assert got.cost["examples_seen"] == (train.total_steps(s.config.train, n) - 3) * 128
  # The vmapped program trains the same copies, up to float reassociation.
  vmapped = branches.train_branches(s, s.config.train, start["params"], start["batch_stats"],
                                    None, prefix=("p",), num_copies=2, chunk=2, start_step=3,
                                    execution="vmapped")
  for g, v in zip(jax.tree.leaves(got.params), jax.tree.leaves(vmapped.params)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(v), rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(got.final_loss, vmapped.final_loss, rtol=1e-4)


def test_auto_execution_is_sequential_for_convnets_on_cpu():
  cpu = jax.default_backend() == "cpu"
  conv = runtime.setup(_config("convnet")).init_params
  mlp = runtime.setup(_config("mlp")).init_params
  assert execution_lib.resolve("auto", conv) == ("sequential" if cpu else "vmapped")
  assert execution_lib.resolve("auto", mlp) == "vmapped"
  assert execution_lib.resolve("vmapped", conv) == "vmapped"
  with pytest.raises(validate.InputError, match="execution='scan'"):
    execution_lib.resolve("scan")


def _imp_rows(c, workdir):
  s = runtime.setup(c)
  imp.run_stage(s, str(workdir), logs.MetricsLog(str(workdir)))
  return logs.read_json(os.path.join(workdir, "imp", "real", "round_02", "result.json"))


def test_rewind_to_init_is_the_same_under_both_schedules(tmp_path):
  c = _config()
  c.imp.update(sources=("real",), rounds=2)
  continued = _imp_rows(c, tmp_path / "continue")
  c.imp.rewind_schedule = "restart"
  restarted = _imp_rows(c, tmp_path / "restart")
  assert continued == restarted


def test_imp_round_0_is_the_train_stage_run_and_snapshots_are_shared(tmp_path):
  c = _config()
  c.stages = ("train", "imp")
  c.imp.update(sources=("real", "random"), rounds=1, rewind_epochs=1.0)
  summary = pipeline.run(c, str(tmp_path))
  step = summary["imp"]["rewind_step"]
  assert summary["train"]["rewind_steps_saved"] == [step]
  s = runtime.setup(c)
  assert checkpoints.exists(dense.snapshot_path(str(tmp_path), c, step))
  assert _equal(imp.load_rewind(s, str(tmp_path))[0], dense.load(s, str(tmp_path), step)["params"])
  round0 = logs.read_json(os.path.join(tmp_path, "imp", "real", "round_00", "result.json"))
  assert round0["test_accuracy"] == summary["train"]["test_accuracy"]
  # Another config never reads these snapshots: the directory is keyed by its inputs.
  other = _config()
  other.train.lr = 0.01
  assert dense.run_dir(str(tmp_path), other) != dense.run_dir(str(tmp_path), c)
