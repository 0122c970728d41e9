"""Both barrier definitions (endpoint mean, Frankle et al.; chord, Entezari et
al.) on hand-computed curves, in pair records, summaries and the report; the
'repair' statistics mode and the interpolation measure's conditions."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import conftest

from lmcjax import interpolate
from lmcjax import models
from lmcjax import report
from lmcjax import stats
from lmcjax import train
from lmcjax import validate
from lmcjax.analysis import interpolation
from lmcjax.configs.parts import model as model_part

SHAPE = (4, 4, 1)
ALPHAS5 = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("alphas,curve,endpoint_mean,chord", [
    # A straight line between unequal endpoints: no bump, yet the endpoint-mean
    # barrier is half the endpoints' gap; the chord barrier is 0.
    ([0.0, 0.5, 1.0], [0.1, 0.2, 0.3], 0.1, 0.0),
    # A symmetric bump: the chord at 0.5 is the endpoints' mean; both agree.
    ([0.0, 0.5, 1.0], [0.2, 0.5, 0.2], 0.3, 0.3),
    # Max 0.5 at alpha 1, mean 0.25: 0.25. Chord 0.5 alpha: gaps 0, 0.175,
    # -0.05, 0.075, 0: 0.175, at alpha 0.25, not where the curve peaks.
    (ALPHAS5, [0.0, 0.3, 0.2, 0.45, 0.5], 0.25, 0.175),
    # A dip below the chord (convex): max 0.4 at alpha 0, mean 0.3: 0.1; the
    # chord 0.4 - 0.2 alpha is above the curve inside: 0.
    ([0.0, 0.5, 1.0], [0.4, 0.1, 0.2], 0.1, 0.0),
    # Extrapolated alphas (unsorted, outside [0, 1]) hold the largest values
    # and are skipped; the endpoints are found by value.
    ([1.5, 0.0, 1.0, 0.5, -0.5], [9.0, 0.2, 0.4, 0.6, 9.0], 0.3, 0.3),
])
def test_both_definitions_of_hand_computed_curves(alphas, curve, endpoint_mean, chord):
  got = interpolate.curve_barriers(np.float32(alphas), curve)
  assert got == pytest.approx({"": endpoint_mean, "_chord": chord}, abs=1e-7)


def test_the_definitions_can_rank_two_paths_oppositely():
  # A: straight from 0 to 0.4 (0.2, 0); B: flat at 0.2 with a bump of 0.1 (0.1, 0.1).
  a = interpolate.curve_barriers([0.0, 0.5, 1.0], [0.0, 0.2, 0.4])
  b = interpolate.curve_barriers([0.0, 0.5, 1.0], [0.2, 0.3, 0.2])
  assert a[""] > b[""] and a["_chord"] < b["_chord"]


def test_neither_definition_is_negative_and_they_differ_by_at_most_half_the_gap():
  # Their pointwise difference is (f(1) - f(0)) (alpha - 1/2), and each max
  # includes alpha 0 and 1, where the chord gap is 0: no sign can differ.
  rng = np.random.default_rng(0)
  alphas = np.linspace(0, 1, 9)
  for _ in range(200):
    curve = rng.normal(size=9)
    got = interpolate.curve_barriers(alphas, curve)
    assert got[""] >= 0 and got["_chord"] >= -1e-12
    assert abs(got[""] - got["_chord"]) <= abs(curve[-1] - curve[0]) / 2 + 1e-12


def test_barriers_name_each_definition_of_error_and_loss():
  alphas = [0.0, 0.5, 1.0]
  error, loss = [0.1, 0.2, 0.3], [1.0, 0.5, 3.0]
  got = interpolate.barriers(np.float32(alphas), loss, error)
  assert tuple(sorted(got)) == tuple(sorted(interpolate.BARRIERS))
  assert got["error_barrier"] == pytest.approx(0.1) and got["error_barrier_chord"] == 0.0
  # loss: max 3 minus mean 2 = 1; chord 1 + 2 alpha is above 0.5 at alpha 0.5: 0.
  assert got["loss_barrier"] == pytest.approx(1.0) and got["loss_barrier_chord"] == 0.0


def _ends(model, seeds=(0, 1)):
  return [dict(zip(("params", "batch_stats"), train.init_variables(
      model, jax.random.PRNGKey(s), SHAPE))) for s in seeds]


def _data(n=48):
  x = jax.random.normal(jax.random.PRNGKey(7), (n,) + SHAPE)
  return x, jnp.arange(n, dtype=jnp.int32) % 3


def test_every_pair_and_the_summary_hold_both_definitions():
  model = models.MLP(3, (8,))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *_ends(model, (0, 1, 2)))
  out = interpolate.pairwise(model, stacked, interpolate.default_alphas(5), *_data())
  for name in interpolate.BARRIERS:
    values = [p[name] for p in out["pairs"]]
    assert out["summary"][f"{name}_max"] == max(values)
    assert out["summary"][f"{name}_mean"] == pytest.approx(np.mean(values))
  for p in out["pairs"]:
    recomputed = interpolate.curve_barriers(p["alphas"], p["error"])
    assert (p["error_barrier"], p["error_barrier_chord"]) == (recomputed[""],
                                                              recomputed["_chord"])


def test_repair_runs_for_a_net_without_batchnorm_and_keeps_the_endpoints():
  model = models.MLP(3, (8,))
  a, b = _ends(model)
  x, y = _data()
  bn = interpolate.bn_batches(x, 16, 2, jax.random.PRNGKey(0))
  alphas = interpolate.default_alphas(5)
  plain = interpolate.evaluate_path(model, a, b, alphas, x, y)
  repaired = interpolate.evaluate_path(model, a, b, alphas, x, y, bn_mode="repair", bn_images=bn)
  assert repaired["bn_mode"] == "repair"
  # At alpha 0 and 1 the net is an endpoint, whose statistics are its own target.
  for i in (0, -1):
    np.testing.assert_allclose(repaired["loss"][i], plain["loss"][i], rtol=1e-4)
  assert not np.allclose(repaired["loss"][1:-1], plain["loss"][1:-1], rtol=1e-4)


def test_repair_is_refused_for_batchnorm_with_the_reason_and_needs_batches():
  model = models.ConvNet(3, depth=1, width=4, norm="batch")
  a, b = _ends(model)
  x, y = _data()
  bn = interpolate.bn_batches(x, 16, 2, jax.random.PRNGKey(0))
  with pytest.raises(validate.InputError, match="reset"):
    interpolate.evaluate_path(model, a, b, [0.0, 1.0], x, y, bn_mode="repair", bn_images=bn)
  mlp = models.MLP(3, (8,))
  a, b = _ends(mlp)
  with pytest.raises(validate.InputError, match="training batches"):
    interpolate.evaluate_path(mlp, a, b, [0.0, 1.0], x, y, bn_mode="repair")


@pytest.mark.parametrize("has_bn,bn_modes,want", [
    (False, ("interpolate", "reset"), ("interpolate",)),
    (False, ("interpolate", "reset", "repair"), ("interpolate", "repair")),
    (False, ("repair",), ("interpolate", "repair")),
    (True, ("interpolate", "reset"), ("interpolate", "reset")),
])
def test_conditions_follow_the_net(has_bn, bn_modes, want):
  s = types.SimpleNamespace(init_batch_stats={"bn": jnp.zeros(2)} if has_bn else {})
  a = ml_collections.ConfigDict(dict(bn_modes=bn_modes, eval_splits=("test", "train")))
  assert interpolation.conditions(s, a) == [(split, mode) for split in ("test", "train")
                                            for mode in want]


def test_the_config_check_refuses_repair_for_a_batchnorm_model():
  config = conftest.digits_config(("analysis",))
  config.analysis.bn_modes = ("interpolate", "repair")
  interpolation.check(config)  # an MLP without norm: REPAIR applies
  config.model = model_part.get("convnet", norm="batch")
  with pytest.raises(validate.InputError, match="bn_modes entry 'repair'.*BatchNorm.*reset"):
    interpolation.check(config)


def _record(**extra):
  ci = stats.barrier_ci({0: [0.1, 0.2, 0.3]})
  return {"model": "real_r01", "sparsity": 0.2, "measured_on": "test/interpolate",
          "error_barrier_ci": ci, "error_barrier_max": 0.3, "loss_barrier_mean": 0.5,
          "test_accuracy_ci": stats.mean_accuracy_ci([0.9, 0.91, 0.92], 100), **extra}


def test_the_barrier_table_names_each_definition_and_reads_older_records():
  chord = stats.barrier_ci({0: [0.0, 0.05, 0.1]})
  table = report.barrier_table([_record(error_barrier_chord_ci=chord,
                                        loss_barrier_chord_mean=0.25), _record()])
  header, _, new, old = table.splitlines()[:4]
  assert "(endpoint mean)" in header and "(chord)" in header
  assert stats.format_ci(chord) in new and "0.25" in new
  assert old.count("n/a") == 2  # written before the chord definition existed
  assert "Frankle" in report.BARRIER_DEFINITIONS and "Entezari" in report.BARRIER_DEFINITIONS
