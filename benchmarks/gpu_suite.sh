#!/usr/bin/env bash
# The GPU figures of docs/performance.md, as run on a lent H100: `benchmarks/gpu_suite.sh PART OUT`.
# PART: models (vitzoo bench rows, eager), compiled (the same with torch.compile), feed (loader vs model),
# decode (CPU vs on-device JPEG decoding, and vitzoo infer end to end), amx (the lent machine's *host* CPU,
# an Intel Xeon with AMX: issue 12's AMX targets, measured on the CPU alone). Each writes its tables to OUT/PART.md
# and the rows to OUT/PART*.json. Needs only torch, timm and vitzoo importable (PYTHONPATH=src works).
set -euo pipefail
part=${1:?part: models|compiled|feed|decode}
out=${2:?output folder}
mkdir -p "$out"
py=${PYTHON:-python3}
vz() { $py -m vitzoo "$@"; }
common=(--device cuda --rounds 5 --iters 10 --warmup 3)
{
case $part in
models)
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
  # inference: ours under the policy (bf16 weights) vs timm as a plain script runs it (fp32), then vs timm bf16
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --batch-size 256 "${common[@]}" \
     --json "$out/infer_vs_fp32.json"
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --batch-size 256 --ref-precision bf16 \
     "${common[@]}" --json "$out/infer_vs_bf16.json"
  # training step: ours bf16 autocast (amp_dtype auto) vs timm fp32, then vs timm bf16 autocast
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --mode train --batch-size 128 "${common[@]}" \
     --json "$out/train_vs_fp32.json"
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --mode train --batch-size 128 --ref-precision bf16 \
     "${common[@]}" --json "$out/train_vs_bf16.json"
  # T2T-ViT vs the official arithmetic at the same precision: fp32 both, then bf16 both
  vz bench --model t2t_vit_14,t2t_vit_t_14 --batch-size 128 --precision fp32 "${common[@]}" --json "$out/t2t_fp32.json"
  vz bench --model t2t_vit_14,t2t_vit_t_14 --batch-size 128 --precision bf16 --ref-precision bf16 "${common[@]}" \
     --json "$out/t2t_bf16.json"
  # scaling: batch size and resolution
  vz bench --model deit_small_patch16_224 --batch-size 1,16,64,256,512 --against none "${common[@]}" \
     --json "$out/scaling_batch.json"
  vz bench --model deit_small_patch16_224 --img-size 224,384 --batch-size 128 --against none "${common[@]}" \
     --json "$out/scaling_res.json"
  ;;
compiled)
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --batch-size 256 --ref-precision bf16 --compile \
     "${common[@]}" --json "$out/infer_compiled.json"
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --mode train --batch-size 128 --ref-precision bf16 \
     --compile "${common[@]}" --json "$out/train_compiled.json"
  ;;
feed)
  # the device ops on CUDA against the CPU's pixels (augment_on / decode_on: device) before timing them
  $py -m pytest -q -m gpu tests/test_data_augment_device.py tests/test_data_pillow_resize.py
  for w in 8 16; do
    for aug in cpu device decode; do  # augment_on / decode_on: device -- augmentation / decoding on the GPU
      $py benchmarks/bench_feed.py --model deit_small_patch16_224 --device cuda --batch-size 256 --workers $w \
          --num-images 4096 --size 400 --augment-on $aug --json "$out/feed_w${w}_$aug.json"
    done
  done
  $py benchmarks/bench_data.py --num-images 2048 --size 400 --jpeg --workers 8 --batch-size 256 --rounds 2 \
      --augment-on cpu,device,decode --device cuda
  ;;
decode)
  $py benchmarks/bench_decode.py --device cuda --num-images 2048 --workers 8 --batch-size 256
  ;;
amx)
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core"
  cpu=(--device cpu --rounds 3 --warmup 1)
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --batch-size 16 "${cpu[@]}" --json "$out/amx_infer.json"
  vz bench --model deit_tiny_patch16_224,deit_small_patch16_224 --mode train --batch-size 16 "${cpu[@]}" \
     --json "$out/amx_train.json"
  vz bench --model t2t_vit_14,t2t_vit_t_14 --batch-size 16 --precision fp32 "${cpu[@]}" --json "$out/amx_t2t.json"
  # int8 on AMX-int8 (calibrated ranges), against timm fp32; the bf16 rows above are the policy's choice there
  vz bench --model deit_small_patch16_224,deit_base_patch16_224 --batch-size 16 --precision int8 --calibrated \
     "${cpu[@]}" --json "$out/amx_int8.json"
  CUDA_VISIBLE_DEVICES= $py benchmarks/bench_infer.py --model deit_small_patch16_224 --num-images 512 --rounds 2 \
     --json "$out/amx_infer_e2e.json"
  CUDA_VISIBLE_DEVICES= $py benchmarks/bench_onnx.py --model deit_small_patch16_224 --batch 8 --rounds 3
  ;;
*) echo "unknown part $part" >&2; exit 2 ;;
esac
} 2>&1 | tee "$out/$part.md"
