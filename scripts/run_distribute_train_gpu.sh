#!/usr/bin/env bash
# Train on several GPUs with DistributedDataParallel (the seeds' run_distribute_train_gpu.sh argument shape).
#   bash scripts/run_distribute_train_gpu.sh CONFIG [--num_devices N] [--device_ids IDS (e.g. '0,1,2,3')]
#        [--checkpoint CHECKPOINT (resume; 'auto' = newest in output_dir)] [--extra ARGS... (any vitzoo train option)]
# N defaults to the number of --device_ids, else to every visible GPU. Multi-node: run the same command on each
# node with NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT set (N = processes per node). Env: PYTHON (default: python).
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
  export CUDA_VISIBLE_DEVICES=$IDS
fi
if [ -z "$NUM" ]; then
  NUM=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  [ "$NUM" -ge 1 ] || NUM=1
fi
[[ "$NUM" =~ ^[1-9][0-9]*$ ]] || { echo "--num_devices must be a positive integer, got '$NUM'" >&2; usage; }

NNODES=${NNODES:-1}
if [ "$NNODES" = 1 ] && [ -z "${MASTER_PORT:-}" ]; then
  LAUNCH=(--standalone)
else
  LAUNCH=(--nnodes "$NNODES" --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}"
          --master_port "${MASTER_PORT:-29500}")
fi
ARGS=(--config "$CONFIG")
[ -n "$CHECKPOINT" ] && ARGS+=(--resume "$CHECKPOINT")
set -x
exec "${PYTHON:-python}" -m torch.distributed.run "${LAUNCH[@]}" --nproc_per_node "$NUM" \
  -m vitzoo train "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
