"""The pure masked train step, optimizers, schedules, eval and determinism."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmcjax.configs import default
from lmcjax.configs.parts import model as model_part
from lmcjax.configs.parts import train as train_part
from lmcjax import engine
from lmcjax import masks
from lmcjax import models
from lmcjax import runtime
from lmcjax import train
from lmcjax import validate


def _setup(name="mlp", optimizer="sgd", norm="instance", **spec_kw):
  cfg = default.get_config()
  fields = dict(hidden=(32,)) if name == "mlp" else dict(width=8, norm=norm)
  cfg.model = model_part.get(name, **fields)
  spec = train_part.train_spec(optimizer=optimizer, lr=0.05, weight_decay=5e-3, **spec_kw)
  model = models.create(cfg.model, 10)
  params, stats = train.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
  tx = train.make_optimizer(spec, 100)
  state = train.create_state(params, stats, tx, jax.random.PRNGKey(1))
  step = train.make_train_step(model, tx, spec.augment, 10)
  x = jax.random.normal(jax.random.PRNGKey(2), (16, 8, 8, 1))
  y = jnp.arange(16) % 10
  return state, step, {"image": x, "label": y}


def _random_mask(params, keep=0.5, seed=0):
  prunable = masks.prunable_tree(params)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  out = [(jax.random.uniform(k, leaf.shape) < keep).astype(leaf.dtype) if p
         else jnp.ones_like(leaf)
         for k, leaf, p in zip(keys, leaves, jax.tree.leaves(prunable))]
  return jax.tree.unflatten(tree, out)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_pruned_weights_stay_exactly_zero_after_100_steps(optimizer, name):
  state, step, batch = _setup(name, optimizer, momentum=0.9)
  mask = _random_mask(state.params)
  state = state.replace(params=masks.apply(state.params, mask))
  step = jax.jit(step, donate_argnums=0)
  for _ in range(100):
    state, _ = step(state, batch, mask)
  for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(mask)):
    assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0.0)
  # The unpruned weights did move: the test is not vacuous.
  kernel = state.params["Dense_0"]["kernel"]
  assert np.count_nonzero(np.asarray(kernel)) > 0


def test_step_zeroes_pruned_weights_even_if_params_were_not_masked():
  """Masking gradients alone would leave a pruned weight at its old nonzero value
  (and weight decay would then move it); the step re-masks the params too."""
  state, step, batch = _setup(momentum=0.9)
  mask = _random_mask(state.params)
  state, _ = jax.jit(step)(state, batch, mask)
  for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(mask)):
    assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0.0)


def test_train_step_lowers_loss_and_does_not_retrace():
  state, step, batch = _setup()
  traced = jax.jit(chex.assert_max_traces(step, n=1))
  first = None
  for _ in range(30):
    state, metrics = traced(state, batch, None)
    first = first if first is not None else float(metrics["loss"])
  assert float(metrics["loss"]) < 0.5 * first
  assert int(state.step) == 30


def test_batchnorm_statistics_are_carried_in_the_state():
  state, step, batch = _setup("convnet", norm="batch")
  new_state, _ = jax.jit(step)(state, batch, None)
  before, after = jax.tree.leaves(state.batch_stats), jax.tree.leaves(new_state.batch_stats)
  assert before and any(not np.allclose(a, b) for a, b in zip(before, after))




def test_multistep_schedule_decays_at_two_thirds_and_five_sixths():
  spec = train_part.train_spec(lr=0.1, schedule="multistep")
  sched = train.make_schedule(spec, 600)
  np.testing.assert_allclose([sched(0), sched(399), sched(400), sched(499), sched(500)],
                             [0.1, 0.1, 0.02, 0.02, 0.004], rtol=1e-6)


def test_warmup_then_cosine():
  spec = train_part.train_spec(lr=1.0, schedule="cosine", warmup_epochs=1.0, epochs=10)
  sched = train.make_schedule(spec, 100)
  np.testing.assert_allclose([sched(0), sched(5), sched(10)], [0.0, 0.5, 1.0], atol=1e-6)
  assert float(sched(99)) < 0.01


def test_eval_matches_direct_computation_with_padding():
  state, _, _ = _setup()
  model = models.create(_cfg_model(), 10)
  x = jax.random.normal(jax.random.PRNGKey(5), (37, 8, 8, 1))
  y = jnp.arange(37) % 10
  out = jax.jit(train.make_eval_fn(model, batch_size=10))(state.params, state.batch_stats, x, y)
  logits = model.apply({"params": state.params}, x)
  want_loss = float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)))
  want_acc = float(jnp.mean(jnp.argmax(logits, -1) == y))
  np.testing.assert_allclose(float(out["loss"]), want_loss, rtol=1e-5)
  np.testing.assert_allclose(float(out["accuracy"]), want_acc)


def _cfg_model():
  cfg = default.get_config().model
  cfg.name, cfg.hidden = "mlp", (32,)
  return cfg


def test_batch_order_covers_each_example_once_per_epoch_and_is_a_function_of_step():
  order = train.BatchOrder(jax.random.PRNGKey(0), 10, 4)
  stream = np.concatenate([order.indices(s) for s in range(5)])  # 20 = 2 epochs
  np.testing.assert_array_equal(np.sort(stream[:10]), np.arange(10))
  np.testing.assert_array_equal(np.sort(stream[10:]), np.arange(10))
  fresh = train.BatchOrder(jax.random.PRNGKey(0), 10, 4)
  np.testing.assert_array_equal(fresh.indices(3), order.indices(3))
  np.testing.assert_array_equal(order.block(1, 2), np.stack([order.indices(1), order.indices(2)]))


def test_scan_steps_equals_the_python_loop():
  state, step, batch = _setup()
  images, labels = batch["image"], batch["label"]
  order = train.BatchOrder(jax.random.PRNGKey(0), 16, 4)
  looped = state
  for s in range(6):
    idx = order.indices(s)
    looped, _ = jax.jit(step)(looped, {"image": images[idx], "label": labels[idx]}, None)
  scanned, metrics = jax.jit(lambda st, ix: train.scan_steps(step, st, None, images, labels, ix))(
      state, jnp.asarray(order.block(0, 6)))
  chex.assert_trees_all_close(scanned.params, looped.params, rtol=1e-5, atol=1e-6)
  assert metrics["loss"].shape == (6,)


def test_nonfinite_loss_names_stage_and_step(smoke_config):
  smoke_config.train.lr = 1e8
  smoke_config.train.momentum = 0.0
  smoke_config.train.schedule = "constant"
  smoke_config.log_every_steps = 5
  s = runtime.setup(smoke_config)
  with pytest.raises(train.NonFiniteLossError, match=r"in stage 'boom' at step \d+"):
    runtime.train_run(s, smoke_config.train, s.init_params, s.init_batch_stats, None,
                         seed_path=("x",), stage="boom")


@pytest.mark.parametrize("field,value,match", [
    ("lr", 0.0, "train.lr must be > 0"),
    ("lr", -1.0, "train.lr must be > 0"),
    ("epochs", 0, "train.epochs must be > 0"),
    ("batch_size", -4, "train.batch_size must be > 0"),
    ("optimizer", "lion", "train.optimizer='lion'"),
    ("milestones", (0.5, 1.5), "milestones"),
])
def test_bad_train_spec(field, value, match):
  spec = train_part.train_spec()
  spec[field] = value
  with pytest.raises(validate.InputError, match=match):
    train.check_spec(spec)


def test_same_config_twice_is_bit_identical(smoke_config):
  smoke_config.train.epochs = 1
  runs = []
  for _ in range(2):
    engine._train_program.cache_clear()  # pylint: disable=protected-access  # a fresh compile must not change the result
    s = runtime.setup(smoke_config)
    runs.append(runtime.train_run(s, smoke_config.train, s.init_params, s.init_batch_stats,
                                     None, seed_path=("dense",), stage="train").state.params)
  chex.assert_trees_all_equal(*runs)


def test_augmented_step_with_dsa_and_cutmix_runs():
  model = models.create(model_part.get("convnet", width=4), 10)
  spec = train_part.train_spec()
  spec.augment.kind, spec.augment.cutmix_prob = "dsa", 1.0
  params, stats = train.init_variables(model, jax.random.PRNGKey(0), (8, 8, 3))
  tx = train.make_optimizer(spec, 10)
  step = jax.jit(train.make_train_step(model, tx, spec.augment, 10))
  state = train.create_state(params, stats, tx, jax.random.PRNGKey(1))
  batch = {"image": jax.random.normal(jax.random.PRNGKey(2), (8, 8, 8, 3)), "label": jnp.arange(8)}
  for _ in range(3):
    state, metrics = step(state, batch, None)
  assert np.isfinite(float(metrics["loss"]))
