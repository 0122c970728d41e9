"""Pruning math: exact counts, 1 - 0.8^k, global vs layerwise, ties, random control."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import masks
from lmcjax import pruning
from lmcjax import validate

LENET_300_100 = ((784, 300), (300, 100), (100, 10))


def net(shapes, scales=None, seed=0):
  """A params tree of Dense layers with kernels of `shapes` (scaled per layer) and biases."""
  r = np.random.default_rng(seed)
  scales = scales or [1.0] * len(shapes)
  return {f"Dense_{i}": {"kernel": jnp.asarray(s * r.normal(size=shape), jnp.float32),
                         "bias": jnp.asarray(r.normal(size=shape[1]), jnp.float32)}
          for i, (shape, s) in enumerate(zip(shapes, scales))}


def kept_per_layer(mask, prunable):
  return [k for k, _ in masks.counts(mask, prunable).values()]


@pytest.mark.parametrize("method", pruning.METHODS)
def test_each_round_removes_a_fifth_of_the_remaining_weights_exactly(method):
  params = net(((30, 20), (20, 7)))
  prunable = masks.prunable_tree(params)
  mask = masks.ones_like(params)
  for _ in range(6):
    before = kept_per_layer(mask, prunable)
    new = pruning.prune(pruning.magnitude_scores(params), mask, prunable, 0.2, method)
    after = kept_per_layer(new, prunable)
    if method == "global":
      assert sum(after) == sum(before) - pruning.num_to_prune(sum(before), 0.2)
    else:
      assert after == [b - pruning.num_to_prune(b, 0.2) for b in before]
    # Nested: a pruned weight never comes back.
    assert all(np.all(np.asarray(n) <= np.asarray(m)) for n, m in
               zip(jax.tree.leaves(new), jax.tree.leaves(mask)))
    mask = new


def test_lenet_sparsity_is_one_minus_point_eight_to_the_k():
  params = net(LENET_300_100)
  prunable = masks.prunable_tree(params)
  mask, sparsities = masks.ones_like(params), []
  scores = pruning.magnitude_scores(params)
  for _ in range(9):
    mask = pruning.prune_global(scores, mask, prunable, 0.2)
    sparsities.append(masks.sparsity(mask, prunable))
  assert round(100 * sparsities[3], 1) == 59.0
  assert round(100 * sparsities[8], 1) == 86.6
  total = sum(a * b for a, b in LENET_300_100)
  for k, s in enumerate(sparsities, start=1):
    # Count rounding moves each round by at most half a weight.
    assert abs(s - pruning.expected_sparsity(k)) <= k * 0.5 / total


def test_global_pruning_removes_the_smallest_magnitudes_across_layers():
  # Layer 1's weights are 100x smaller: global pruning takes mostly from it,
  # layerwise pruning takes 20% from each.
  params = net(((40, 30), (30, 20)), scales=[1.0, 0.01])
  prunable = masks.prunable_tree(params)
  scores = pruning.magnitude_scores(params)
  dense = masks.ones_like(params)
  glob = pruning.prune_global(scores, dense, prunable)
  layer = pruning.prune_layerwise(scores, dense, prunable)
  assert sum(kept_per_layer(glob, prunable)) == 1440
  assert kept_per_layer(glob, prunable)[1] < 300  # most of the 360 removed come from layer 1
  assert kept_per_layer(layer, prunable) == [960, 480]
  kept = np.concatenate([np.abs(np.asarray(p))[np.asarray(m) > 0].ravel() for p, m in
                         zip(jax.tree.leaves(params), jax.tree.leaves(glob)) if p.ndim == 2])
  gone = np.concatenate([np.abs(np.asarray(p))[np.asarray(m) == 0].ravel() for p, m in
                         zip(jax.tree.leaves(params), jax.tree.leaves(glob)) if p.ndim == 2])
  assert gone.max() <= kept.min()


def test_ties_go_to_the_lowest_flat_index_first():
  params = {"Dense_0": {"kernel": jnp.ones((4, 5)), "bias": jnp.zeros(5)},
            "Dense_1": {"kernel": jnp.ones((5, 2)), "bias": jnp.zeros(2)}}
  prunable = masks.prunable_tree(params)
  scores = pruning.magnitude_scores(params)
  mask = pruning.prune_global(scores, masks.ones_like(params), prunable, 0.2)
  # 30 weights, 6 removed: the first six entries of the first kernel in row-major order.
  first = np.asarray(mask["Dense_0"]["kernel"]).ravel()
  np.testing.assert_array_equal(first, [0] * 6 + [1] * 14)
  np.testing.assert_array_equal(np.asarray(mask["Dense_1"]["kernel"]), 1)
  again = pruning.prune_global(scores, masks.ones_like(params), prunable, 0.2)
  jax.tree.map(np.testing.assert_array_equal, mask, again)


def test_masks_keep_non_prunable_leaves_and_dtype():
  params = net(((6, 5), (5, 3)))
  prunable = masks.prunable_tree(params)
  mask = pruning.prune_layerwise(pruning.magnitude_scores(params), masks.ones_like(params),
                                 prunable)
  for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(prunable)):
    assert m.dtype == jnp.float32
    assert set(np.unique(np.asarray(m))) <= {0.0, 1.0}
    if not p:
      np.testing.assert_array_equal(np.asarray(m), 1)


def test_random_control_keeps_layer_counts_but_not_positions():
  params = net(((50, 40), (40, 10)), scales=[1.0, 0.01])
  prunable = masks.prunable_tree(params)
  imp_mask = masks.ones_like(params)
  for _ in range(3):
    imp_mask = pruning.prune_global(pruning.magnitude_scores(params), imp_mask, prunable)
  key = jax.random.PRNGKey(3)
  rand = pruning.random_with_layer_counts(key, imp_mask, prunable)
  assert masks.counts(rand, prunable) == masks.counts(imp_mask, prunable)
  overlap = np.mean(np.asarray(rand["Dense_0"]["kernel"])
                    == np.asarray(imp_mask["Dense_0"]["kernel"]))
  assert overlap < 0.9
  jax.tree.map(np.testing.assert_array_equal, rand,
               pruning.random_with_layer_counts(key, imp_mask, prunable))
  other = pruning.random_with_layer_counts(jax.random.PRNGKey(4), imp_mask, prunable)
  assert not np.array_equal(np.asarray(other["Dense_0"]["kernel"]),
                            np.asarray(rand["Dense_0"]["kernel"]))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_fraction_outside_open_unit_interval_is_rejected(fraction):
  params = net(((4, 3),))
  prunable = masks.prunable_tree(params)
  with pytest.raises(validate.InputError, match="prune fraction"):
    pruning.prune_global(pruning.magnitude_scores(params), masks.ones_like(params), prunable,
                         fraction)
