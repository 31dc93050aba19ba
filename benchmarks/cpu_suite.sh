#!/usr/bin/env bash
# The 2-core CPU figures of docs/performance.md, one command: `benchmarks/cpu_suite.sh OUT`.
# Every line is vitzoo and its reference side by side in one process (interleaved rounds, medians), wall
# clock with torch's default threads, on an otherwise idle machine; the tables go to OUT/cpu.md and the rows
# to OUT/*.json. Measured 2026-12-02 on a 2-core Intel Xeon with AMX (docs/performance.md): 4.5 min; on a
# 2-core AVX2-only AMD EPYC (no bf16 units: every row fp32 but the int8 ones, added later): 16.6 min;
# 2026-12-03 on a 2-core Intel Xeon with avx512_bf16 and no AMX (bf16 at half the fp32 rate: the policy
# keeps fp32): 12.5 min.
# Needs torch, timm and vitzoo importable (the .venv of `make install`); --openvino rows need `pip install openvino`.
set -euo pipefail
out=${1:?output folder}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
vz() { $py -m vitzoo "$@"; }
export VITZOO_CACHE_DIR=${VITZOO_CACHE_DIR:-$out/cache}  # the precision policy measures afresh
{
lscpu | grep -E "Model name|^CPU\(s\)|L2|L3"
echo "bf16/int8 units: $(grep -o -w -E "avx512_bf16|avx512_vnni|avx_vnni|amx_bf16|amx_int8|amx_tile" /proc/cpuinfo | sort -u | tr '\n' ' ' || true)"  # none on e.g. an AVX2-only CPU
# the instructions' own rates, where the CPU has AVX512-BF16 and AVX512-FP16: is a slow bf16 matmul the CPU's?
if grep -qw avx512_bf16 /proc/cpuinfo && grep -qw avx512_fp16 /proc/cpuinfo && command -v gcc >/dev/null; then
  gcc -O2 -march=sapphirerapids benchmarks/fma_rates.c -o "$out/fma_rates" && "$out/fma_rates"
fi
# inference: ours under the policy vs timm fp32 (a plain script), % of the bf16 matmul peak
vz bench --model deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224 --batch-size 16 --rounds 5 \
   --json "$out/infer.json"
# int8 in PyTorch (--precision int8: oneDNN's int8 products) vs timm fp32, and of the int8 product's own peak
vz bench --model deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224 --precision int8 --batch-size 16 \
   --rounds 5 --json "$out/infer_int8.json"
# the same with the ranges calibrated first (infer / eval --calibration-data), and BEiT (layer scales folded)
vz bench --model deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224 --precision int8 --calibrated \
   --batch-size 16 --rounds 5 --json "$out/infer_int8_calibrated.json"
vz bench --model beit_base_patch16_224 --precision int8 --calibrated --batch-size 8 --rounds 5 --json "$out/infer_int8_beit.json"
# training step: ours bf16 autocast (amp_dtype auto) + fused AdamW vs timm fp32 + AdamW defaults
vz bench --model deit_tiny_patch16_224,deit_small_patch16_224 --mode train --batch-size 16 --rounds 5 \
   --json "$out/train.json"
# T2T-ViT vs the official arithmetic at the same precision: fp32 both, then bf16 (ours weights, official autocast)
vz bench --model t2t_vit_14,t2t_vit_t_14 --batch-size 8 --precision fp32 --rounds 5 --json "$out/t2t_fp32.json"
vz bench --model t2t_vit_14,t2t_vit_t_14 --batch-size 8 --ref-precision bf16 --rounds 5 --json "$out/t2t_bf16.json"
# host memory: glibc defaults vs freed memory kept (vitzoo's default), training at batch 64
VITZOO_MALLOC=default vz bench --model deit_small_patch16_224 --mode train --batch-size 64 --rounds 3 --against none \
   --json "$out/train_b64_glibc.json"
vz bench --model deit_small_patch16_224 --mode train --batch-size 64 --rounds 3 --against none \
   --json "$out/train_b64_kept.json"
# scaling: batch size, resolution
vz bench --model deit_small_patch16_224 --batch-size 1,8,16,32,64 --rounds 3 --json "$out/scaling_batch.json"
vz bench --model deit_tiny_patch16_224 --img-size 224,384 --batch-size 16 --rounds 3 --json "$out/scaling_res.json"
# packed linears (the policy's choice per dtype): plain vs packed vs the reference, fp32 and bf16
$py benchmarks/bench_packed.py --model deit_small_patch16_224,t2t_vit_14,t2t_vit_t_14 --batch 16 --rounds 5
# end to end: vitzoo infer of a folder of JPEGs vs a plain timm fp32 script with a 2-worker DataLoader
$py benchmarks/bench_infer.py --model deit_small_patch16_224 --num-images 512 --rounds 3
$py benchmarks/bench_infer.py --model deit_small_patch16_224 --num-images 512 --rounds 3 --infer-args "--precision int8"
# ONNX: int8 vs fp32 in ONNX Runtime, and the same files in OpenVINO when it is installed
if $py -c "import openvino" 2>/dev/null; then ov=--openvino; else ov=; fi
$py benchmarks/bench_onnx.py --model deit_small_patch16_224 --batch 8 --rounds 5 $ov
} 2>&1 | tee "$out/cpu.md"
