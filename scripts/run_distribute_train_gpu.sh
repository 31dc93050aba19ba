#!/usr/bin/env bash
# Train on several GPUs with DistributedDataParallel (the seeds' run_distribute_train_gpu.sh argument shape).
#   bash scripts/run_distribute_train_gpu.sh CONFIG [--num_devices N] [--device_ids IDS (e.g. '0,1,2,3')]
#        [--checkpoint CHECKPOINT (resume; 'auto' = newest in output_dir)] [--extra ARGS... (any vitzoo train option)]
# N defaults to the number of --device_ids, else to every GPU nvidia-smi lists (no GPU: 1 CPU process, said so).
# Multi-node: run the same command on each node with NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT set (N = processes
# per node). The config is checked once (vitzoo train --check) before torchrun starts. Env: PYTHON (default: python).
# Example: bash scripts/run_distribute_train_gpu.sh configs/deit_base_patch16_224.yaml --num_devices 4 \
#            --device_ids 0,1,2,3 --extra --amp_level O0 --batch_size 64 --num_parallel_workers 8
set -euo pipefail
usage() { sed -n '3,4p' "$0" | sed 's/^# //' >&2; exit 1; }

. "$(dirname "$0")/lib/args.bash"
NUM=""; IDS=""
option() {
  case "$1" in
    --num_devices|--num-devices) NUM=$2 ;;
    --device_ids|--device-ids) IDS=$2 ;;
    *) return 1 ;;
  esac
}
parse_seed_args "$@"

if [ -n "$IDS" ]; then
  [[ "$IDS" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "--device_ids must look like 0,1,2,3, got '$IDS'" >&2; usage; }
  N_IDS=$(echo "$IDS" | tr ',' '\n' | wc -l)
  [ -z "$NUM" ] && NUM=$N_IDS
  [ "$NUM" -le "$N_IDS" ] || { echo "--num_devices $NUM but only $N_IDS id(s) in --device_ids" >&2; exit 1; }
fi
[ -z "$NUM" ] || [[ "$NUM" =~ ^[1-9][0-9]*$ ]] || { echo "--num_devices must be a positive integer, got '$NUM'" >&2; usage; }

ARGS=(--config "$CONFIG")
[ -n "$CHECKPOINT" ] && ARGS+=(--resume "$CHECKPOINT")
check_train_args "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}

GPUS=$(gpu_count)
if [ "$GPUS" -eq 0 ]; then  # torchrun would start NUM CPU processes, each repeating what the others do
  echo "no GPU found (nvidia-smi lists none): training in 1 CPU process${NUM:+ instead of $NUM}" \
       "(for several CPU processes run torchrun --nproc_per_node N -m vitzoo train yourself)" >&2
  NUM=1
else
  for id in ${IDS//,/ }; do
    [ "$id" -lt "$GPUS" ] || { echo "--device_ids $IDS: only $GPUS GPU(s) found (ids 0 to $((GPUS - 1)))" >&2; exit 1; }
  done
  [ -n "$IDS" ] && export CUDA_VISIBLE_DEVICES=$IDS
  [ -n "$NUM" ] || NUM=$GPUS
  [ "$NUM" -le "$GPUS" ] || { echo "--num_devices $NUM: only $GPUS GPU(s) found" >&2; exit 1; }
  PER_NODE=""; [ "${NNODES:-1}" = 1 ] || PER_NODE=" on each of $NNODES nodes"
  echo "training on $NUM GPU(s)${IDS:+ of $IDS}, one process each$PER_NODE" >&2
fi

NNODES=${NNODES:-1}
if [ "$NNODES" = 1 ] && [ -z "${MASTER_PORT:-}" ]; then
  LAUNCH=(--standalone)
else
  LAUNCH=(--nnodes "$NNODES" --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}"
          --master_port "${MASTER_PORT:-29500}")
fi
set -x
exec "${PYTHON:-python}" -m vitzoo.cli.launch "${LAUNCH[@]}" --nproc_per_node "$NUM" \
  -m vitzoo train "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
