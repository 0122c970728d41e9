"""Model output shapes and the prunable-weight counts of the paper's nets."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax.configs import default
from lmcjax.configs.parts import model as model_part
from lmcjax import masks
from lmcjax import models
from lmcjax import validate


def _model(name, **kw):
  return models.create(model_part.get(name, **kw), 10)


def _abstract_params(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape)))


def _prunable_count(variables, scope="all_kernels", classifier=""):
  params = variables["params"]
  flags = jax.tree.leaves(masks.prunable_tree(params, scope, classifier))
  return sum(int(np.prod(leaf.shape))
             for leaf, f in zip(jax.tree.leaves(params), flags) if f)


@pytest.mark.parametrize("name,kw,count", [
    ("convnet", dict(depth=3, width=128, norm="instance"), 318_848),
    ("resnet10", {}, 1_226_080),
    ("resnet18", {}, 2_792_800),
])
def test_paper_prunable_counts_on_cifar_shapes(name, kw, count):
  assert _prunable_count(_abstract_params(_model(name, **kw), (32, 32, 3))) == count


def test_lenet300_counts_and_output_layer_scope():
  model = _model("lenet300")
  v = _abstract_params(model, (28, 28, 1))
  assert _prunable_count(v) == 784 * 300 + 300 * 100 + 100 * 10
  assert models.info(model).classifier == "Dense_2"
  assert _prunable_count(v, "hidden_kernels", "Dense_2") == 784 * 300 + 300 * 100
  with pytest.raises(validate.InputError, match="classifier head"):
    _prunable_count(v, "hidden_kernels", "head")
  assert _prunable_count(v, "conv_kernels") == 0


@pytest.mark.parametrize("name,shape,kw", [
    ("mlp", (28, 28, 1), dict(hidden=(16,))),
    ("convnet", (28, 28, 1), dict(width=8, norm="instance", pooling="avg")),
    ("convnet", (32, 32, 3), dict(width=8, norm="batch", pooling="max")),
    ("convnet", (32, 32, 3), dict(width=8, norm="layer")),
    ("convnet", (32, 32, 3), dict(width=8, norm="none", depth=2)),
    ("resnet20", (32, 32, 3), {}),
    ("resnet10", (28, 28, 1), {}),
    ("vgg16", (32, 32, 3), {}),
    ("alexnet", (28, 28, 1), {}),
    ("alexnet", (32, 32, 3), {}),
])
def test_output_shapes(name, shape, kw):
  model = _model(name, **kw)
  out = jax.eval_shape(lambda: model.apply(
      model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape)), jnp.zeros((3,) + shape)))
  assert out.shape == (3, 10)


def test_small_models_run_and_batchnorm_collects_statistics():
  model = _model("convnet", width=4, norm="batch")
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert "batch_stats" in variables
  logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (4, 10) and bool(jnp.all(jnp.isfinite(logits)))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                         updates["batch_stats"])
  assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize("field,value,match", [
    ("name", "resnet1000", "model.name='resnet1000'"),
    ("norm", "group", "model.norm='group'"),
    ("width", 0, "model.width must be > 0"),
    ("hidden", (8,), "model.hidden is not a field of model 'convnet'"),
    ("name", "mlp", "model.depth is not a field of model 'mlp'"),
])
def test_bad_model_config(field, value, match):
  cfg = model_part.get("convnet")
  cfg[field] = value
  with pytest.raises(validate.InputError, match=match):
    models.create(cfg, 10)


def test_switching_model_by_name_alone_is_refused_with_the_way_to_do_it():
  cfg = default.get_config().model  # lenet300: no fields of its own
  cfg.name = "convnet"
  with pytest.raises(validate.InputError,
                     match=r"lacks depth, norm, pooling, width.*default.py:convnet"):
    models.check_config(cfg)
  assert default.get_config("convnet").model == model_part.get("convnet")


def test_every_model_has_config_defaults_for_exactly_its_fields():
  for name in models.names():
    cfg = model_part.get(name)
    assert set(cfg.keys()) - {"name"} == set(models.defaults(name)), name
    models.check_config(cfg)


@pytest.mark.parametrize("cfg,expected", [
    (dict(name="resnet20"), True), (dict(name="vgg16"), True),
    (dict(name="mlp", hidden=(4,)), False),
    (dict(name="convnet", norm="batch"), True), (dict(name="convnet", norm="instance"), False)])
def test_keeps_running_stats(cfg, expected):
  cfg = model_part.get(**cfg)
  assert models.info_for_config(cfg).keeps_running_stats == expected
  variables = _abstract_params(models.create(cfg, 10), (32, 32, 3))
  assert ("batch_stats" in variables) == expected


@pytest.mark.parametrize("shape", [(4, 6, 6, 5), (2, 7, 3, 3)])
def test_instance_norm_is_flax_group_norm_with_one_group_per_channel(shape):
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = 3.0 * jax.random.normal(keys[0], shape) + jax.random.normal(keys[1], shape[-1:])
  params = {"params": {"scale": jax.random.normal(keys[2], shape[-1:]),
                       "bias": jax.random.normal(keys[3], shape[-1:])}}
  flax_norm = nn.GroupNorm(num_groups=shape[-1], epsilon=1e-5)
  ours = models.InstanceNorm(epsilon=1e-5)
  chex.assert_trees_all_equal_shapes(ours.init(keys[0], x), flax_norm.init(keys[0], x))
  chex.assert_trees_all_close(ours.apply(params, x), flax_norm.apply(params, x), atol=1e-5)
  loss = lambda norm: lambda p, x: jnp.sum(jnp.sin(norm.apply(p, x)))
  chex.assert_trees_all_close(jax.grad(loss(ours), (0, 1))(params, x),
                              jax.grad(loss(flax_norm), (0, 1))(params, x), atol=1e-4)


def test_instance_norm_keeps_the_group_norm_parameter_names():
  """Checkpoints saved while instance norm was nn.GroupNorm still load."""
  params = _abstract_params(_model("convnet", width=4, norm="instance"), (28, 28, 1))["params"]
  assert sorted(params) == ["Conv_0", "Conv_1", "Conv_2", "Dense_0",
                            "GroupNorm_0", "GroupNorm_1", "GroupNorm_2"]
  assert sorted(params["GroupNorm_0"]) == ["bias", "scale"]


def test_instance_norm_names_count_per_parent_module():
  """A block's norms are GroupNorm_0..2 inside the block, as flax's automatic
  names were when instance norm was nn.GroupNorm."""
  model = models.ResNet(10, (4, 8), (1, 1), norm="instance")
  params = _abstract_params(model, (8, 8, 3))["params"]
  assert "GroupNorm_0" in params and "GroupNorm_1" not in params
  assert sorted(k for k in params["BasicBlock_1"] if k.startswith("GroupNorm")) == [
      "GroupNorm_0", "GroupNorm_1", "GroupNorm_2"]
