#!/bin/bash
# Runs lmcjax sweep jobs on every worker of a Cloud TPU VM (single host or pod slice).
#
# Usage (from your workstation, with gcloud configured):
#   launch/tpu.sh TPU_NAME ZONE CONFIG ROOT [JOB_INDEX ...] [-- --config.X=Y ...]
#   e.g. launch/tpu.sh my-v4-32 us-central2-b configs/X.py /tmp/lmcjax_sweep 0 1 2
#   JOB_INDEX defaults to every job of the sweep (counted on worker 0).
#
# Each job runs on all workers at once as one multi-host program:
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all --command '...'
# with --config.parallel.distributed=True (jax.distributed.initialize() detects
# the pod) and --config.parallel.data_parallel=True (batches sharded over all
# chips), so jobs run one after another, each using the whole slice.
#
# Before the first run, put the code on every worker, e.g.
#   gcloud compute tpus tpu-vm scp --recurse . TPU_NAME:~/lmcjax --zone ZONE --worker=all
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all \
#     --command 'pip install "jax[tpu]" flax optax orbax-checkpoint ml_collections'
# REPO_DIR (default ~/lmcjax) is where it lives on the workers.
#
# Every worker runs the same job and writes the same files under ROOT. Put
# ROOT on storage all workers share (an NFS or gcsfuse mount): orbax writes
# the checkpoints of a multi-host run collectively. Then merge the sweep:
#   python launch/aggregate.py --workdir ROOT
# (From a local ROOT instead, fetch worker 0's copy first:
#   gcloud compute tpus tpu-vm scp --recurse TPU_NAME:ROOT ./sweep --zone ZONE --worker=0)
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: launch/tpu.sh TPU_NAME ZONE CONFIG ROOT [JOB_INDEX ...] [-- --config.X=Y ...]" >&2
  exit 2
fi
TPU=$1
ZONE=$2
CONFIG=$3
ROOT=$4
shift 4
REPO_DIR=${REPO_DIR:-\~/lmcjax}

JOBS=()
while [[ $# -gt 0 && "$1" != "--" ]]; do JOBS+=("$1"); shift; done
[[ $# -gt 0 ]] && shift  # the "--"
OVERRIDES=("$@")

tpu_ssh() {  # tpu_ssh WORKER COMMAND
  gcloud compute tpus tpu-vm ssh "${TPU}" --zone "${ZONE}" --worker="$1" --command "$2"
}

SWEEP="cd ${REPO_DIR} && python launch/sweep.py --config ${CONFIG} --workdir ${ROOT} ${OVERRIDES[*]:-}"
if [[ ${#JOBS[@]} -eq 0 ]]; then
  N=$(tpu_ssh 0 "${SWEEP} --count" | tail -n 1)
  JOBS=($(seq 0 $((N - 1))))
fi

for JOB in "${JOBS[@]}"; do
  echo "lmcjax: job ${JOB} on all workers of ${TPU}"
  tpu_ssh all "${SWEEP} --job_index ${JOB} --config.parallel.distributed=True --config.parallel.data_parallel=True"
done
