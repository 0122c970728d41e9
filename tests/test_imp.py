"""The IMP stage: rewinding, every mask source, data cost, bad input, kill-and-resume."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmcjax import checkpoints
from lmcjax.configs import imp_smoke
from lmcjax import dense
from lmcjax import imp
from lmcjax import logs
from lmcjax import masks
from lmcjax import pipeline
from lmcjax import pruning
from lmcjax import runtime
from lmcjax import synthetic
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def config(**imp_overrides):
  c = imp_smoke.get_config()
  c.imp.update(imp_overrides)
  return c


@pytest.fixture(scope="module")
def setup():
  return runtime.setup(config())


def write_distilled(path, s, per_class=10, image_shape=None, classes=None):
  """A stand-in distilled set: the first real training images of each class."""
  classes = s.dataset.num_classes if classes is None else classes
  idx = np.concatenate([np.flatnonzero(np.asarray(s.y_train) == c)[:per_class]
                        for c in range(classes)])
  images = np.asarray(s.x_train)[idx]
  if image_shape:
    images = np.zeros((len(idx),) + image_shape, np.float32)
  synthetic.save(path, images, np.asarray(s.y_train)[idx],
                 {"method": "real_subset", "ipc": per_class, "dataset": s.dataset.name,
                  "mean": s.dataset.mean, "std": s.dataset.std, "factor": 1})


def run(s, c, workdir):
  os.makedirs(workdir, exist_ok=True)
  return imp.run_stage(runtime.Setup(**{**s.__dict__, "config": c}), str(workdir),
                       logs.MetricsLog(str(workdir)))


def leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_round_start_is_the_rewind_point_times_the_mask(setup):
  s = setup
  r = np.random.default_rng(0)
  rewind = {"params": jax.tree.map(lambda p: jnp.asarray(r.normal(size=p.shape), p.dtype),
                                   s.init_params),
            "batch_stats": {}}
  trained = {"params": jax.tree.map(lambda p: p + 1.0, rewind["params"]), "batch_stats": {}}
  mask = pruning.prune_global(pruning.random_scores(jax.random.PRNGKey(0), s.init_params),
                              masks.ones_like(s.init_params), s.prunable, 0.5)
  full, _ = imp.round_start(rewind, trained, mask, s.prunable, rewind_non_prunable=True)
  jax.tree.map(lambda got, w, m: np.testing.assert_array_equal(got, np.asarray(w) * np.asarray(m)),
               full, rewind["params"], mask)
  # The seed paper's partial rewind: kernels from the rewind point, biases as trained.
  partial, _ = imp.round_start(rewind, trained, mask, s.prunable, rewind_non_prunable=False)
  for (path, got), keep in zip(jax.tree_util.tree_flatten_with_path(partial)[0],
                               jax.tree.leaves(s.prunable)):
    name = masks.path_name(path).split("/")
    want = (rewind if keep else trained)["params"][name[0]][name[1]]
    m = mask[name[0]][name[1]]
    np.testing.assert_array_equal(got, np.asarray(want) * np.asarray(m))


def test_rewind_point_is_saved_and_is_a_prefix_of_the_dense_run(setup, tmp_path):
  s = setup
  c = config(sources=("random",), rounds=0, rewind_step=7)
  run(s, c, tmp_path)
  params, stats = imp.load_rewind(s, str(tmp_path))
  sc = runtime.Setup(**{**s.__dict__, "config": c})
  prefix = dense.train_dense(sc, str(tmp_path / "other"), stop_step=7)
  assert leaves_equal(params, prefix.state.params)
  assert not leaves_equal(params, s.init_params)
  # Run to the end, the prefix is the 'train' stage's dense run bit for bit.
  n = int(s.x_train.shape[0])
  whole = dense.train_dense(sc, str(tmp_path / "other"), stop_step=train.total_steps(c.train, n))
  full = runtime.train_run(sc, c.train, jax.tree.map(jnp.array, s.init_params),
                              s.init_batch_stats, None, seed_path=dense.SEED_PATH, stage="train")
  assert leaves_equal(whole.state.params, full.state.params)
  # rounds=0 trains no round.
  assert not os.path.exists(os.path.join(layout.imp_dir(str(tmp_path)), "random", "round_00"))
  # Rewind to init: exactly the initial values.
  run(s, config(sources=("random",), rounds=0), tmp_path / "init")
  assert leaves_equal(imp.load_rewind(s, str(tmp_path / "init"))[0], s.init_params)


@pytest.fixture(scope="module")
def all_sources(setup, tmp_path_factory):
  """One IMP stage with every mask source, on the smoke config."""
  s = setup
  workdir = tmp_path_factory.mktemp("all_sources")
  write_distilled(layout.distilled_set(str(workdir)), s)
  c = config(sources=("random", "combined", "distilled", "real"), rounds=2,
             combined_distilled_rounds=1)
  summary = run(s, c, workdir)
  with open(os.path.join(layout.imp_dir(str(workdir)), "imp.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return s, c, str(workdir), summary, rows


def test_every_source_writes_a_row_per_round_in_run_order(all_sources):
  _, _, workdir, summary, rows = all_sources
  assert [(r["source"], r["round"]) for r in rows] == [
      (src, k) for src in ("real", "distilled", "combined", "random") for k in range(3)]
  for r in rows:
    assert 0.0 < r["test_accuracy"] <= 1.0 and np.isfinite(r["test_loss"])
    assert abs(r["sparsity"] - pruning.expected_sparsity(r["round"])) < 1e-3
  assert os.path.getsize(summary["plot"]) > 1000
  # The dense round 0 is the same run for every source.
  assert len({(r["test_accuracy"], r["test_loss"]) for r in rows if r["round"] == 0}) == 1


def test_masks_are_nested_and_trained_weights_respect_them(all_sources):
  s, c, workdir, _, _ = all_sources
  for source in c.imp.sources:
    for k in range(3):
      mask = imp.load_mask(s, workdir, source, k)
      final = checkpoints.load_tree(layout.final_params(workdir, source, k),
                                    {"params": s.init_params, "batch_stats": s.init_batch_stats})
      for p, m in zip(jax.tree.leaves(final["params"]), jax.tree.leaves(mask)):
        assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0)
      if k and source != "random":
        previous = imp.load_mask(s, workdir, source, k - 1)
        assert all(np.all(np.asarray(m) <= np.asarray(q))
                   for m, q in zip(jax.tree.leaves(mask), jax.tree.leaves(previous)))


def test_random_masks_copy_the_real_masks_layer_counts(all_sources):
  s, _, workdir, summary, _ = all_sources
  assert summary["random_masks"] == "per-layer counts of the real masks"
  for k in (1, 2):
    real = imp.load_mask(s, workdir, "real", k)
    rand = imp.load_mask(s, workdir, "random", k)
    assert masks.counts(rand, s.prunable) == masks.counts(real, s.prunable)
    assert not leaves_equal(rand, real)


def test_sources_find_different_masks(all_sources):
  s, _, workdir, _, _ = all_sources
  real, dist, comb = (imp.load_mask(s, workdir, src, 2)
                      for src in ("real", "distilled", "combined"))
  assert not leaves_equal(real, dist)
  assert not leaves_equal(comb, dist) and not leaves_equal(comb, real)
  # Combined's first round is found on distilled data, like the distilled source's.
  assert leaves_equal(imp.load_mask(s, workdir, "combined", 1),
                      imp.load_mask(s, workdir, "distilled", 1))


def test_data_cost_counts_the_runs_that_found_each_mask(all_sources):
  s, c, _, summary, rows = all_sources
  n_real, n_dist = int(s.x_train.shape[0]), 100
  cost = summary["data_cost"]
  real_run = train.data_cost(train.total_steps(c.train, n_real), c.train.batch_size, n_real)
  dist_run = train.data_cost(train.total_steps(c.imp.distilled_train, n_dist), 64, n_dist)
  assert cost["real"]["mask_examples_seen"] == 2 * real_run["examples_seen"]
  assert cost["real"]["mask_distinct_examples"] == n_real
  assert cost["distilled"]["mask_examples_seen"] == 2 * dist_run["examples_seen"]
  assert cost["distilled"]["mask_distinct_examples"] == n_dist
  assert cost["combined"]["mask_distinct_examples"] == n_real + n_dist
  assert cost["random"]["mask_examples_seen"] == 0
  assert cost["real_over_distilled"]["distinct_examples"] == n_real / n_dist
  by_key = {(r["source"], r["round"]): r for r in rows}
  assert by_key[("distilled", 1)]["mask_examples_seen"] == dist_run["examples_seen"]
  assert by_key[("real", 0)]["mask_examples_seen"] == 0
  assert by_key[("real", 2)]["examples_seen"] == real_run["examples_seen"]


def test_finished_rounds_are_not_recomputed(all_sources, monkeypatch):
  s, c, workdir, summary, rows = all_sources

  def no_training(*args, **kwargs):
    raise AssertionError("a finished round was trained again")

  monkeypatch.setattr(runtime, "train_run", no_training)
  again = run(s, c, workdir)
  assert again["accuracy"] == summary["accuracy"]


def test_partial_rewind_runs_and_keeps_masks_nested(setup, tmp_path):
  s = setup
  write_distilled(layout.distilled_set(str(tmp_path)), s)
  summary = run(s, config(sources=("distilled", "real"), rounds=2, rewind_non_prunable=False),
                tmp_path)
  assert [round(x, 2) for x, _ in summary["accuracy"]["distilled"]] == [0.0, 0.2, 0.36]


def test_global_random_pruning_without_a_real_source(setup, tmp_path):
  summary = run(setup, config(sources=("random",), rounds=2), tmp_path)
  assert summary["random_masks"] == "global random pruning"
  assert [round(x, 2) for x, _ in summary["accuracy"]["random"]] == [0.0, 0.2, 0.36]


@pytest.mark.parametrize("overrides, message", [
    (dict(prune_fraction=1.0), "imp.prune_fraction must be in"),
    (dict(prune_fraction=0.0), "imp.prune_fraction must be in"),
    (dict(rounds=-1), "imp.rounds must be an integer >= 0"),
    (dict(rewind_epochs=3.0), "beyond the dense training"),
    (dict(sources=("real", "pruned")), "imp.sources entry"),
    (dict(distilled_path="/nonexistent/set.npz", sources=("distilled",)),
     "distilled set not found"),
])
def test_bad_config_is_one_line_error_before_compute(overrides, message):
  with pytest.raises(validate.InputError, match=message) as e:
    pipeline.check_config(config(**overrides))
  assert "\n" not in str(e.value)


def test_rewind_step_beyond_training_fails_before_any_file(setup, tmp_path):
  with pytest.raises(validate.InputError, match="rewind step 100000 is beyond"):
    run(setup, config(rewind_step=100000), tmp_path)
  assert not os.path.exists(layout.imp_dir(str(tmp_path)))


@pytest.mark.parametrize("kind, message", [("shape", "image shape"), ("classes", "has 5 classes")])
def test_incompatible_distilled_set_fails_before_any_file(setup, tmp_path, kind, message):
  path = str(tmp_path / "set.npz")
  write_distilled(path, setup, image_shape=(28, 28, 1) if kind == "shape" else None,
                  classes=5 if kind == "classes" else None)
  with pytest.raises(validate.InputError, match=message):
    run(setup, config(sources=("distilled",), distilled_path=path), tmp_path)
  assert not os.path.exists(layout.imp_dir(str(tmp_path)))


def test_mask_or_rewind_point_of_another_model_is_refused(setup, tmp_path):
  run(setup, config(sources=("real",), rounds=1), tmp_path)
  wide = config()
  wide.model.hidden = (48,)
  s_wide = runtime.setup(wide)
  with pytest.raises(validate.InputError, match="mask leaf .* has shape"):
    imp.load_mask(s_wide, str(tmp_path), "real", 1)
  with pytest.raises(validate.InputError, match="rewind point .* has shape"):
    run(s_wide, wide, tmp_path)


# ---------------------------------------------------------------- kill and resume

KILL_ARGS = ["--config", os.path.join(REPO, "configs", "imp_smoke.py"),
             "--config.train.epochs=12", "--config.checkpoint_every_steps=20"]


def main_command(workdir):
  return [sys.executable, os.path.join(REPO, "launch", "main.py"), *KILL_ARGS,
          "--workdir", str(workdir)]


def kill_when(proc, pattern, timeout=240):
  """SIGKILLs `proc` as soon as a path matching `pattern` exists (a mid-round checkpoint)."""
  deadline = time.time() + timeout
  while not glob.glob(pattern):
    assert proc.poll() is None, f"the run ended before {pattern} appeared"
    assert time.time() < deadline, f"{pattern} never appeared"
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()


def test_sigkill_mid_round_then_rerun_is_bit_identical(setup, tmp_path):
  clean = subprocess.run(main_command(tmp_path / "clean"), capture_output=True, text=True,
                         timeout=600, cwd=REPO)
  assert clean.returncode == 0, clean.stderr[-2000:]
  killed = tmp_path / "killed"
  # Kill twice: mid-training of real round 1, then of random round 2.
  for source, k in (("real", 1), ("random", 2)):
    proc = subprocess.Popen(main_command(killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    kill_when(proc, os.path.join(layout.train_checkpoints(str(killed), source, k), "retrain",
                                 "[0-9]*"))
    assert not os.path.exists(os.path.join(layout.imp_dir(str(killed)), "imp.jsonl"))
  resumed = subprocess.run(main_command(killed), capture_output=True, text=True, timeout=600,
                           cwd=REPO)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  read = lambda d: open(os.path.join(layout.imp_dir(str(d)), "imp.jsonl")).read()
  assert read(killed) == read(tmp_path / "clean")
  stage_summary = lambda d: json.load(open(os.path.join(d, "summary.json")))["imp"]
  assert stage_summary(killed)["resumed"] and not stage_summary(tmp_path / "clean")["resumed"]
  like = {"params": setup.init_params, "batch_stats": setup.init_batch_stats}
  for source in ("real", "random"):
    for k in range(3):
      a, b = (checkpoints.load_tree(layout.final_params(str(d), source, k), like)
              for d in (killed, tmp_path / "clean"))
      assert leaves_equal(a, b)
      assert leaves_equal(imp.load_mask(setup, str(killed), source, k),
                          imp.load_mask(setup, str(tmp_path / "clean"), source, k))
