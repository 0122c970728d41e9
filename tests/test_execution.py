"""The one execution policy: several local devices take whole copies (or whole
blocks of points), and the results equal those of one device.

The device count is fixed when JAX starts, so the multi-device side runs in a
subprocess with forced host devices (XLA_FLAGS), as tests/test_parallel.py does.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import conftest
from lmcjax import execution

# Trains 4 vmapped SGD-noise copies of test_engine's MLP and evaluates a
# 7-alpha interpolation path between two of them (7 alphas: not a multiple of
# the device count) and a Hutchinson trace (chunks of 4 probes, split over the
# devices), then prints the results and where the copies lay.
WORKER = """
import json, sys
import jax, numpy as np
sys.path.insert(0, "tests")
import test_engine
from lmcjax import curvature, engine, execution, interpolate, models
from lmcjax.configs.parts import model as model_part
program, steps, make_copies = test_engine.setting("mlp")
model = models.create(model_part.get("mlp", hidden=(16,)), test_engine.C)
states, losses = engine.run_copies(program, make_copies(4), None, steps, execution="vmapped")
ends = {"params": states.params, "batch_stats": states.batch_stats}
a, b = execution.take(ends, 0), execution.take(ends, 1)
x, y = test_engine.tiny_data(48)
path = interpolate.evaluate_path(model, a, b, np.linspace(0, 1, 7), x, y,
                                 execution="vmapped", chunk_alphas=2, eval_batch_size=16)
doubled = execution.map_points(lambda k, p: p * k, 2, "vmapped")(2.0, np.arange(7.0))
assert np.array_equal(np.asarray(doubled), 2 * np.arange(7.0)), doubled
problem = curvature.LossProblem(model, a["params"], {}, x, y, batch_size_examples=48)
probes = curvature.hutchinson(problem, jax.random.PRNGKey(3), max_probes=8, chunk_probes=4,
                              execution="vmapped")
print(json.dumps({"devices": len(states.params["Dense_0"]["kernel"].sharding.device_set),
                  "hutchinson_trace": probes.trace,
                  "losses": np.asarray(losses).tolist(), "path_loss": path["loss"],
                  "kernel": np.asarray(states.params["Dense_0"]["kernel"]).ravel().tolist()}))
"""


def _run(devices: int) -> dict:
  env = {**os.environ, "PYTHONPATH": conftest.REPO, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                       + f" --xla_force_host_platform_device_count={devices}")}
  out = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True,
                       cwd=conftest.REPO, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_copies_and_points_split_over_devices_give_the_single_device_results():
  one, two = _run(1), _run(2)
  assert one["devices"] == 1 and two["devices"] == 2  # 2 copies per device
  # Each device runs the same per-copy program on fewer copies: equal up to
  # float rounding, which may differ in the last bits between batch sizes.
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(two["kernel"], one["kernel"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(two["path_loss"], one["path_loss"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(two["hutchinson_trace"], one["hutchinson_trace"], rtol=1e-4)


@pytest.mark.parametrize("pieces,devices,expected", [
    (1, 8, 1), (2, 8, 2), (8, 8, 8), (16, 8, 8), (12, 8, 6), (7, 8, 7), (3, 2, 1), (4, 2, 2)])
def test_each_device_takes_whole_pieces(pieces, devices, expected):
  assert execution.devices_for(pieces, devices) == expected


def test_one_device_leaves_copies_where_they_are():
  stacked = {"w": np.zeros((4, 3), np.float32)}
  assert len(jax.local_devices()) == 1  # the test process: forced devices run in subprocesses
  assert execution.shard_copies(stacked) is stacked
