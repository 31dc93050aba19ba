#!/usr/bin/env bash
# Evaluate an exported ONNX model with ONNX Runtime on a validation folder DATA/<class>/<images> (seeds' shape).
#   bash scripts/run_eval_onnx.sh DATA --onnx_path ONNX_PATH [--extra ARGS... (e.g. -m CPU --image_size 224)]
# Prints: eval results: {'Top1-Acc': ..., 'Top5-Acc': ...}. Env: PYTHON (default: python).
set -euo pipefail
usage() { sed -n '3p' "$0" | sed 's/^# //' >&2; exit 1; }

[ $# -ge 1 ] || usage
DATA=$1; shift
case "$DATA" in -h|--help) usage ;; esac
[ -d "$DATA" ] || { echo "validation folder not found: $DATA" >&2; usage; }
ONNX=""; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --onnx_path|--onnx-path) [ $# -ge 2 ] || usage; ONNX=$2; shift 2 ;;
    --extra) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$ONNX" ] || { echo "--onnx_path is required" >&2; usage; }
set -x
exec "${PYTHON:-python}" -m vitzoo eval-onnx "$DATA" --onnx_path "$ONNX" ${EXTRA[@]+"${EXTRA[@]}"}
