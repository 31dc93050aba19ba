#!/usr/bin/env bash
# Predict the class of an image or of every image in a folder; writes {path: class} JSON (the seeds' shape).
#   bash scripts/run_infer_gpu.sh DATA --checkpoint CHECKPOINT [--arch NAME (alias --model)]
#        [--output OUTPUT_JSON_FILE (default: predictions.json)] [--device DEVICE_ID (default: 0)] [--extra ARGS...]
# --arch is needed only for official release files (vitzoo checkpoints record their model). Env: PYTHON.
set -euo pipefail
usage() { sed -n '3,4p' "$0" | sed 's/^# //' >&2; exit 1; }

. "$(dirname "$0")/lib/args.bash"
[ $# -ge 1 ] || usage
DATA=$1; shift
case "$DATA" in -h|--help) usage ;; esac
[ -e "$DATA" ] || { echo "image or folder not found: $DATA" >&2; usage; }
CHECKPOINT=""; ARCH=""; OUTPUT=predictions.json; DEVICE=0; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint) [ $# -ge 2 ] || usage; CHECKPOINT=$2; shift 2 ;;
    --arch|--model) [ $# -ge 2 ] || usage; ARCH=$2; shift 2 ;;
    --output) [ $# -ge 2 ] || usage; OUTPUT=$2; shift 2 ;;
    --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
    --extra) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$CHECKPOINT" ] || { echo "--checkpoint is required" >&2; usage; }
[[ "$DEVICE" =~ ^[0-9]+$ ]] || { echo "--device takes one GPU id, got '$DEVICE'" >&2; usage; }

use_one_gpu "$DEVICE" "predicting"
ARGS=("$DATA" --checkpoint "$CHECKPOINT" --output "$OUTPUT")
[ -n "$ARCH" ] && ARGS+=(--arch "$ARCH")
set -x
exec "${PYTHON:-python}" -m vitzoo infer "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
