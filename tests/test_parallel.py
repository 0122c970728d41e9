"""Data-parallel (2 forced host devices) and multi-host (2 processes) training.

Both need JAX configured before import, so tests/parallel_worker.py runs in
subprocesses with timeouts: a hung collective fails the test instead of CI.
"""
import os
import socket
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from lmcjax.configs.parts import parallel as parallel_config
from lmcjax import parallel
from lmcjax import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "parallel_worker.py")
TIMEOUT_S = 50


def _env(num_devices: int):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return env


def _load(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _assert_same_run(a, b, exact: bool):
  assert int(a["step"]) == int(b["step"]) == 8
  for key in a:
    if key.startswith("leaf") or key in ("losses", "test_loss"):
      if exact:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
      else:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory):
  """One process, 2 forced CPU devices: the plain run (one device, no placer), the
  data-parallel run, and the error for a batch the mesh cannot split."""
  out = tmp_path_factory.mktemp("one_process")
  proc = subprocess.run([sys.executable, WORKER, "--out", str(out),
                         "--runs", "plain,data_parallel,indivisible"],
                        env=_env(2), capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {"plain": _load(out / "plain_p0.npz"), "dp": _load(out / "data_parallel_p0.npz"),
          "stdout": proc.stdout}


def test_data_parallel_on_2_devices_matches_one_device(one_process_runs):
  plain, dp = one_process_runs["plain"], one_process_runs["dp"]
  assert int(dp["device_count"]) == 2
  assert (int(plain["param_devices"]), int(dp["param_devices"])) == (1, 2)
  # Not bit-identical: the sharded step sums the loss over two half-batches.
  _assert_same_run(plain, dp, exact=False)
  # Training moved the weights: the comparison is not between two inits.
  assert plain["losses"][-1] < plain["losses"][0]


def test_indivisible_batch_is_one_line_input_error(one_process_runs):
  assert ("InputError: batch size 15 is not divisible by the 2 devices"
          in one_process_runs["stdout"])


def test_two_processes_match_one_process(one_process_runs, tmp_path):
  """2 processes x 1 CPU device, gloo collectives over localhost."""
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, WORKER, "--out", str(tmp_path), "--runs", "data_parallel",
       "--coordinator", f"localhost:{port}", "--num_processes", "2", "--process_id", str(i)],
      env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
           for i in range(2)]
  try:
    logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  runs = [_load(tmp_path / f"data_parallel_p{i}.npz") for i in range(2)]
  assert int(runs[0]["device_count"]) == int(runs[0]["param_devices"]) == 2
  _assert_same_run(runs[0], runs[1], exact=True)
  _assert_same_run(one_process_runs["plain"], runs[0], exact=False)
  # Same mesh shape, same partitioned program: bit-identical to 2 devices in one
  # process (a sum of two partial gradients is the same in either order).
  _assert_same_run(one_process_runs["dp"], runs[0], exact=True)


def _config(**fields):
  config = ml_collections.ConfigDict({"parallel": parallel_config.get_section()})
  config.parallel.update(fields)
  return config


def test_no_placer_when_off_or_on_one_device():
  assert parallel.batch_placer(_config(data_parallel=False)) is None
  import jax  # pylint: disable=g-import-not-at-top
  if jax.device_count() == 1:
    assert parallel.batch_placer(_config(data_parallel=True)) is None


@pytest.mark.parametrize("fields, message", [
    (dict(distributed=True, coordinator_address="localhost:1"), "set together"),
    (dict(distributed=True, coordinator_address="localhost:1", num_processes=2, process_id=2),
     "process_id=2 must be < parallel.num_processes=2"),
    (dict(coordinator_address="localhost:1", num_processes=2, process_id=0),
     "parallel.distributed=False"),
])
def test_bad_distributed_fields_fail_before_jax_starts(fields, message):
  with pytest.raises(validate.InputError, match=message):
    parallel.maybe_initialize_distributed(_config(**fields))


def test_distributed_outside_a_cluster_says_what_to_set():
  """A fresh process: jax.distributed.initialize() refuses to run after JAX has started."""
  script = ("from lmcjax.configs.parts import parallel as p; import ml_collections as m; "
            "from lmcjax import parallel, validate\n"
            "c = m.ConfigDict({'parallel': p.get_section()}); c.parallel.distributed = True\n"
            "try: parallel.maybe_initialize_distributed(c)\n"
            "except validate.InputError as e: print(e)")
  env = {k: v for k, v in _env(1).items()
         if not k.startswith(("SLURM_", "OMPI_", "PMI_", "TPU_", "JAX_COORDINATOR"))}
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=TIMEOUT_S, cwd=REPO)
  assert "no SLURM, Open MPI or TPU pod environment was found" in out.stdout, out.stderr[-2000:]
