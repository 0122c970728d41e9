#!/bin/bash
# Runs one job of an lmcjax sweep per SLURM array task.
#
# Usage (from the repository root):
#   N=$(python launch/sweep.py --config configs/X.py --workdir ROOT --count)
#   sbatch --array=0-$((N-1)) launch/slurm.sh configs/X.py ROOT [--config.train.epochs=3 ...]
#   # when the array is done (or any time: unfinished jobs are listed as such):
#   python launch/aggregate.py --workdir ROOT
#
# Task k runs job k into ROOT/<job name> (see `--list` for the names); a job
# rerun after a kill resumes from its workdir's stage cache and checkpoints.
# Extra arguments are config overrides that apply to every job.
# Limit concurrency with --array=0-$((N-1))%8; rerun only some jobs with
# --array=3,7. ROOT must be on a file system every node can reach.
#
# Multi-node jobs (one sweep job over several nodes, data-parallel): add
#   sbatch --nodes=2 --ntasks-per-node=1 ... launch/slurm.sh configs/X.py ROOT \
#     --config.parallel.distributed=True --config.parallel.data_parallel=True
# srun starts one process per task and jax.distributed.initialize() reads the
# SLURM environment for the coordinator, process count and id.
#
# Edit the #SBATCH lines below for your cluster (partition, GPU type, time).
#SBATCH --job-name=lmcjax-sweep
#SBATCH --output=slurm-%x-%A_%a.out
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
set -euo pipefail

if [[ $# -lt 2 || -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then
  echo "usage: sbatch --array=0-\$((N-1)) launch/slurm.sh CONFIG ROOT [--config.X=Y ...]" >&2
  exit 2
fi
CONFIG=$1
ROOT=$2
shift 2

cd "${SLURM_SUBMIT_DIR:-.}"
# One process per task; JAX sees only the GPUs SLURM gave it.
srun python launch/sweep.py --config "${CONFIG}" --workdir "${ROOT}" \
  --job_index "${SLURM_ARRAY_TASK_ID}" "$@"
