#!/usr/bin/env bash
# Evaluate a checkpoint on the config's validation set (the seeds' run_eval_gpu.sh argument shape).
#   bash scripts/run_eval_gpu.sh CONFIG [--device DEVICE_ID (default: 0)] [--checkpoint CHECKPOINT]
#        [--extra ARGS... (any vitzoo eval option, e.g. --data_url /data/imagenet/ --val_dir validation_preprocess)]
# Without --checkpoint the config's 'pretrained' is evaluated. Prints: eval results: {'Loss': ..., 'Top1-Acc': ...}
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
[ -n "$CHECKPOINT" ] && ARGS+=(--pretrained "$CHECKPOINT")
set -x
exec "${PYTHON:-python}" -m vitzoo eval "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
