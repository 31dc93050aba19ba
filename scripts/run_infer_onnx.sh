#!/usr/bin/env bash
# Predict with an exported ONNX model; writes {path: class} JSON (the seeds' run_infer_onnx.sh shape).
#   bash scripts/run_infer_onnx.sh DATA --onnx_path ONNX_PATH [--output OUTPUT_JSON_FILE (default: predictions.json)] [--extra ARGS...]
# DATA is an image file or a folder of images. Env: PYTHON (default: python).
set -euo pipefail
usage() { sed -n '3p' "$0" | sed 's/^# //' >&2; exit 1; }

[ $# -ge 1 ] || usage
DATA=$1; shift
case "$DATA" in -h|--help) usage ;; esac
[ -e "$DATA" ] || { echo "image or folder not found: $DATA" >&2; usage; }
ONNX=""; OUTPUT=predictions.json; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --onnx_path|--onnx-path) [ $# -ge 2 ] || usage; ONNX=$2; shift 2 ;;
    --output) [ $# -ge 2 ] || usage; OUTPUT=$2; shift 2 ;;
    --extra) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$ONNX" ] || { echo "--onnx_path is required" >&2; usage; }
set -x
exec "${PYTHON:-python}" -m vitzoo infer-onnx "$DATA" --onnx_path "$ONNX" --output "$OUTPUT" ${EXTRA[@]+"${EXTRA[@]}"}
