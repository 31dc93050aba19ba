"""Packed linears (models/packed.py) against the plain model and the reference, per dtype, on this CPU.

The precision policy packs a CPU model's linear layers for oneDNN (bias, GELU and the residual adds fused)
for bf16 weights, and for fp32 only where the CPU has bf16 units: where this was measured faster. This
script is the measurement, so the choice can be checked on any CPU: for each model and dtype, three sides
in one process, interleaved rounds, medians, and the median of the per-round ratios:

- ``plain``: vitzoo's model in ``dtype`` with timm's operator sequence (``nn.Linear``),
- ``packed``: the same weights after ``pack_linears``,
- ``ref``: the reference of ``vitzoo bench`` (timm's model with the same weights, or the official T2T
  arithmetic) in fp32.

bf16 rows are left out where oneDNN has no bf16 path on this CPU (``packing_available``). Freed memory is
kept in the process, as in every vitzoo command and in ``vitzoo bench`` (``host_allocator``).

    python benchmarks/bench_packed.py --model deit_small_patch16_224,t2t_vit_14 --batch 16 --rounds 7
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch

from vitzoo.bench import measure as bench
from vitzoo.runtime.host_allocator import keep_freed_memory
from vitzoo.runtime.packed import pack_linears, packing_available
from vitzoo.runtime.precision import FP32

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="deit_small_patch16_224,t2t_vit_14,t2t_vit_t_14")
    p.add_argument("--dtype", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    memory = keep_freed_memory()  # before the first tensor, as vitzoo's commands
    info = bench.machine_info()
    print(f"# {info['cpu']} (flags: {' '.join(info['cpu_flags']) or 'none shown'}; torch {info['torch']}, "
          f"capability {info['cpu_capability']}, threads {info['threads']}); batch {args.batch}, wall clock; "
          f"host memory: {memory}")
    print("| model | dtype | plain img/s | packed img/s | ref (fp32) img/s | packed / plain | packed / ref | "
          "max abs diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    cpu = torch.device("cpu")
    for name in args.model.split(","):
        ours, ref, label = bench.build_pair(name)
        x = torch.randn(args.batch, *ours.data_config["input_size"])
        for short in args.dtype.split(","):
            dtype = DTYPES[short]
            if not packing_available(dtype):
                print(f"| {name} | {short} | - | - | - | - | - | oneDNN has no {short} path on this CPU |")
                continue
            plain = copy.deepcopy(ours).to(dtype)
            packed = pack_linears(copy.deepcopy(ours).to(dtype))
            xd = x.to(dtype)
            with torch.inference_mode():
                diff = (packed(xd[:2]).float() - plain(xd[:2]).float()).abs().max().item()
            fns = {"plain": bench.infer_fn(plain, xd, FP32, cpu), "packed": bench.infer_fn(packed, xd, FP32, cpu),
                   "ref": bench.infer_fn(ref, x, FP32, cpu, official=label == "official")}
            rates = bench.interleaved(fns, batch=args.batch, rounds=args.rounds, iters=1, warmup=1, device=cpu)
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(f"| {name} | {short} | {med['plain']:.1f} | {med['packed']:.1f} | {med['ref']:.1f} | "
                  f"{paired(rates, 'packed', 'plain'):.2f}x | {paired(rates, 'packed', 'ref'):.2f}x | {diff:.1e} |",
                  flush=True)


def paired(rates: dict[str, list[float]], a: str, b: str) -> float:
    """The median of the per-round ratios a / b (a load change between rounds cancels)."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b]))


if __name__ == "__main__":
    main()
