#!/usr/bin/env bash
# Train on one GPU (the seeds' run_standalone_train_gpu.sh argument shape), through torchrun.
#   bash scripts/run_standalone_train_gpu.sh CONFIG [--device DEVICE_ID (default: 0)]
#        [--checkpoint CHECKPOINT (resume from it; 'auto' = newest in output_dir)] [--extra ARGS... (any vitzoo train option)]
# Example: bash scripts/run_standalone_train_gpu.sh configs/deit_tiny_patch16_224.yaml --device 0 --extra --batch_size 128
# Env: PYTHON (default: python).
set -euo pipefail
usage() { sed -n '3,4p' "$0" | sed 's/^# //' >&2; exit 1; }

[ $# -ge 1 ] || usage
CONFIG=$1; shift
case "$CONFIG" in -h|--help) usage ;; esac
[ -f "$CONFIG" ] || { echo "config file not found: $CONFIG" >&2; usage; }
DEVICE=0; CHECKPOINT=""; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
    --checkpoint) [ $# -ge 2 ] || usage; CHECKPOINT=$2; shift 2 ;;
    --extra) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ "$DEVICE" =~ ^[0-9]+$ ]] || { echo "--device takes one GPU id, got '$DEVICE'" >&2; usage; }

export CUDA_VISIBLE_DEVICES=$DEVICE
ARGS=(--config "$CONFIG")
[ -n "$CHECKPOINT" ] && ARGS+=(--resume "$CHECKPOINT")
set -x
exec "${PYTHON:-python}" -m torch.distributed.run --standalone --nproc_per_node 1 \
  -m vitzoo train "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
