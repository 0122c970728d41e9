"""Every registered model computes the same function after a random
permutation of its units: eval mode with non-trivial running statistics, and
masked (the permuted masked net equals the masked net)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import masks
from lmcjax import models
from lmcjax.configs.parts import model as model_part
from lmcjax.connectivity import permute as permute_lib
from lmcjax.connectivity import structure as structure_lib

# Small widths and inputs where a model's fields allow; other models (added
# later) run with their defaults on 8x8x3.
SMALL = {"mlp": [dict(hidden=(6, 5))],
         "convnet": [dict(width=4, depth=2, norm=norm, pooling=pooling)
                     for norm, pooling in (("instance", "avg"), ("batch", "max"),
                                           ("layer", "avg"), ("none", "max"))]}
SHAPES = {"mlp": (8, 8, 1), "lenet300": (28, 28, 1)}
CASES = [(name, kw) for name in models.names() for kw in SMALL.get(name, [{}])]


def random_variables(model, shape, seed: int = 0):
  """(params, batch_stats) drawn on the host (compiling flax's initializers
  takes longer than this whole test): He-scaled kernels, and every 1-D leaf
  (biases, norm scales and shifts, running statistics) non-trivial, so a leaf
  left unpermuted shows."""
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + shape))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = masks.path_name(path)
    if leaf.ndim > 1:
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name.endswith("var"):  # running variances stay positive
      value = rng.uniform(0.5, 2.0, leaf.shape)
    else:
      value = name.endswith("scale") + 0.5 * rng.normal(size=leaf.shape)
    return jnp.asarray(value, jnp.float32)

  variables = jax.tree_util.tree_map_with_path(draw, dict(abstract))
  return variables["params"], variables.get("batch_stats", {})


def random_mask(params, seed: int = 1):
  """0/1 on every kernel (70% kept), ones elsewhere."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf, prunable: jnp.asarray(rng.random(leaf.shape) < 0.7 if prunable
                                         else np.ones(leaf.shape), jnp.float32),
      params, masks.prunable_tree(params))


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{'-'.join(map(str, k.values()))}"
                                                for n, k in CASES])
def test_a_random_permutation_leaves_the_masked_eval_logits_unchanged(name, kw):
  model = models.create(model_part.get(name, **kw), 10)
  shape = SHAPES.get(name, (8, 8, 3))
  params, stats = random_variables(model, shape)
  mask = random_mask(params)
  structure = structure_lib.structure_of(model, {"params": params, "batch_stats": stats})
  perm = permute_lib.random_permutation(structure, jax.random.PRNGKey(2))
  p_params, p_stats, p_mask = permute_lib.permute(structure, perm, params, stats, mask)
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                       jax.tree.leaves(p_params))]
  assert sum(changed) >= len(structure.sizes)  # the permutation moved something

  x = jax.random.normal(jax.random.PRNGKey(3), (3,) + shape)
  logits = jax.jit(lambda p, s, m: model.apply({"params": masks.apply(p, m), "batch_stats": s},
                                               x, train=False))
  want = logits(params, stats, mask)
  scale = float(jnp.max(jnp.abs(want)))
  assert scale > 0
  chex.assert_trees_all_close(logits(p_params, p_stats, p_mask), want, rtol=1e-4,
                              atol=1e-5 * scale)
