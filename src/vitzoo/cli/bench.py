"""`vitzoo bench`: measure a model's throughput here, side by side with timm's (or the official) model.

One row per model: parameters, GFLOPs per image (counted on the model), img/s and ms per step of vitzoo's
model under the precision policy, the fraction of this machine's matmul peak for its dtype (measured in
the same run), and with a reference (timm's model with the same weights; for T2T-ViT the official
attention arithmetic) its img/s and the ratio, from interleaved rounds (medians), and the peak memory of
one step ("peak MiB": on CUDA the allocator's peak, weights included; on a CPU what the step allocates
above the weights, from the profiler's records). The machine (CPU model
and flags, threads, torch version) is printed first: a figure means little without it. Comma lists in
``--batch-size`` / ``--img-size`` give scaling tables (one row per setting); ``--plot`` draws the rows.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from vitzoo.bench import measure, report
from vitzoo.checkpoint import atomic_write_text
from vitzoo.cli.helpfmt import HelpFormatter
from vitzoo.engine.dist import resolve_device
from vitzoo.errors import UserError
from vitzoo.models import list_models
from vitzoo.runtime.host_allocator import keep_freed_memory
from vitzoo.runtime.precision import (
    FP32,
    PRECISION_CHOICES,
    inference_precision,
    refuse_int8,
    resolve_precision,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo bench", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter,
                                epilog="example: vitzoo bench --model deit_small_patch16_224 --batch-size 16")
    p.add_argument("--model", required=True, help="model name(s), comma-separated")
    p.add_argument("--mode", default="infer", choices=("infer", "train"),
                   help="infer: forward passes; train: forward + backward + AdamW step")
    p.add_argument("--batch-size", default="8", help="images per step; a comma list (1,8,32) gives a scaling table")
    p.add_argument("--img-size", default=None,
                   help="input resolution, or a comma list (224,384) for a scaling table (default: the model's)")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="vitzoo's side: auto = the policy (infer: bf16 weights where the device has bf16 "
                        "units and it measures faster; train: amp_dtype auto), or a fixed format (int8: infer on a CPU, "
                        "the linear layers in oneDNN's int8 kernels)")
    p.add_argument("--calibrated", action="store_true",
                   help="with --precision int8: fix the int8 layers' input ranges first, on the timed input "
                        "(as infer and eval do on calibration images)")
    p.add_argument("--ref-precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="the reference's format (bf16/fp16: autocast, as timm's train.py does) (default: fp32, what "
                        "a plain timm script runs)")
    p.add_argument("--against", "--compare", default="auto", choices=("auto", "timm", "official", "none"),
                   help="reference: timm's model, the official attention arithmetic (T2T-ViT), none; auto = "
                        "timm where timm has the name, else official")
    p.add_argument("--compile", action="store_true", help="torch.compile both sides")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (medians reported)")
    p.add_argument("--iters", type=int, default=1, help="steps per side per round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--clock", default="wall", choices=sorted(measure.CLOCKS),
                   help="wall, or cpu: process CPU time, robust to other jobs on a shared CPU (use --threads 1)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows (with every round) to FILE")
    p.add_argument("--plot", default=None, metavar="PNG", help="also draw img/s per row (ours vs reference)")
    return p


def _precision(choice: str, mode: str, device: torch.device, model=None):
    if mode == "infer":
        return inference_precision(choice, device, model, announce=False)
    # training keeps fp32 weights (master copy) and runs autocast: the trainer's own policy
    return resolve_precision("O0" if choice == "fp32" else "O1", choice, device, model)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    known = set(list_models())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown model(s): {', '.join(unknown)} (vitzoo models lists them)")
    batches, sizes = _ints(args.batch_size, "--batch-size"), _ints(args.img_size, "--img-size") or [None]
    if min(*batches, args.rounds, args.iters) < 1 or args.warmup < 0:
        raise UserError("--batch-size, --rounds and --iters must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    refuse_int8(args.precision, device, training=args.mode == "train")  # before any timing
    if args.calibrated and args.precision != "int8":
        raise UserError("--calibrated fixes int8's activation ranges: add --precision int8")
    if device.type == "cuda" and args.clock != "wall":
        raise UserError("--clock cpu measures host CPU time; on CUDA use the default wall clock")
    info = measure.machine_info()
    print(f"# {info['cpu']} (flags: {' '.join(info['cpu_flags']) or 'none of ' + ', '.join(measure.FLAGS_SHOWN)}; "
          f"torch capability {info['cpu_capability']}){', ' + info['gpu'] if 'gpu' in info else ''}", flush=True)
    print(f"# torch {info['torch']}, timm {info.get('timm', '-')}, {device}, threads {info['threads']}, "
          f"{args.clock} clock, {args.mode}", flush=True)
    print(f"# host memory (both sides, one process): {keep_freed_memory()}", flush=True)
    ref_prec = FP32 if args.ref_precision == "fp32" else resolve_precision("O1", args.ref_precision, device)
    # int8 rows: the int8 product's peak, at full size before and after the rows like the others (measured
    # only after, at the 512^3 kept for slow fallbacks, it came out low and a BEiT row read 100%)
    dtypes = measure.peak_dtypes(device) + ((torch.int8,) if args.precision == "int8" else ())
    peaks = {dtype: measure.matmul_peak(dtype, device, clock=args.clock) for dtype in dtypes}
    print("# matmul peak here: " + _gflops(peaks), flush=True)
    rows = []
    runs = [(n, b, s) for n in names for s in sizes for b in batches]
    for i, (name, batch, size) in enumerate(runs, 1):
        row = measure.bench_model(
            name, mode=args.mode, batch=batch, img_size=size, ref_precision=ref_prec,
            against=args.against, device=device, rounds=args.rounds, iters=args.iters, warmup=args.warmup,
            clock=args.clock, compile=args.compile,
            decide=lambda m: _precision(args.precision, args.mode, device, m), calibrated=args.calibrated)
        rows.append(row)
        ratio = f", {row['reference']} {row['ref_img_s']:.1f} img/s, ratio {row['ratio']:.2f}x" if "ratio" in row else ""
        print(f"# [{i}/{len(runs)}] {name} batch {batch}: {row['ours_precision_why']}: {row['ours_img_s']:.1f} img/s{ratio}",
              flush=True)
    used = {row["_peak_dtype"] for row in rows} | set(peaks)
    # a dtype without units here (bf16 on an AVX2 CPU) runs a scalar fallback: a 512^3 product measures it
    again = {dtype: measure.matmul_peak(dtype, device, n=None if dtype in peaks else 512, clock=args.clock)
             for dtype in sorted(used, key=str)}
    peaks = {dtype: max(peaks.get(dtype, 0.0), again[dtype]) for dtype in again}
    print(f"# matmul peak again after the rows: {_gflops(again)}; % peak uses the better of the two", flush=True)
    measure.add_peak_fractions(rows, peaks)
    print(report.format_table(rows))
    if args.json:
        out = {"machine": info, "matmul_peak_gflops": {str(k): v for k, v in peaks.items()},
               "args": vars(args), "results": rows}
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        report.plot_rows(rows, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _gflops(peaks: dict) -> str:
    return ", ".join(f"{str(d).removeprefix('torch.')} {g:.0f} GFLOP/s" for d, g in peaks.items())


def _ints(text: str | None, flag: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; None -> []."""
    try:
        return [int(v) for v in str(text).split(",") if v.strip()] if text is not None else []
    except ValueError:
        raise UserError(f"{flag} takes an integer or a comma-separated list of integers, got {text!r}") from None

