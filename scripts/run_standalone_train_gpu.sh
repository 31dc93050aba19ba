#!/usr/bin/env bash
# Train on one GPU (the seeds' run_standalone_train_gpu.sh argument shape), through torchrun.
#   bash scripts/run_standalone_train_gpu.sh CONFIG [--device DEVICE_ID (default: 0)]
#        [--checkpoint CHECKPOINT (resume from it; 'auto' = newest in output_dir)] [--extra ARGS... (any vitzoo train option)]
# Example: bash scripts/run_standalone_train_gpu.sh configs/deit_tiny_patch16_224.yaml --device 0 --extra --batch_size 128
# The config is checked first (vitzoo train --check); without a GPU it trains on the CPU, and says so.
# Env: PYTHON (default: python).
set -euo pipefail
usage() { sed -n '3,4p' "$0" | sed 's/^# //' >&2; exit 1; }

. "$(dirname "$0")/lib/args.bash"
DEVICE=0
option() { case "$1" in --device) DEVICE=$2 ;; *) return 1 ;; esac; }
parse_seed_args "$@"
[[ "$DEVICE" =~ ^[0-9]+$ ]] || { echo "--device takes one GPU id, got '$DEVICE'" >&2; usage; }

ARGS=(--config "$CONFIG")
[ -n "$CHECKPOINT" ] && ARGS+=(--resume "$CHECKPOINT")
check_train_args "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
use_one_gpu "$DEVICE" "training in 1 process"
set -x
exec "${PYTHON:-python}" -m vitzoo.cli.launch --standalone --nproc_per_node 1 \
  -m vitzoo train "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
