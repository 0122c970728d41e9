"""Data-parallel training over all devices, on one host or many.

Every process holds the full dataset and draws the same global batch
(train.BatchOrder is a pure function of (key, step)), so data parallelism
needs no input pipeline of its own: each batch is sharded on the 'data' axis
of a mesh over all global devices, the train state is replicated, and GSPMD
partitions the unchanged jitted train_step, inserting the gradient all-reduce
itself.

Multi-host runs call `maybe_initialize_distributed(config)` first, before any
JAX computation; `jax.distributed.initialize()` then finds the other processes
(SLURM, Open MPI and TPU pods are detected; CPU processes talk through the
gloo collectives, jax's default CPU collectives implementation).
"""
from typing import Any, Dict, Optional

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from lmcjax import validate

PyTree = Any
DATA_AXIS = "data"


def check_config(config) -> None:
  """Checks config.parallel before any compute (no JAX backend is started)."""
  section = config.parallel
  validate.non_negative("parallel.num_processes", section.num_processes)
  explicit = (bool(section.coordinator_address), section.num_processes > 0,
              section.process_id >= 0)
  # Half-set fields would send jax into cluster auto-detection, which fails
  # far from the cause on a machine that is not a cluster.
  validate.require(
      all(explicit) or not any(explicit),
      "parallel.coordinator_address, num_processes and process_id must be set together or "
      f"not at all, got {section.coordinator_address!r}, {section.num_processes}, "
      f"{section.process_id}")
  if all(explicit):
    validate.require(section.distributed, "parallel.coordinator_address is set but "
                     "parallel.distributed=False; set it to True to use it")
    validate.require(section.process_id < section.num_processes,
                     f"parallel.process_id={section.process_id} must be < "
                     f"parallel.num_processes={section.num_processes}")


def maybe_initialize_distributed(config) -> bool:
  """Joins the multi-process run when config.parallel.distributed; True if it did.

  Call it before anything touches a JAX device. Left empty, the address,
  process count and id are detected by JAX (SLURM, Open MPI, TPU pods).
  """
  check_config(config)
  section = config.parallel
  if not section.distributed or jax.distributed.is_initialized():
    return False
  kwargs: Dict[str, Any] = {}
  if section.coordinator_address:
    kwargs = dict(coordinator_address=section.coordinator_address,
                  num_processes=section.num_processes, process_id=section.process_id)
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:
    if kwargs:
      raise
    # jax's message ('coordinator_address should be defined') does not say why.
    raise validate.InputError(
        f"parallel.distributed=True but no SLURM, Open MPI or TPU pod environment was found "
        f"({e}); set parallel.coordinator_address, num_processes and process_id") from e
  return True


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over all global devices (or `devices`).

  Auto axis types, not make_mesh's default Explicit: the train step carries no
  sharding annotations and GSPMD is left to propagate the batch sharding.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """A copy of `tree` on every device of `mesh`.

  Across processes, jax.device_put checks that every process passed the same
  value, so a state initialised differently on two hosts fails here, not as a
  silent divergence.
  """
  return jax.device_put(jax.tree.map(_host_value, tree), NamedSharding(mesh, P()))


def _host_value(x):
  # A committed single-device array cannot be put on a multi-process mesh
  # directly (that would be a cross-host transfer); its host copy can.
  if jax.process_count() > 1 and isinstance(x, jax.Array) and x.committed:
    return jax.device_get(x)
  return x


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch size") -> None:
  num = mesh.devices.size
  validate.require(batch_size % num == 0,
                   f"{name} {batch_size} is not divisible by the {num} devices of the "
                   f"data-parallel mesh; use a multiple of {num} or set "
                   "parallel.data_parallel=False")


def shard_batch(batch: Dict[str, Any], mesh: Mesh) -> Dict[str, jax.Array]:
  """Shards the global host batch (identical on every process) on its first axis.

  Each process passes the whole global batch and only the rows of its own
  devices are copied to them; passing the global shape says so.
  """
  batch_size = int(jax.tree.leaves(batch)[0].shape[0])
  check_batch_size(batch_size, mesh)
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x, x.shape), batch)


class BatchPlacer:
  """engine.run's placer for one mesh: shards each batch, replicates what the step reads."""

  def __init__(self, mesh: Mesh):
    self.mesh = mesh

  def __call__(self, batch: Dict[str, Any]) -> Dict[str, jax.Array]:
    return shard_batch(batch, self.mesh)

  def replicate(self, tree: PyTree) -> PyTree:
    return replicate(tree, self.mesh)


def batch_placer(config) -> Optional[BatchPlacer]:
  """The place_batch hook for config, or None when data parallelism is off or moot.

  None when config.parallel.data_parallel is False or there is one device, so
  the single-device path stays exactly the one without a mesh. With a placer,
  replicate the initial state (and mask) with `placer.replicate` before fit.
  """
  if not config.parallel.data_parallel or jax.device_count() == 1:
    return None
  return BatchPlacer(make_mesh())
