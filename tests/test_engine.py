"""The training engine: copy i of K copies is the single run of its seed path.

Sequential copies are the single run bit for bit: the same program on the
same machine. Vmapped copies run the same steps with the same keys and data
as another, batched program, which XLA:CPU may sum in another order, and
does so differently per CPU type, so they are held to float rounding only:
  - a ConvNet on CPU runs jit(vmap(step)) per step (engine._vmapped_steps):
    on an Intel Xeon, bit for bit at batch 16; from batch 64 on, the batched
    instance-norm bias gradient (a YNNPACK reduction) differs in the last bits;
  - an MLP runs jit(vmap(scan)): on that Xeon, bit for bit at batch 16; at
    batch 128 the batched bias-gradient reduction becomes a YNNPACK library
    fusion where the single run gets a tree reduction.
"""
import dataclasses
import os
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lmcjax import engine  # pylint: disable=g-import-not-at-top
from lmcjax import execution as execution_lib
from lmcjax import models  # pylint: disable=g-import-not-at-top
from lmcjax import train  # pylint: disable=g-import-not-at-top
from lmcjax.configs.parts import model as model_part  # pylint: disable=g-import-not-at-top
from lmcjax.configs.parts import train as train_part  # pylint: disable=g-import-not-at-top

C, HW = 3, 8
SEEDS = ml_collections.ConfigDict({"augment": 1, "data_order": 2})


def tiny_data(n: int):
  """n 8x8 images of 3 classes, each a noisy copy of its class template."""
  rs = np.random.RandomState(0)
  labels = np.arange(n) % C
  images = rs.randn(C, HW, HW, 1)[labels] + 0.5 * rs.randn(n, HW, HW, 1)
  return jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)


def setting(model_name: str, batch_size: int = 16, lr: float = 0.05):
  """(program, steps, make_copies): 2 epochs of 4 batches with crop+flip, so
  both the data-order and the augmentation keys matter."""
  fields = dict(hidden=(16,)) if model_name == "mlp" else dict(depth=1, width=4, norm="instance")
  model = models.create(model_part.get(model_name, **fields), C)
  spec = train_part.train_spec(epochs=2, batch_size=batch_size, lr=lr, momentum=0.9)
  spec.augment.kind = "crop_flip"
  images, labels = tiny_data(4 * batch_size)
  steps = train.total_steps(spec, int(images.shape[0]))
  program = engine.train_program(model, spec, C, steps)
  params, stats = train.init_variables(model, jax.random.PRNGKey(0), (HW, HW, 1))

  def make_copies(num: int):
    return [engine.seeded_copy(program, params, stats, SEEDS, ("copy", i), images, labels,
                               batch_size, 0, f"copy {i}") for i in range(num)]

  return program, steps, make_copies


def single_runs_and_copies(model_name: str, executions, batch_size: int = 16):
  """The single runs of 2 copies, and the copies trained together with each
  execution: [singles, per-copy states of executions[0], ...]."""
  program, steps, make_copies = setting(model_name, batch_size)
  out = [[engine.run(program, c, None, steps)[0] for c in make_copies(2)]]
  for execution in executions:
    states, losses = engine.run_copies(program, make_copies(2), None, steps, execution=execution)
    assert losses.shape == (2,) and np.all(np.isfinite(losses))
    out.append([jax.tree.map(lambda a, i=i: a[i], states) for i in range(2)])
  return out


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_copy_i_is_the_single_run_of_its_seed_path(model_name):
  singles, sequential, vmapped = single_runs_and_copies(model_name, ["sequential", "vmapped"])
  for single, seq, vm in zip(singles, sequential, vmapped):
    chex.assert_trees_all_equal(seq, single)  # the same program: bit for bit
    # The batched program rounds alike only where XLA:CPU compiles it alike: the
    # ConvNet's copies here differ in the last bits without cpu_runtime's flag.
    chex.assert_trees_all_close(vm, single, rtol=1e-5, atol=1e-6)
  # The copies differ: their seed paths give them different SGD noise.
  assert not np.allclose(singles[0].params["Dense_0"]["kernel"],
                         singles[1].params["Dense_0"]["kernel"])


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_vmapped_copies_with_their_own_training_sets_are_their_single_runs(model_name):
  program, steps, make_copies = setting(model_name)

  def own_sets():  # copy 1 trains on other images than copy 0
    first, second = make_copies(2)
    return [first, dataclasses.replace(second, images=-second.images)]

  singles = execution_lib.stack([engine.run(program, c, None, steps)[0] for c in own_sets()])
  vmapped, _ = engine.run_copies(program, own_sets(), None, steps, execution="vmapped")
  chex.assert_trees_all_close(vmapped, singles, rtol=1e-5, atol=1e-6)  # another program


def test_larger_vmapped_convnet_copies_agree_with_the_single_runs_to_rounding():
  singles, vmapped = single_runs_and_copies("convnet", ["vmapped"], batch_size=128)
  for single, vm in zip(singles, vmapped):
    chex.assert_trees_all_equal(vm.step, single.step)
    chex.assert_trees_all_close(vm.params, single.params, rtol=1e-5, atol=1e-6)


# The ConvNet's vmapped copies step from Python on CPU, the MLP's scan.
@pytest.mark.parametrize("execution,model_name",
                         [("sequential", "mlp"), ("vmapped", "mlp"), ("vmapped", "convnet")])
def test_copies_killed_after_a_checkpoint_resume_to_the_same_states(tmp_path, execution,
                                                                     model_name):
  program, steps, make_copies = setting(model_name)
  every = steps // 2
  kwargs = dict(execution=execution, checkpoint_every_steps=every)
  whole, whole_losses = engine.run_copies(program, make_copies(2), None, steps,
                                          checkpoint_dir=str(tmp_path / "whole"), **kwargs)
  # The first attempt stops at the checkpoint (as if killed right after it).
  engine.run_copies(program, make_copies(2), None, every, checkpoint_dir=str(tmp_path / "cut"),
                    **kwargs)
  # The rerun's copies start from zeroed weights: only a restored checkpoint
  # can bring it to the uninterrupted result.
  zeroed = [dataclasses.replace(c, state=c.state.replace(
      params=jax.tree.map(jnp.zeros_like, c.state.params))) for c in make_copies(2)]
  resumed, resumed_losses = engine.run_copies(program, zeroed, None, steps,
                                              checkpoint_dir=str(tmp_path / "cut"), **kwargs)
  chex.assert_trees_all_equal(resumed, whole)
  np.testing.assert_array_equal(resumed_losses, whole_losses)
  # Stopping at the checkpoint, the uninterrupted run still trains each copy
  # as its single run: the data order picks up at the step it stopped at.
  singles = execution_lib.stack([engine.run(program, c, None, steps)[0] for c in make_copies(2)])
  if execution == "sequential":  # the single runs' own program
    chex.assert_trees_all_equal(whole, singles)
  else:  # the batched program: float rounding apart on some CPUs and flags
    chex.assert_trees_all_close(whole, singles, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_name", ["mlp", "convnet"])
def test_a_diverging_vmapped_copy_raises_naming_copy_and_step(model_name):
  program, steps, make_copies = setting(model_name, lr=1e8)
  with pytest.raises(train.NonFiniteLossError) as single:
    engine.run(program, make_copies(1)[0], None, steps)
  with pytest.raises(train.NonFiniteLossError, match=r"in stage 'copy 0' at step [1-9]") as vmapped:
    engine.run_copies(program, make_copies(2), None, steps, execution="vmapped")
  # The first copy's first bad step, as its single run finds it.
  assert str(vmapped.value) == str(single.value)

