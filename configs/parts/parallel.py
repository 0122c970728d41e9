"""config.parallel: data-parallel training and multi-host setup (lmcjax/parallel.py).

Off by default: the default experiment runs on one CPU process, where a mesh
would only add transfers. On a multi-GPU host or a TPU slice:

  --config.parallel.data_parallel=True
  --config.parallel.distributed=True   # multi-host: SLURM or TPU pod, auto-detected
"""
import ml_collections


def get_section() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      # Shard every training batch over all (global) devices on a 'data' mesh
      # axis and replicate the state; the global batch size must divide evenly.
      data_parallel=False,
      # Call jax.distributed.initialize() before any JAX computation. With the
      # three fields below left empty, JAX detects SLURM, Open MPI and TPU pods
      # itself; set them to run several processes by hand (localhost tests).
      distributed=False,
      coordinator_address="",  # e.g. 'localhost:12345'; '' = auto-detect
      num_processes=0,  # 0 = auto-detect
      process_id=-1,  # -1 = auto-detect
  ))
