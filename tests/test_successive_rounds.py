"""The successive-rounds measure (Paul et al. 2023) on a tiny digits pipeline:
IMP with two rounds of two sources, every round kept, then the analysis and
the report; and its one-line refusals when the rounds are not kept."""
import os

import pytest

import conftest

from lmcjax import interpolate
from lmcjax import logs
from lmcjax import pipeline
from lmcjax import validate
from lmcjax import workdir as layout
from lmcjax.analysis import successive_rounds

ROUNDS = 2
SOURCES = ("real", "random")


def _config():
  c = conftest.digits_config(("train", "imp", "analysis", "report"))
  c.imp.update(sources=SOURCES, rounds=ROUNDS, retrain_rounds="all", rewind_step=5)
  a = c.analysis
  a.num_branches, a.num_alphas, a.eval_splits = 2, 3, ("test",)
  # The interpolation measure's 'repair' mode rides along: an MLP has no BatchNorm.
  a.bn_modes, a.bn_reset_batches, a.bn_reset_batch_size = ("interpolate", "repair"), 2, 64
  a.landscape.kinds, a.hessian.enabled = (), False
  a.successive_rounds.update(enabled=True, num_alphas=5)
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("successive"))
  return wd, pipeline.run(_config(), wd)


def test_every_successive_pair_of_rounds_is_measured_in_both_definitions(run):
  wd, summary = run
  rec = summary["analysis"]["successive_rounds"]
  assert [(p["source"], p["round"], p["next_round"]) for p in rec["paths"]] == [
      (s, k, k + 1) for s in SOURCES for k in range(ROUNDS)]
  assert rec["imp_rewind_step"] == summary["imp"]["rewind_step"] == 5
  for p in rec["paths"]:
    assert p["next_sparsity"] > p["sparsity"]
    for name in interpolate.BARRIERS:
      assert p[name] >= -1e-9, (name, p)
    assert abs(p["error_barrier"] - p["error_barrier_chord"]) <= (
        abs(p["error_end"] - p["error_start"]) / 2 + 1e-9)
  # IMP prunes each real round's solution, so its masks nest; round 0 is dense.
  assert all(p["nested"] for p in rec["paths"] if p["source"] == "real")
  assert os.path.getsize(os.path.join(layout.analysis_dir(wd), "successive_rounds.png")) > 0


def test_the_path_endpoints_are_imps_own_retrained_nets(run):
  # At alpha 0 and 1 the path evaluates round k's and k+1's solutions under
  # round k's mask, outside which both are zero: their own test errors.
  wd, summary = run
  rows = logs.read_jsonl(os.path.join(layout.imp_dir(wd), "imp.jsonl"))
  error = {(r["source"], r["round"]): 1.0 - r["test_accuracy"] for r in rows}
  for p in summary["analysis"]["successive_rounds"]["paths"]:
    assert p["error_start"] == pytest.approx(error[p["source"], p["round"]], abs=1e-6)
    assert p["error_end"] == pytest.approx(error[p["source"], p["next_round"]], abs=1e-6)


def test_its_records_and_section_reach_the_report(run):
  wd, summary = run
  results = logs.read_json(os.path.join(wd, "results.json"))
  rows = results["successive_rounds"]
  assert len(rows) == len(SOURCES) * ROUNDS
  assert all(r["imp_rewind_step"] == 5 and r["seed"] == summary["analysis"]["seed"] for r in rows)
  text = open(os.path.join(wd, "report.md")).read()
  section = text[text.index("## Successive IMP rounds"):]
  assert "(endpoint mean)" in section and "(chord)" in section
  assert "round k's mask" in section and "analysis/successive_rounds.png" in section
  # The interpolation measure ran its 'repair' mode next to 'interpolate'.
  dense = summary["analysis"]["models"]["dense"]["barriers"]
  assert set(dense) == {"test/interpolate", "test/repair"}
  assert {r["measured_on"] for r in results["barriers"]} == {"test/interpolate", "test/repair"}


def test_rounds_not_kept_are_refused_before_compute(tmp_path):
  config = _config()
  config.imp.retrain_rounds = "analysed"
  with pytest.raises(validate.InputError, match="random only with imp.retrain_rounds='all'"):
    pipeline.check_config(config)
  config.imp.update(retrain_rounds="all", rounds=0)
  with pytest.raises(validate.InputError, match="needs IMP rounds 0 and 1"):
    pipeline.check_config(config)
  # Rounds IMP did not keep here (no IMP stage in this workdir): one line
  # naming the first, before any interpolation.
  with pytest.raises(validate.InputError, match="kept no retrained net of real round 0"):
    successive_rounds._require_kept(str(tmp_path), ("real",), ROUNDS)  # pylint: disable=protected-access


def _recorded(**extra):
  path = {"source": "real", "round": 0, "next_round": 1, "sparsity": 0.0, "next_sparsity": 0.2,
          "nested": True, "bn_mode": "interpolate", "error_start": 0.1, "error_end": 0.3,
          "error_barrier": 0.1, "error_barrier_chord": 0.0, "loss_barrier": 0.5,
          "loss_barrier_chord": 0.0}
  return {"seed": 3, "successive_rounds": {
      "split": "test", "imp_rewind_step": 5, "rewind_schedule": "continue",
      "analysis_start_step": 5, "evaluated_under": "mask of round k", "paths": [path], **extra}}


def test_the_report_names_rewind_points_the_rounds_were_not_trained_from(tmp_path):
  plain = successive_rounds.report(str(tmp_path), _recorded(other_analysed_steps=[]))
  assert plain.tables["successive_rounds"][0]["seed"] == 3
  assert "step 5 of the dense run" in plain.lines[1] and "also starts" not in plain.lines[1]
  assert not any("successive_rounds.png" in line for line in plain.lines)  # no figure drawn
  other = successive_rounds.report(str(tmp_path), _recorded(other_analysed_steps=[0, 20]))
  assert "from step(s) 0, 20 of the dense run, which no IMP round trains from" in other.lines[1]
  nothing = successive_rounds.report(str(tmp_path), {"seed": 3})
  assert (nothing.tables, nothing.lines) == ({}, [])


def test_pooling_over_seeds_gives_each_path_a_ci_over_seeds(run, tmp_path):
  wd, _ = run
  shifted = lambda r: {**r, "error_barrier": r["error_barrier"] + 0.02}
  per_seed = conftest.second_seed(wd, "successive_rounds", shifted)
  part = successive_rounds.pool(str(tmp_path), per_seed)
  rows, own = part.tables["successive_rounds"], per_seed[0]["successive_rounds"]
  assert [(r["source"], r["round"]) for r in rows] == [(r["source"], r["round"]) for r in own]
  for pooled_row, r in zip(rows, own):
    ci = pooled_row["error_barrier_ci"]
    assert ci["num_seeds"] == 2 and ci["estimate"] == pytest.approx(r["error_barrier"] + 0.01)
    assert ci["low"] < ci["high"]
  # real against random, once per pair of rounds.
  comparisons = part.tables["successive_rounds_comparisons"]
  assert [(c["a"], c["b"]) for c in comparisons] == [("real", "random")] * ROUNDS
  assert part.lines[0] == "## Successive IMP rounds, pooled"
  assert os.path.getsize(tmp_path / "pooled_successive_rounds.png") > 0


def test_pooling_counts_only_the_seeds_that_recorded_the_measure(run, tmp_path):
  wd, _ = run
  per_seed = conftest.second_seed(wd, "successive_rounds", lambda r: r)
  per_seed[2] = {k: v for k, v in per_seed[1].items() if k != "successive_rounds"}
  part = successive_rounds.pool(str(tmp_path), per_seed)
  assert "2 init seeds (0, 1)" in part.lines[1]
  assert all(r["error_barrier_ci"]["num_seeds"] == 2 for r in part.tables["successive_rounds"])
