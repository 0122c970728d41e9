"""Permutation alignment: structures, permuting masks, weight and activation
matching recover known permutations, and one-line errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import masks
from lmcjax import models
from lmcjax import validate
from lmcjax.configs.parts import model as model_part
from lmcjax.connectivity import activation_matching as am
from lmcjax.connectivity import permute as permute_lib
from lmcjax.connectivity import structure as structure_lib
from lmcjax.connectivity import weight_matching as wm
from test_permutation_invariance import random_mask, random_variables

NETS = {"mlp": (dict(hidden=(12, 10)), (8, 8, 1)),
        "convnet": (dict(width=6, depth=2, norm="batch"), (8, 8, 3))}


def _net(name, seed=0):
  kw, shape = NETS[name]
  model = models.create(model_part.get(name, **kw), 10)
  params, stats = random_variables(model, shape, seed)
  variables = {"params": params, "batch_stats": stats}
  return model, variables, structure_lib.structure_of(model, variables), shape


def _permuted(structure, variables, perm, mask=None):
  params, stats, mask = permute_lib.permute(structure, perm, variables["params"],
                                            variables["batch_stats"], mask)
  return {"params": params, "batch_stats": stats}, mask


def _assert_same_perm(got, want):
  assert set(got) == set(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_resnet_streams_are_shared_and_its_width_multiplier_widens_them():
  model = models.create(model_part.get("resnet20", width_multiplier=4), 10)
  params, stats = random_variables(model, (8, 8, 3))
  structure = structure_lib.structure_of(model, {"params": params, "batch_stats": stats})
  streams = {name: size for name, size in structure.sizes.items() if name.startswith("stream")}
  assert streams == {"stream_0": 64, "stream_1": 128, "stream_2": 256}
  assert len(structure.sizes) == 3 + 9  # and one inner permutation per block
  writers = [path for path, axes in structure.axes.items()
             if path[-1] == "kernel" and axes[-1] == (3, "stream_1", 1)]
  assert len(writers) == 3 + 1  # every block's second conv of stage 1, and its shortcut
  with pytest.raises(validate.InputError, match="width_multiplier must be an integer > 0"):
    models.create(model_part.get("resnet20", width_multiplier=0), 10)


def test_permuted_masks_keep_pruned_weights_zero_and_their_count_per_layer():
  model, variables, structure, _ = _net("convnet")
  mask = random_mask(variables["params"])
  pruned = {"params": masks.apply(variables["params"], mask),
            "batch_stats": variables["batch_stats"]}
  perm = permute_lib.random_permutation(structure, jax.random.PRNGKey(3))
  moved, moved_mask = _permuted(structure, pruned, perm, mask)
  for before, after, weights in zip(jax.tree.leaves(mask), jax.tree.leaves(moved_mask),
                                    jax.tree.leaves(moved["params"])):
    assert float(jnp.sum(before)) == float(jnp.sum(after))
    assert np.all(np.asarray(weights)[np.asarray(after) == 0] == 0)
  assert not np.array_equal(mask["Conv_1"]["kernel"], moved_mask["Conv_1"]["kernel"])
  back, back_mask = _permuted(structure, moved, permute_lib.invert(perm), moved_mask)
  np.testing.assert_array_equal(back_mask["Conv_1"]["kernel"], mask["Conv_1"]["kernel"])
  np.testing.assert_array_equal(back["params"]["Dense_0"]["kernel"],
                                pruned["params"]["Dense_0"]["kernel"])


@pytest.mark.parametrize("name", sorted(NETS))
def test_weight_matching_recovers_a_known_permutation(name):
  model, a, structure, _ = _net(name)
  mask_a = random_mask(a["params"])
  pi = permute_lib.random_permutation(structure, jax.random.PRNGKey(4))
  b, mask_b = _permuted(structure, a, pi, mask_a)
  perm, objective = wm.weight_matching(structure, a, b, mask_a=mask_a, mask_b=mask_b,
                                       key=jax.random.PRNGKey(5))
  _assert_same_perm(perm, permute_lib.invert(pi))
  aligned = masks.apply(_permuted(structure, b, perm)[0]["params"], mask_a)
  for x, y in zip(jax.tree.leaves(aligned), jax.tree.leaves(masks.apply(a["params"], mask_a))):
    np.testing.assert_array_equal(x, y)
  squared_norm = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(aligned))
  assert objective["inner_product"] == pytest.approx(squared_norm, rel=1e-5)
  assert objective["history"][-1] == objective["inner_product"]
  assert 2 <= objective["iterations"] <= 100  # the last iteration finds nothing better


def test_activation_matching_returns_the_identity_for_copies_and_undoes_a_permutation():
  model, a, structure, shape = _net("convnet")
  images = jax.random.normal(jax.random.PRNGKey(6), (40,) + shape)
  perm, objective = am.activation_matching(model, structure, a, a, images, chunk_examples=16)
  _assert_same_perm(perm, permute_lib.identity(structure))
  assert all(v == pytest.approx(1.0, abs=1e-4) for v in objective.values())
  pi = permute_lib.random_permutation(structure, jax.random.PRNGKey(7))
  perm, _ = am.activation_matching(model, structure, a, _permuted(structure, a, pi)[0], images)
  _assert_same_perm(perm, permute_lib.invert(pi))


def test_activation_matching_does_not_depend_on_the_chunking():
  """The last chunk overlaps the one before it; its repeated examples count once."""
  model, a, structure, shape = _net("mlp")
  b = _net("mlp", seed=1)[1]
  images = jax.random.normal(jax.random.PRNGKey(8), (50,) + shape)
  whole = am.activation_matching(model, structure, a, b, images, chunk_examples=64)
  chunked = am.activation_matching(model, structure, a, b, images, chunk_examples=7)
  _assert_same_perm(chunked[0], whole[0])
  assert chunked[1] == pytest.approx(whole[1], abs=1e-5)
  assert all(0.0 < v < 0.99 for v in whole[1].values())


def test_activation_matching_refuses_images_of_the_wrong_shape():
  model, a, structure, _ = _net("convnet")
  with pytest.raises(validate.InputError, match=r"images of shape \(8, 8, 1\) do not fit "
                                                r"model 'convnet'"):
    am.activation_matching(model, structure, a, a, jnp.zeros((4, 8, 8, 1)))


def test_a_permutation_of_the_wrong_size_is_one_line():
  _, a, structure, _ = _net("mlp")
  perm = dict(permute_lib.identity(structure), Dense_0=np.arange(3))
  with pytest.raises(validate.InputError, match="permutation 'Dense_0' has shape"):
    permute_lib.permute(structure, perm, a["params"])


class GroupedConvNet(nn.Module):
  """A grouped convolution mixes only the channels of its group."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=2)(x))
    return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def _undeclared(module, variables):
  raise NotImplementedError("its stream wiring is not written yet")


@pytest.mark.parametrize("permutation,match", [
    ("sequential", r"model 'toy_perm': layer Conv_1 \(Conv\) is not supported"),
    (_undeclared, "model 'toy_perm' does not declare its permutation structure"),
])
def test_an_undeclared_or_unsupported_structure_is_one_line_naming_the_model(permutation, match):
  models.register(GroupedConvNet, models.Registration(
      name="toy_perm", build=GroupedConvNet, defaults={}, norm="none", piecewise_linear=True,
      classifier="Dense_0", permutation=permutation))
  try:
    model = models.create(model_part.get("toy_perm"), 10)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(validate.InputError, match=match) as error:
      structure_lib.structure_of(model, variables)
    assert "\n" not in str(error.value)
  finally:
    models.unregister("toy_perm")
