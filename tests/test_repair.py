"""REPAIR: repaired statistics hit their targets layer by layer, the endpoints
come back, masked weights stay zero, where it does not apply (BatchNorm,
instance norm: the algebra checked numerically) and bad input."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import masks
from lmcjax import models
from lmcjax import train
from lmcjax import validate
from lmcjax.connectivity import repair

SHAPE = (8, 8, 1)
# 40 images in chunks of 16: the last chunk is padded, which the statistics must ignore.
NUM_IMAGES, CHUNK = 40, 16
NETS = {
    "mlp": lambda: models.MLP(10, (16, 12)),
    "convnet": lambda: models.ConvNet(10, depth=2, width=8, norm="none"),
    "convnet_layer_norm": lambda: models.ConvNet(10, depth=2, width=8, norm="layer"),
    "resnet_no_bias": lambda: models.ResNet(10, (4,), (1,), norm="none"),
}


def _images(seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (NUM_IMAGES,) + SHAPE)


def _ends(model, seeds=(0, 1)):
  out = []
  for seed in seeds:
    params, stats = train.init_variables(model, jax.random.PRNGKey(seed), SHAPE)
    out.append({"params": params, "batch_stats": stats})
  return out


def _lerp(a, b, alpha):
  return jax.tree.map(lambda x, y: (1 - alpha) * x + alpha * y, a, b)


def _targets(model, ends, alpha, images):
  """Each repaired layer's (mean, std) target: the endpoints' statistics, interpolated."""
  sa, sb = (repair.channel_statistics(model, e, images, chunk_examples=CHUNK) for e in ends)
  return {name: _lerp(sa[name], sb[name], alpha) for name in sa}


def _has_bias(params, name):
  node = params
  for key in name.split("/"):
    node = node[key]
  return "bias" in node


def test_statistics_equal_a_direct_computation_for_any_chunking():
  x = _images()
  mlp = models.MLP(10, (16,))
  params = _ends(mlp)[0]["params"]
  dense = np.asarray(x).reshape(NUM_IMAGES, -1) @ params["Dense_0"]["kernel"]
  dense = dense + params["Dense_0"]["bias"]
  conv = models.ConvNet(10, depth=1, width=8, norm="none")
  conv_params = _ends(conv)[0]["params"]
  direct = nn.Conv(8, (3, 3), padding=1).apply({"params": conv_params["Conv_0"]}, x)
  for chunk in (7, NUM_IMAGES):
    got = repair.channel_statistics(mlp, {"params": params}, x, chunk_examples=chunk)["Dense_0"]
    np.testing.assert_allclose(got[0], dense.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], dense.std(0), rtol=1e-5, atol=1e-6)
    got = repair.channel_statistics(conv, {"params": conv_params}, x,
                                    chunk_examples=chunk)["Conv_0"]
    np.testing.assert_allclose(got[0], np.mean(direct, (0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], np.std(direct, (0, 1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("net", sorted(NETS))
def test_repaired_statistics_equal_the_targets_layer_by_layer(net):
  model, x, alpha = NETS[net](), _images(), 0.5
  ends = _ends(model)
  targets = _targets(model, ends, alpha, x)
  repaired = repair.repair(model, *ends, alpha, x, chunk_examples=CHUNK)
  got = repair.channel_statistics(model, repaired, x, chunk_examples=CHUNK)
  naive = repair.channel_statistics(model, _lerp(*ends, alpha), x, chunk_examples=CHUNK)
  assert list(got) == list(targets) and len(got) >= 2
  for name, (mean, sd) in targets.items():
    # Scale-only layers (no bias) reach the target std; their mean scales with it.
    if _has_bias(repaired["params"], name):
      np.testing.assert_allclose(got[name][0], mean, rtol=1e-4, atol=1e-5 * sd.max(), err_msg=name)
    np.testing.assert_allclose(got[name][1], sd, rtol=1e-4, atol=1e-6, err_msg=name)
  # Not vacuous: the naive midpoint is off its targets somewhere.
  worst = max(np.max(np.abs(naive[n][1] / targets[n][1] - 1)) for n in targets)
  assert worst > 0.05, worst


@pytest.mark.parametrize("net", ["mlp", "convnet"])
def test_alpha_zero_and_one_return_the_endpoints(net):
  model, x = NETS[net](), _images()
  ends = _ends(model)
  path = repair.repair_path(model, *ends, [0.0, 1.0], x, chunk_examples=CHUNK)
  for i, end in enumerate(ends):
    chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], path), end, rtol=1e-5,
                                atol=1e-6)


@pytest.mark.parametrize("execution", ["vmapped", "sequential"])
def test_path_rows_are_the_repair_at_each_alpha(execution):
  model, x = NETS["mlp"](), _images()
  ends = _ends(model)
  alphas = [0.25, 0.5, 0.75]
  path = repair.repair_path(model, *ends, alphas, x, chunk_examples=CHUNK, chunk_alphas=2,
                            execution=execution)
  chex.assert_tree_shape_prefix(path["params"], (len(alphas),))
  one = repair.repair(model, *ends, 0.5, x, chunk_examples=CHUNK)
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], path), one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("net", ["mlp", "convnet"])
def test_masked_weights_stay_exactly_zero(net):
  model, x = NETS[net](), _images()
  ends = _ends(model)
  params = ends[0]["params"]
  prunable = masks.prunable_tree(params)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
  mask = jax.tree.unflatten(tree, [
      (jax.random.uniform(k, leaf.shape) < 0.5).astype(leaf.dtype) if p else jnp.ones_like(leaf)
      for k, leaf, p in zip(keys, leaves, jax.tree.leaves(prunable))])
  first = sorted(params)[0]  # Conv_0 or Dense_0: one of its channels pruned whole (dead)
  mask[first]["kernel"] = mask[first]["kernel"].at[..., 0].set(0.0)
  repaired = repair.repair(model, *ends, 0.5, x, mask=mask, chunk_examples=CHUNK)
  for p, m in zip(jax.tree.leaves(repaired["params"]), jax.tree.leaves(mask)):
    assert np.all(np.isfinite(p))
    assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0.0)
  # The dead channel is constant: moved to its target mean, not rescaled.
  masked_ends = [{"params": masks.apply(e["params"], mask)} for e in ends]
  target = _targets(model, masked_ends, 0.5, x)[first]
  got = repair.channel_statistics(model, repaired, x, chunk_examples=CHUNK)[first]
  np.testing.assert_allclose(got[0][0], target[0][0], rtol=1e-5, atol=1e-6)
  assert got[1][0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("model", [models.ConvNet(10, depth=1, width=4, norm="batch"),
                                   models.VGG(10, (4, "M"))])
def test_batchnorm_is_refused_with_one_line(model):
  with pytest.raises(validate.InputError, match="bn_mode='reset'") as err:
    repair.check_applies(model)
  assert "\n" not in str(err.value)
  with pytest.raises(validate.InputError, match="bn_mode='reset'"):
    repair.repair(model, *_ends(model), 0.5, _images())


def _with_norm_affine(variables, seed):
  """Instance-norm scales drawn positive (as trained ones stay) and biases drawn
  nonzero, so the claim is checked away from their init (ones, zeros)."""
  params = dict(variables["params"])
  for i, name in enumerate(n for n in sorted(params) if n.startswith("GroupNorm")):
    k_scale, k_bias = jax.random.split(jax.random.PRNGKey(100 * seed + i))
    width = params[name]["scale"].shape
    params[name] = {"scale": jax.random.uniform(k_scale, width, minval=0.5, maxval=2.0),
                    "bias": jax.random.normal(k_bias, width)}
  return {"params": params}


def test_instance_norm_is_refused_and_repair_would_change_nothing():
  model, x, alpha = models.ConvNet(10, depth=2, width=8, norm="instance"), _images(), 0.3
  with pytest.raises(validate.InputError, match="instance norm") as err:
    repair.check_applies(model)
  assert "\n" not in str(err.value)
  ends = [_with_norm_affine(e, s) for s, e in enumerate(_ends(model))]
  mid = _lerp(*ends, alpha)
  stats = [repair.channel_statistics(model, v, x, layers=layers, chunk_examples=CHUNK)
           for layers in ("linear", "norm") for v in ends + [mid]]
  (conv_a, conv_b, conv_mid), (norm_a, norm_b, norm_mid) = stats[:3], stats[3:]
  # Before the norm the midpoint's channels do collapse...
  assert np.mean(conv_mid["Conv_1"][1] / _lerp(conv_a, conv_b, alpha)["Conv_1"][1]) < 0.9
  # ...but after it each channel's mean and std are the interpolated bias and
  # scale, which with scales of one sign are the endpoints' statistics
  # interpolated: REPAIR's target, so it would leave every channel alone. Up
  # to eps: the std is |scale| sqrt(E v / (v + eps)), v each example's channel
  # variance before the norm, ~1e-2 at this init: a 2e-4 effect.
  for name in ("GroupNorm_0", "GroupNorm_1"):
    np.testing.assert_allclose(norm_mid[name][0], mid["params"][name]["bias"], atol=1e-5)
    np.testing.assert_allclose(norm_mid[name][1], np.abs(mid["params"][name]["scale"]),
                               rtol=1e-3)
    target = _lerp(norm_a[name], norm_b[name], alpha)
    np.testing.assert_allclose(norm_mid[name][0], target[0], atol=1e-5)
    np.testing.assert_allclose(norm_mid[name][1], target[1], rtol=1e-3)


def test_instance_norm_undoes_a_channel_rescaling_before_it():
  x = _images()
  gain = jax.random.uniform(jax.random.PRNGKey(7), (8,), minval=0.3, maxval=3.0)
  shift = jax.random.normal(jax.random.PRNGKey(8), (8,))
  change = {}
  for norm in ("instance", "none"):
    model = models.ConvNet(10, depth=2, width=8, norm=norm)
    variables = _ends(model)[0]
    params = dict(variables["params"])
    params["Conv_0"] = {"kernel": params["Conv_0"]["kernel"] * gain,
                        "bias": params["Conv_0"]["bias"] * gain + shift}
    before = model.apply(variables, x)
    after = model.apply({**variables, "params": params}, x)
    change[norm] = float(jnp.max(jnp.abs(after - before)) / jnp.max(jnp.abs(before)))
  assert change["instance"] < 1e-3, change  # up to eps
  assert change["none"] > 0.1, change  # the same rescaling without the norm matters


def test_bad_images_are_one_line():
  model = NETS["mlp"]()
  ends = _ends(model)
  for images, match in ((jnp.zeros((4, 6, 6, 1)), r"images of shape \(6, 6, 1\) do not fit"),
                        (jnp.zeros((0,) + SHAPE), "non-empty batch")):
    with pytest.raises(validate.InputError, match=match) as err:
      repair.repair(model, *ends, 0.5, images)
    assert "\n" not in str(err.value)
  with pytest.raises(validate.InputError, match="chunk_examples"):
    repair.repair(model, *ends, 0.5, _images(), chunk_examples=0)
  with pytest.raises(validate.InputError, match="alpha must be a number"):
    repair.repair(model, *ends, [0.5], _images())
