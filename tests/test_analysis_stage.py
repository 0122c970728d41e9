"""The analysis stage end to end on a tiny config, from files it writes itself."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest

from lmcjax import analysis
from lmcjax import branches
from lmcjax import checkpoints
from lmcjax.configs.parts import model as model_part
from lmcjax.configs.parts import train as train_part
from lmcjax import dense
from lmcjax import interpolate
from lmcjax import logs
from lmcjax import masks
from lmcjax import pipeline
from lmcjax import results
from lmcjax import rng
from lmcjax import runtime
from lmcjax import synthetic
from lmcjax import validate
from lmcjax import workdir as layout


def _config():
  """sklearn digits, a 16-unit MLP, 1-epoch branches, small grids and probe counts."""
  c = conftest.digits_config(("analysis",))
  a = c.analysis
  a.num_branches, a.chunk_copies = 3, 2
  a.num_alphas, a.chunk_alphas = 5, 4
  a.eval_splits = ("test", "distilled")
  a.landscape.kinds, a.landscape.resolution = ("three_point", "random_1d"), 5
  a.hessian.update(batch_size_examples=100, num_batches=1, max_probes=8, chunk_probes=4,
                   lanczos_iters=5, density_steps=5, exact_max_params=2000)
  return c


def _write_imp_outputs(config, wd):
  """What the IMP and distill stages would leave: rewind point, two masks, a distilled set."""
  dataset_model = runtime.setup(config)
  params, stats = dataset_model.init_params, dataset_model.init_batch_stats
  checkpoints.save_tree(layout.rewind_point(wd), {"params": params, "batch_stats": stats})
  for source, round_index, keep in (("real", 1, 0.8), ("random", 2, 0.64)):
    key = rng.named_key(0, "test", source)
    mask = jax.tree.map(
        lambda p, prunable: (jax.random.uniform(key, p.shape) < keep).astype(p.dtype)
        if prunable else jnp.ones_like(p), params, dataset_model.prunable)
    checkpoints.save_tree(layout.mask(wd, source, round_index), mask)
  ds = dataset_model.dataset
  images = ds.normalise(ds.x_train[:30])
  synthetic.save(layout.distilled_set(wd), images, np.arange(30) % 10,
                 {"method": "test", "ipc": 3, "dataset": ds.name, "mean": ds.mean, "std": ds.std,
                  "factor": 1})
  return dataset_model


def test_stage_writes_barriers_landscapes_hessian_and_plots(tmp_path):
  config = _config()
  wd = str(tmp_path)
  s = _write_imp_outputs(config, wd)
  summary = pipeline.run(config, wd)["analysis"]
  assert set(summary["models"]) == {"dense", "real_r01", "random_r02"}
  real = summary["models"]["real_r01"]
  assert abs(real["sparsity"] - 0.2) < 0.05
  for model in summary["models"].values():
    assert set(model["barriers"]) == {"test/interpolate", "distilled/interpolate"}
    assert np.isfinite(model["barriers"]["test/interpolate"]["error_barrier_mean"])
    # A ReLU MLP: the default method is the exact GGN diagonal, which is the Hessian's.
    assert model["hessian"]["method"] == "ggn" and model["hessian"]["exact"]
    assert model["hessian"]["relative_error_vs_exact"] < 1e-3
  out = layout.analysis_dir(wd)
  paths = logs.read_json(os.path.join(out, "real_r01", "interpolation_test_interpolate.json"))
  assert [(p["i"], p["j"]) for p in paths["pairs"]] == [(0, 1), (0, 2), (1, 2)]
  assert len(paths["pairs"][0]["alphas"]) == 5
  grid = np.load(os.path.join(out, "real_r01", "landscape_three_point.npz"))
  assert grid["loss"].shape == (5, 5)
  assert list(grid["point_names"]) == ["theta0", "theta1", "theta2"]
  for name in ("interpolation", "barrier_vs_sparsity", "hessian_hist"):
    assert os.path.getsize(os.path.join(out, name + ".png")) > 0
    assert os.path.exists(os.path.join(out, name + ".json"))
  series = logs.read_json(os.path.join(out, "barrier_vs_sparsity.json"))["series"]
  assert set(series) == {"real", "random"} and len(series["real"]) == 2  # dense + round 1
  diag = np.load(os.path.join(out, "real_r01", "hessian.npz"))
  mask = checkpoints.load_tree(layout.mask(wd, "real", 1), like=masks.ones_like(s.init_params))
  pruned = np.asarray(mask["Dense_0"]["kernel"]) == 0
  assert np.all(diag["diagonal/Dense_0/kernel"][pruned] == 0.0)


def test_a_rerun_is_bit_identical(tmp_path):
  config = _config()
  config.analysis.hessian.enabled = False
  config.analysis.landscape.kinds = ()
  config.analysis.eval_splits = ("test",)
  runs = []
  for name in ("a", "b"):
    wd = str(tmp_path / name)
    _write_imp_outputs(config, wd)
    pipeline.run(config, wd)
    runs.append(logs.read_json(os.path.join(layout.analysis_dir(wd), "dense",
                                            "interpolation_test_interpolate.json")))
  assert runs[0] == runs[1]


def test_a_rerun_after_a_kill_reloads_the_saved_copies(tmp_path, monkeypatch):
  """An attempt killed after its branches were saved: the rerun reloads every
  analysed model's and instability point's copies instead of retraining them,
  and reaches the same numbers."""
  config = _config()
  config.train = train_part.train_spec(epochs=2)
  a = config.analysis
  a.hessian.enabled, a.landscape.kinds, a.eval_splits = False, (), ("test",)
  a.instability.update(enabled=True, rewind_epochs=(0.0, 1.0), num_alphas=5, num_copies=3)
  wd = str(tmp_path)
  _write_imp_outputs(config, wd)
  first = pipeline.run(config, wd)["analysis"]
  instability = logs.read_json(os.path.join(layout.analysis_dir(wd), "instability.json"))
  os.remove(os.path.join(wd, "stages", "analysis.done.json"))  # as if killed before the end

  def retrain(*args, **kwargs):
    raise AssertionError("branches retrained")
  monkeypatch.setattr(branches, "train_branches", retrain)
  second = pipeline.run(config, wd)["analysis"]
  assert second["resumed"]
  for name, model in first["models"].items():
    for key in ("barrier_stats", "branch_final_train_loss", "branch_cost", "branch_test_error"):
      assert second["models"][name][key] == model[key], (name, key)
  assert logs.read_json(os.path.join(layout.analysis_dir(wd), "instability.json")) == instability


@pytest.mark.parametrize("path,value,match", [
    ("num_branches", 1, "num_branches must be >= 2"),
    ("chunk_alphas", 0, "chunk_alphas must be > 0"),
    ("hessian.max_probes", 0, "max_probes must be > 0"),
    ("hessian.chunk_probes", 0, "chunk_probes must be > 0"),
    ("hessian.chunk_examples", 0, "chunk_examples must be > 0"),
    ("hessian.method", "newton", "hessian method"),
    ("hessian.lanczos_iters", 0, "lanczos_iters .* must be >= lanczos_k"),
    ("landscape.chunk_points", 0, "landscape.chunk_points must be > 0"),
    ("landscape.kinds", ("four_seed",), "num_branches >= 4"),
    ("targets", ("real4",), "not 'source:round'"),
    ("eval_splits", ("val",), "eval_splits entry"),
    ("alpha_max", 0.5, "must cover"),
    ("rounds", (5,), "IMP produces masks at rounds 1..4"),
    ("targets", ("real:0",), "not round 0"),
    ("start", "epoch", None),  # valid: epoch 0.0
    ("start_epoch", 2.0, "beyond training"),
    ("instability.rewind_epochs", (0.0, 1.0), "leaves no training after it"),
    ("instability.rewind_epochs", (0.0, 7.0), "beyond training"),
    ("instability.num_copies", 1, "num_copies must be >= 2"),
])
def test_bad_config_is_a_clear_error_before_compute(path, value, match):
  config = _config()
  *parents, leaf = path.split(".")
  section = config.analysis
  for p in parents:
    section = section[p]
  section[leaf] = value
  if path == "start_epoch":
    config.analysis.start = "epoch"
  if path.startswith("instability"):
    config.analysis.instability.enabled = True
    if path != "instability.rewind_epochs":  # the defaults reach epoch 4 of this 1-epoch run
      config.analysis.instability.rewind_epochs = (0.0, 0.5)
  if match is None:
    pipeline.check_config(config)
    return
  with pytest.raises(validate.InputError, match=match):
    pipeline.check_config(config)


def test_the_train_stage_saves_and_imp_retrains_what_the_analysis_reads():
  """The analysis declares its start points and mask rounds (Stage.rewind_steps,
  imp_rounds): the pipeline hands them to the train and IMP stages."""
  config = _config()
  config.stages = ("train", "imp", "analysis")
  config.train = train_part.train_spec(epochs=4)
  a = config.analysis
  a.start, a.start_epoch, a.rounds, a.targets = "epoch", 1.0, (1,), ("random:3",)
  a.instability.update(enabled=True, rewind_epochs=(0.0, 2.0))
  need = pipeline.needs(config, 1000)
  steps = {dense.epoch_step(config, 1000, e) for e in (1.0, 2.0)}
  assert steps <= set(need["rewind_steps"]) and 0 not in need["rewind_steps"]
  assert need["imp_rounds"] == (1, 3)
  a.start, a.instability.enabled = "init", False
  assert set(pipeline.needs(config, 1000)["rewind_steps"]).isdisjoint(steps)


def test_ggn_as_the_hessian_of_an_instance_norm_net_is_refused_before_compute():
  config = _config()
  config.model = model_part.get("convnet", norm="instance", depth=1, width=4)
  config.analysis.hessian.method = "ggn"
  with pytest.raises(validate.InputError, match="instance norm"):
    pipeline.check_config(config)
  config.analysis.hessian.method = "auto"  # GGN plus the residual's estimate: allowed
  pipeline.check_config(config)


def test_instability_writes_its_curve_plot_and_numbers(tmp_path):
  config = _config()
  config.train = train_part.train_spec(epochs=2)
  a = config.analysis
  a.hessian.enabled, a.landscape.kinds, a.eval_splits = False, (), ("test",)
  a.num_alphas = 5
  a.instability.update(enabled=True, rewind_epochs=(0.0, 1.0), num_alphas=5, num_copies=3)
  wd = str(tmp_path)
  _write_imp_outputs(config, wd)
  summary = pipeline.run(config, wd)["analysis"]
  out = layout.analysis_dir(wd)
  data = logs.read_json(os.path.join(out, "instability.json"))
  assert data["epochs"] == [0.0, 1.0] and data["steps"][0] == 0 and data["steps"][1] > 0
  # The dense net and each source's sparsest analysed mask.
  assert set(data["models"]) == {"dense", "real_r01", "random_r02"}
  for curve in data["models"].values():
    # Epoch 0 is the barrier analysis' own start: its copies are reused, not retrained.
    assert [p["reused_analysis_copies"] for p in curve] == [True, False]
    for point in curve:
      assert len(point["error_barriers"]) == 3
      ci = point["error_barrier_ci"]
      assert ci["low"] <= ci["estimate"] <= ci["high"] and ci["num_pairs"] == 3
  dense = summary["models"]["dense"]["barrier_stats"]["test/interpolate"]
  assert data["models"]["dense"][0]["error_barriers"] == dense["error_barriers"]
  assert os.path.getsize(os.path.join(out, "instability.png")) > 1000
  assert np.load(os.path.join(out, "instability.npz"))["barriers/dense"].shape == (2, 3)
  # The copies of each instability point are saved: reloaded, they give its barriers.
  run = results.load(wd)
  step = data["steps"][1]
  names = [f"instability/real_r01/step_{step:07d}/copy_{i:02d}" for i in range(3)]
  assert set(names) <= set(run.names("instability"))
  path = interpolate.evaluate_path(run.model, run.variables(names[0]), run.variables(names[1]),
                                   interpolate.default_alphas(5), run.setup.x_test,
                                   run.setup.y_test, mask=run.mask(names[0]),
                                   eval_batch_size=config.eval_batch_size,
                                   chunk_alphas=a.chunk_alphas)
  assert path["error_barrier"] == data["models"]["real_r01"][1]["error_barriers"][0]


def test_missing_distilled_set_and_mask_are_clear_errors(tmp_path):
  # The rewind point needs no IMP stage: it is a state of the dense run.
  config = _config()
  s = runtime.setup(config)
  log = logs.MetricsLog(str(tmp_path))
  with pytest.raises(validate.InputError, match="distilled set not found"):
    analysis.run_stage(s, str(tmp_path), log)
  config.analysis.targets = ("real:3",)
  with pytest.raises(validate.InputError, match="no mask at"):
    analysis.run_stage(s, str(tmp_path), log)
