"""Vmapped SGD-noise branches equal sequentially trained copies; masks hold."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import branches
from lmcjax.configs import default
from lmcjax.configs.parts import model as model_part
from lmcjax.configs.parts import train as train_part
from lmcjax import runtime
from lmcjax import validate


@pytest.fixture(scope="module")
def setup():
  """sklearn digits (8x8), a 16-unit MLP, one epoch with crop+flip augmentation."""
  config = default.get_config()
  config.data.name = "digits"
  config.model = model_part.get("mlp", hidden=(16,))
  config.train = train_part.train_spec(epochs=1, batch_size=64, lr=0.05)
  config.train.augment.kind = "crop_flip"  # so the augmentation seed matters too
  config.log_every_steps = 0
  return runtime.setup(config)


def _mask(s):
  def keep(p, prunable, k):
    if not prunable:
      return jnp.ones_like(p)
    return (jax.random.uniform(k, p.shape) < 0.4).astype(p.dtype)
  leaves = jax.tree.leaves(s.init_params)
  keys = jax.tree.unflatten(jax.tree.structure(s.init_params),
                            list(jax.random.split(jax.random.PRNGKey(0), len(leaves))))
  return jax.tree.map(keep, s.init_params, s.prunable, keys)


def test_vmapped_branches_equal_sequential_train_runs(setup):
  s = setup
  mask = _mask(s)
  got = branches.train_branches(s, s.config.train, s.init_params, s.init_batch_stats, mask,
                                prefix=("test",), num_copies=3, chunk=2)
  for i, path in enumerate(got.seed_paths):
    assert path == ("test", "branch", i)
    want = runtime.train_run(s, s.config.train, s.init_params, s.init_batch_stats, mask,
                                seed_path=path, stage="branch")
    for g, w in zip(jax.tree.leaves(jax.tree.map(lambda a: a[i], got.params)),
                    jax.tree.leaves(want.state.params)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)
  # The copies differ: the SGD noise is really different.
  first = got.params["Dense_0"]["kernel"]
  assert not np.allclose(first[0], first[1], atol=1e-3)
  assert got.final_loss.shape == (3,) and np.all(np.isfinite(got.final_loss))


def test_masks_hold_in_every_copy(setup):
  s = setup
  mask = _mask(s)
  got = branches.train_branches(s, s.config.train, s.init_params, s.init_batch_stats, mask,
                                prefix=("mask",), num_copies=2, chunk=2)
  for p, m in zip(jax.tree.leaves(got.params), jax.tree.leaves(mask)):
    pruned = np.broadcast_to(np.asarray(m) == 0, p.shape)
    assert np.all(np.asarray(p)[pruned] == 0.0)


@pytest.mark.parametrize("kwargs,match", [(dict(num_copies=0), "num_branches must be > 0"),
                                          (dict(chunk=0), "chunk must be > 0")])
def test_bad_input_is_a_clear_error(setup, kwargs, match):
  s = setup
  args = dict(prefix=("x",), num_copies=2, chunk=2)
  args.update(kwargs)
  with pytest.raises(validate.InputError, match=match):
    branches.train_branches(s, s.config.train, s.init_params, s.init_batch_stats, None, **args)


def test_a_mask_for_another_model_is_rejected(setup):
  s = setup
  wrong = jax.tree.map(lambda p: jnp.ones(p.shape + (1,)), s.init_params)
  with pytest.raises(validate.InputError, match="has shape"):
    branches.train_branches(s, s.config.train, s.init_params, s.init_batch_stats, wrong,
                            prefix=("x",), num_copies=1, chunk=1)
