"""The cross-seed measure on a tiny digits pipeline (an MLP, 2 inits, 1 IMP
round): its records, figures and report section; paths whose endpoints are
the nets themselves, aligned or not; cached nets that retrain bit for bit;
and its one-line refusals before compute."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest

from lmcjax import checkpoints
from lmcjax import logs
from lmcjax import masks
from lmcjax import modelid
from lmcjax import models
from lmcjax import pipeline
from lmcjax import pooled
from lmcjax import results
from lmcjax import runtime
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import cross_seed
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import paths
from lmcjax.analysis import measures
from lmcjax.configs.parts import model as model_part

NUM_INITS = 2


def _config():
  c = conftest.digits_config(("train", "imp", "analysis", "report"))
  c.imp.update(sources=("real",), rounds=1, rewind_step=5)
  a = c.analysis
  a.include_dense, a.num_branches, a.num_alphas, a.eval_splits = False, 2, 3, ("test",)
  a.landscape.kinds, a.hessian.enabled = (), False
  a.cross_seed = measures.default_section("cross_seed")
  a.cross_seed.update(enabled=True, num_inits=NUM_INITS, num_alphas=3, correction_batches=2,
                      correction_batch_size_examples=64)
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("cross_seed"))
  return wd, pipeline.run(_config(), wd)


def test_every_pair_is_measured_per_alignment_and_bn_mode(run):
  wd, summary = run
  rec = summary["analysis"]["cross_seed"]
  # An MLP has no BatchNorm: its correction is REPAIR.
  assert rec["bn_modes"] == ["interpolate", "repair"]
  assert set(rec["models"]) == {"dense", "real_r01"}
  assert rec["models"]["real_r01"]["sparsity"] == pytest.approx(0.2, abs=0.02)
  for m in rec["models"].values():
    assert len(m["test_accuracy"]) == NUM_INITS
    assert set(m["barriers"]) == {f"{al}/{mode}" for al in cross_seed.ALIGNMENTS
                                  for mode in rec["bn_modes"]}
    for b in m["barriers"].values():
      assert len(b["error_barriers"]) == NUM_INITS * (NUM_INITS - 1) // 2
      assert all(v >= -1e-9 for v in b["error_barriers"] + b["error_barrier_chords"])
  for mode in rec["bn_modes"]:
    assert os.path.getsize(rec["figures"][mode]) > 0


def test_path_endpoints_are_the_nets_whether_aligned_or_not(run):
  # A permutation changes no function: the aligned net's error at alpha 1 is
  # the net's own, and alpha 0 is always net i.
  wd, summary = run
  paths = logs.read_json(os.path.join(layout.analysis_dir(wd), "cross_seed.json"))["models"]
  for name, m in paths.items():
    errors = [1.0 - acc for acc in m["test_accuracy"]]
    for p in m["pairs"]:
      if p["bn_mode"] != "interpolate":
        continue
      assert p["error"][0] == pytest.approx(errors[p["i"]], abs=1e-6), (name, p["alignment"])
      assert p["error"][-1] == pytest.approx(errors[p["j"]], abs=1e-6), (name, p["alignment"])


def test_the_new_init_trains_under_the_same_mask_and_retrains_bit_for_bit(run):
  wd, _ = run
  c = _config()
  s = runtime.setup(c)
  mask = checkpoints.load_tree(layout.mask(wd, "real", 1), s.init_params)
  folder = os.path.join(layout.analysis_dir(wd), "inits", "init_01", "real_r01")
  like = {"params": s.init_params, "batch_stats": s.init_batch_stats}
  cached = checkpoints.load_tree(os.path.join(folder, "final"), like)
  outside = jax.tree.map(lambda p, m: jnp.abs(p) * (1 - m), cached["params"], mask)
  assert max(float(jnp.max(v)) for v in jax.tree.leaves(outside)) == 0.0
  # What a resumed run reuses is what it would have trained: remove the cache, retrain.
  os.rename(folder, folder + ".moved")
  retrained, _ = inits_lib.Inits(s, wd).sparse(1, modelid.ModelId("real", 1), mask)
  jax.tree.map(np.testing.assert_array_equal, retrained, cached)


def test_align_masks_trains_the_new_init_under_the_mask_moved_into_its_basin(run, tmp_path):
  # The measure alone, on the run's cached nets: only init 1's aligned net trains.
  wd, _ = run
  c = _config()
  c.analysis.cross_seed.update(align_masks=True, include_dense=False, bn_modes=("interpolate",))
  s = runtime.setup(c)
  mask = checkpoints.load_tree(layout.mask(wd, "real", 1), s.init_params)
  model = modelid.ModelId("real", 1)
  ctx = measures.StageContext(s, c.analysis, wd, str(tmp_path), logs.MetricsLog(str(tmp_path)),
                              {"test": (s.x_test, s.y_test)}, 5,
                              [measures.Analysed(model, mask, {}, {})])
  rec = cross_seed.run_across(ctx, c.analysis.cross_seed)
  assert rec["align_masks"] and set(rec["models"]) == {"real_r01"}
  folder = os.path.join(layout.analysis_dir(wd), "inits", "init_01", "real_r01_aligned")
  moved = checkpoints.load_tree(os.path.join(folder, "mask"), mask)
  assert masks.counts(moved, s.prunable) == masks.counts(mask, s.prunable)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(moved),
                                                       jax.tree.leaves(mask)))
  net = checkpoints.load_tree(os.path.join(folder, "final"),
                              {"params": s.init_params, "batch_stats": s.init_batch_stats})
  outside = jax.tree.map(lambda p, m: jnp.abs(p) * (1 - m), net["params"], moved)
  assert max(float(jnp.max(v)) for v in jax.tree.leaves(outside)) == 0.0


def test_records_and_section_reach_the_report(run):
  wd, summary = run
  rows = logs.read_json(os.path.join(wd, "results.json"))["cross_seed"]
  assert len(rows) == 2 * len(cross_seed.ALIGNMENTS) * 2
  assert {r["alignment"] for r in rows} == set(cross_seed.ALIGNMENTS)
  assert all(r["seed"] == summary["analysis"]["seed"] and "error_barrier_ci" in r for r in rows)
  text = open(os.path.join(wd, "report.md")).read()
  section = text[text.index("## Connectivity across init seeds"):]
  assert "step 5 of init i's own dense run" in section
  assert "analysis/cross_seed_repair.png" in section


class Unwired(nn.Module):
  """A toy whose registration has no permutation structure to offer."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(self.num_classes)(nn.relu(nn.Dense(8)(x.reshape((x.shape[0], -1)))))


def _undeclared(module, variables):
  raise NotImplementedError("its wiring is not worked out")


@pytest.fixture
def unwired_model():
  models.register(Unwired, models.Registration(
      name="toy_unwired", build=Unwired, defaults={}, norm="none", piecewise_linear=True,
      classifier="Dense_1", permutation=_undeclared))
  yield
  models.unregister("toy_unwired")


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.analysis.cross_seed.update(num_inits=1), "num_inits must be an integer >= 2"),
    (lambda c: c.analysis.cross_seed.update(sources=("nowhere",)), "sources entry='nowhere'"),
    (lambda c: c.analysis.cross_seed.update(sources=("random",)), "IMP did not run it"),
    (lambda c: c.analysis.cross_seed.update(rounds=(3,)), "not round 3"),
    (lambda c: (c.imp.update(rounds=2), c.analysis.cross_seed.update(rounds=(1,))),
     "entry 1 is not an analysed round of 'real'"),
    (lambda c: (c.imp.update(sources=("real", "random")), c.analysis.update(targets=("real:1",)),
                c.analysis.cross_seed.update(sources=("random",))), "does not analyse it"),
    (lambda c: c.analysis.cross_seed.update(bn_modes=("reset",)), "no BatchNorm statistics"),
    (lambda c: setattr(c, "model", model_part.get("convnet", norm="batch", width=8)),
     None),  # a BN convnet is fine: 'reset' is its correction
    (lambda c: (setattr(c, "model", model_part.get("convnet", norm="batch", width=8)),
                c.analysis.cross_seed.update(bn_modes=("repair",))), "REPAIR does not apply"),
    (lambda c: setattr(c, "model", model_part.get("toy_unwired")),
     "does not declare its permutation structure"),
])
def test_bad_sections_are_one_line_before_compute(unwired_model, edit, match):
  c = _config()
  edit(c)
  if match is None:
    pipeline.check_config(c)
    return
  with pytest.raises(validate.InputError, match=match):
    pipeline.check_config(c)


def test_default_bn_modes_follow_the_norm():
  build = lambda **kw: models.create(model_part.get("convnet", width=8, **kw), 10)
  assert paths.bn_modes(build(norm="batch"), ()) == ("interpolate", "reset")
  assert paths.bn_modes(build(norm="instance"), ()) == ("interpolate",)
  assert paths.bn_modes(build(norm="none"), ()) == ("interpolate", "repair")


def test_a_disabled_section_changes_nothing():
  c = _config()
  c.analysis.cross_seed.update(enabled=False, num_inits=1)  # not checked when off
  pipeline.check_config(c)


def test_pooling_over_seeds_gives_one_row_per_model_alignment_and_mode(run, tmp_path):
  wd, _ = run
  shifted = lambda r: {**r, "error_barriers": [v + 0.1 for v in r["error_barriers"]]}
  per_seed = conftest.second_seed(wd, "cross_seed", shifted)
  part = cross_seed.pool(str(tmp_path), per_seed)
  rows, own = part.tables["cross_seed"], per_seed[0]["cross_seed"]
  assert [(r["model"], r["alignment"], r["bn_mode"]) for r in rows] == [
      (r["model"], r["alignment"], r["bn_mode"]) for r in own]
  for pooled_row, r in zip(rows, own):
    ci = pooled_row["error_barrier_ci"]
    assert ci["num_seeds"] == 2 and ci["num_pairs"] == 2 * len(r["error_barriers"])
    assert ci["estimate"] == pytest.approx(np.mean(r["error_barriers"]) + 0.05)
  # Per model and mode, naive against activation matching; then real against
  # nothing (one sparse source): paired by seed.
  comparisons = part.tables["cross_seed_comparisons"]
  assert len(comparisons) == 2 * 2  # dense and real_r01, in two BN modes
  assert all(c["num_seeds"] == 2 for c in comparisons)
  assert part.lines[0] == "## Connectivity across init seeds, pooled"
  assert "2 init seeds (0, 1)" in part.lines[1]
  assert all(os.path.getsize(tmp_path / f"pooled_cross_seed_{mode}.png") > 0
             for mode in ("interpolate", "repair"))


def test_a_sweep_root_pools_the_measures_into_pooled_md(run, tmp_path):
  wd, _ = run
  per_seed = conftest.second_seed(wd, "cross_seed", lambda r: r)
  for seed, seed_results in per_seed.items():
    os.makedirs(tmp_path / f"job{seed}")
    logs.write_json(str(tmp_path / f"job{seed}" / "results.json"), seed_results)
  study = pooled.study(str(tmp_path), [{"job": "job0"}, {"job": "job1"}])
  assert study["seeds"] == ["0", "1"] and len(study["cross_seed"]) == len(per_seed[0]["cross_seed"])
  assert all("error_barrier_chord_ci" in r for r in study["barriers"])
  text = (tmp_path / "pooled.md").read_text()
  assert "## Connectivity across init seeds, pooled" in text
  assert "## Error barrier vs sparsity, chord definition" in text
  assert study["measure_sections"]["cross_seed"][0] == "## Connectivity across init seeds, pooled"
  # docs/make_tables.py puts each pooled section into the study's page.
  logs.write_json(str(tmp_path / "aggregate.json"), [])
  headings = [h for h, _ in conftest.make_tables().sweep_tables(str(tmp_path))]
  assert "Connectivity across init seeds, pooled" in headings
  assert any(h.startswith("Error barrier vs sparsity, chord definition") for h in headings)
  # ... and redraws the pooled figures from the numbers saved beside them.
  drawn = conftest.make_tables().redraw_pooled_figures(str(tmp_path), str(tmp_path / "figs"), "s")
  assert {os.path.basename(p) for p in drawn} >= {"s_barrier_vs_sparsity.png",
                                                   "s_cross_seed_interpolate.png"}


def test_results_load_reloads_the_new_inits_nets(run):
  wd, summary = run
  loaded = results.load(wd)
  names = loaded.names("new_init")
  assert {"inits/init_01/dense", "inits/init_01/real_r01"} <= set(names)
  recorded = summary["analysis"]["cross_seed"]["models"]
  for name, model in (("inits/init_01/dense", "dense"), ("inits/init_01/real_r01", "real_r01")):
    assert loaded.evaluate(name)["accuracy"] == pytest.approx(
        recorded[model]["test_accuracy"][1], abs=1e-6)
  # The masked net is zero outside IMP's mask, which it reloads with.
  net, mask = loaded.params("inits/init_01/real_r01"), loaded.mask("inits/init_01/real_r01")
  outside = jax.tree.map(lambda p, m: jnp.abs(p) * (1 - m), net, mask)
  assert max(float(jnp.max(v)) for v in jax.tree.leaves(outside)) == 0.0
