"""The mask-transfer measure: the permutation's direction on an exactly
permuted net; then a tiny digits pipeline (an MLP, 2 inits, real and random
masks of 1 IMP round): records, paired comparisons, figure and report
section; aligned masks that keep each layer's count; one-line refusals."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest

from lmcjax import checkpoints
from lmcjax import logs
from lmcjax import masks
from lmcjax import pipeline
from lmcjax import rng
from lmcjax import runtime
from lmcjax import train
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import inits as inits_lib
from lmcjax.analysis import mask_transfer
from lmcjax.analysis import measures
from lmcjax.configs.parts import model as model_part
from lmcjax.connectivity import permute
from lmcjax.connectivity import structure as structure_lib

NUM_INITS = 2
SOURCES = ("real", "random")


def _config():
  c = conftest.digits_config(("train", "imp", "analysis", "report"))
  c.imp.update(sources=SOURCES, rounds=1, rewind_step=5)
  a = c.analysis
  a.include_dense, a.num_branches, a.num_alphas, a.eval_splits = False, 2, 3, ("test",)
  a.landscape.kinds, a.hessian.enabled = (), False
  a.mask_transfer = measures.default_section("mask_transfer")
  a.mask_transfer.update(enabled=True, num_inits=NUM_INITS, num_alphas=3,
                         bn_modes=("interpolate",))
  return c


# ---------------------------------------------------------------- direction


@pytest.fixture(scope="module")
def two_layer():
  """A 16-12 MLP's init on digits, its structure and a random half mask."""
  c = conftest.digits_config(("analysis",), hidden=(16, 12))
  s = runtime.setup(c)
  origin = {"params": s.init_params, "batch_stats": s.init_batch_stats}
  structure = structure_lib.structure_of(s.model, origin)
  key = rng.named_key(0, "test", "mask")
  mask = jax.tree.map(lambda p, prunable: (jax.random.uniform(key, p.shape) < 0.5).astype(p.dtype)
                      if prunable else jnp.ones_like(p), s.init_params, s.prunable)
  return s, origin, structure, mask


def _hidden_activations(s, variables):
  x = s.x_train.reshape((s.x_train.shape[0], -1))
  out = []
  for layer in ("Dense_0", "Dense_1"):
    x = jax.nn.relu(x @ variables["params"][layer]["kernel"] + variables["params"][layer]["bias"])
    out.append(x)
  return out


def test_the_mask_moves_into_the_target_basin_not_out_of_it(two_layer):
  s, origin, structure, mask = two_layer
  # Precondition: no unit is dead on the matching images (a dead unit matches any other).
  assert all(bool(jnp.all(jnp.std(h, axis=0) > 0)) for h in _hidden_activations(s, origin))
  perm = permute.random_permutation(structure, rng.named_key(0, "test", "perm"))
  target_params, _, expected = permute.permute(structure, perm, origin["params"], mask=mask)
  target = {"params": target_params, "batch_stats": origin["batch_stats"]}
  moved = inits_lib.mask_into_basin(s.model, structure, origin, target, mask, s.x_train,
                                    chunk_examples=500)
  jax.tree.map(np.testing.assert_array_equal, moved, expected)
  # The other direction would be the inverse permutation, a different mask.
  backwards = permute.permute(structure, permute.invert(perm), origin["params"], mask=mask)[2]
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(backwards),
                                                       jax.tree.leaves(moved)))
  # The target under the moved mask computes what the origin computes under its own.
  logits = lambda v, m: train.forward(s.model, masks.apply(v["params"], m), v["batch_stats"],
                                      s.x_test, train=False)[0]
  np.testing.assert_allclose(logits(target, moved), logits(origin, mask), rtol=1e-5, atol=1e-5)
  assert mask_transfer.same_layer_counts(s, mask, moved)
  assert mask_transfer.overlap(mask, mask) == 1.0


# ---------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("mask_transfer"))
  return wd, pipeline.run(_config(), wd)


def test_each_mask_trains_as_is_aligned_and_as_the_ticket(run):
  _, summary = run
  rec = summary["analysis"]["mask_transfer"]
  assert set(rec["models"]) == {f"{src}_r01" for src in SOURCES}
  for m in rec["models"].values():
    assert 0.0 <= m["ticket"]["test_accuracy"] <= 1.0
    for kind in mask_transfer.KINDS:
      assert len(m[kind]["test_accuracy"]) == NUM_INITS - 1
      ci = m[kind]["test_accuracy_ci"]
      assert ci["low"] <= ci["estimate"] <= ci["high"]
      barriers = m[kind]["barriers"]["activation_matching/interpolate"]
      assert len(barriers["error_barriers"]) == NUM_INITS - 1
      assert all(b >= -1e-9 for b in barriers["error_barriers"])
    # The permutation keeps every layer's count but moves the kept weights.
    assert all(m["aligned"]["same_layer_counts"])
    assert all(o < 1.0 for o in m["aligned"]["overlap"])
    assert m["aligned_vs_as_is"]["quantity"] == "test accuracy"
  # One pair of sources, compared for each kind of transfer.
  assert [(c["a"], c["b"], c["kind"]) for c in rec["comparisons"]] == [
      ("random_r01", "real_r01", kind) for kind in mask_transfer.KINDS]


def test_the_saved_aligned_mask_keeps_each_layers_count(run):
  wd, _ = run
  s = runtime.setup(_config())
  for src in SOURCES:
    mask = checkpoints.load_tree(layout.mask(wd, src, 1), s.init_params)
    folder = os.path.join(layout.analysis_dir(wd), "inits", "init_01")
    moved = checkpoints.load_tree(os.path.join(folder, f"{src}_r01_aligned", "mask"), mask)
    assert masks.counts(moved, s.prunable) == masks.counts(mask, s.prunable)
    # The net trained as it is stays inside the mask it was given.
    net = checkpoints.load_tree(os.path.join(folder, f"{src}_r01", "final"),
                                {"params": s.init_params, "batch_stats": s.init_batch_stats})
    outside = jax.tree.map(lambda p, m: jnp.abs(p) * (1 - m), net["params"], mask)
    assert max(float(jnp.max(v)) for v in jax.tree.leaves(outside)) == 0.0


def test_records_figure_and_section_reach_the_report(run):
  wd, summary = run
  results = logs.read_json(os.path.join(wd, "results.json"))
  rows = results["mask_transfer"]
  assert {(r["model"], r["kind"]) for r in rows} == {
      (f"{src}_r01", kind) for src in SOURCES for kind in ("ticket",) + mask_transfer.KINDS}
  assert len(results["mask_transfer_comparisons"]) == len(mask_transfer.KINDS)
  assert os.path.getsize(summary["analysis"]["mask_transfer"]["figure"]) > 0
  text = open(os.path.join(wd, "report.md")).read()
  section = text[text.index("## Mask transfer to new inits"):]
  assert "analysis/mask_transfer.png" in section and "Paired by init" in section


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.analysis.mask_transfer.update(num_inits=1), "num_inits must be an integer >= 2"),
    (lambda c: c.analysis.mask_transfer.update(sources=("distilled",)), "IMP did not run it"),
    (lambda c: c.analysis.mask_transfer.update(sources=("nowhere",)), "sources entry='nowhere'"),
    (lambda c: c.imp.update(rounds=0), "imp.rounds=0 finds none"),
    (lambda c: c.analysis.mask_transfer.update(bn_modes=("reset",)), "no BatchNorm statistics"),
    (lambda c: (setattr(c, "model", model_part.get("convnet", norm="instance", width=8)),
                c.analysis.mask_transfer.update(bn_modes=("repair",))), "instance norm"),
])
def test_bad_sections_are_one_line_before_compute(edit, match):
  c = _config()
  edit(c)
  with pytest.raises(validate.InputError, match=match):
    pipeline.check_config(c)


def test_pooling_over_seeds_pairs_aligned_with_as_is_and_the_sources(run, tmp_path):
  wd, _ = run

  def shifted(r):  # the second seed's transfers lose 0.1 of accuracy
    if r["kind"] == "ticket":
      return r
    return {**r, "test_accuracy": [v - 0.1 for v in r["test_accuracy"]]}

  per_seed = conftest.second_seed(wd, "mask_transfer", shifted)
  part = mask_transfer.pool(str(tmp_path), per_seed)
  rows, own = part.tables["mask_transfer"], per_seed[0]["mask_transfer"]
  assert [(r["model"], r["kind"]) for r in rows] == [(r["model"], r["kind"]) for r in own]
  for pooled_row, r in zip(rows, own):
    drop = 0.0 if r["kind"] == "ticket" else 0.05
    assert pooled_row["test_accuracy_ci"]["estimate"] == pytest.approx(
        np.mean(r["test_accuracy"]) - drop)
    assert pooled_row["test_accuracy_ci"]["count"] == 2  # seed means
    if r["kind"] != "ticket":
      ci = pooled_row["barriers"]["activation_matching/interpolate"]["error_barrier_ci"]
      assert ci["num_seeds"] == 2
  comparisons = part.tables["mask_transfer_comparisons"]
  # Aligned vs as is per mask, then the two masks' drops for each kind.
  assert [c["kind"] for c in comparisons] == (["aligned vs as_is"] * len(SOURCES)
                                              + list(mask_transfer.KINDS))
  assert all(c["num_seeds"] == 2 for c in comparisons)
  assert part.lines[0] == "## Mask transfer to new inits, pooled"
  assert os.path.getsize(tmp_path / "pooled_mask_transfer.png") > 0
