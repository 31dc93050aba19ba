#!/usr/bin/env bash
# Evaluate a checkpoint on the config's validation set (the seeds' run_eval_gpu.sh argument shape).
#   bash scripts/run_eval_gpu.sh CONFIG [--device DEVICE_ID (default: 0)] [--checkpoint CHECKPOINT]
#        [--extra ARGS... (any vitzoo eval option, e.g. --data_url /data/imagenet/ --val_dir validation_preprocess)]
# Without --checkpoint the config's 'pretrained' is evaluated. Prints: eval results: {'Loss': ..., 'Top1-Acc': ...}
# Env: PYTHON (default: python).
set -euo pipefail
usage() { sed -n '3,4p' "$0" | sed 's/^# //' >&2; exit 1; }

. "$(dirname "$0")/lib/args.bash"
DEVICE=0
option() { case "$1" in --device) DEVICE=$2 ;; *) return 1 ;; esac; }
parse_seed_args "$@"
[[ "$DEVICE" =~ ^[0-9]+$ ]] || { echo "--device takes one GPU id, got '$DEVICE'" >&2; usage; }

use_one_gpu "$DEVICE" "evaluating"
ARGS=(--config "$CONFIG")
[ -n "$CHECKPOINT" ] && ARGS+=(--pretrained "$CHECKPOINT")
set -x
exec "${PYTHON:-python}" -m vitzoo eval "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
