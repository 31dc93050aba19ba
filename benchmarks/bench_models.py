"""Forward throughput of vitzoo models vs timm's model with the SAME weights (and T2T-ViT vs naive attention).

For a name timm also has, both models are built, timm's state dict is loaded into ours (strictly), the
outputs are checked to agree, and both are timed side by side on the same input, batch and precision.
T2T-ViT has no timm model: it is timed against a copy of itself running the official implementation's
attention arithmetic, ``softmax((q @ k^T) * scale) @ v`` written out (models/t2t_vit.py of
yitu-opensource/T2T-ViT), patched in for ``F.scaled_dot_product_attention`` during the reference's
forward passes only.

Fairness: a warm-up per model, then ``--rounds`` rounds; each round times ``--iters`` forward passes of
each model, alternating which goes first, so drifting machine load (turbo, other jobs) hits both alike.
The median per-round rate of each model is reported, and as ratio the median of the per-round
ratios ours / reference (paired, so load changes between rounds cancel). ``torch.inference_mode``;
bf16/fp16 run under autocast (as ``vitzoo eval`` does). On CUDA, peak memory of one forward is reported per model.

    python benchmarks/bench_models.py              # quick: 2 small models, few rounds (~1 min on 2 CPU cores)
    python benchmarks/bench_models.py --full       # the 7 models of docs/performance.md (~15 min on 2 CPU cores)
    python benchmarks/bench_models.py --device cuda --dtype bf16 --batch 64 --compile --json out.json

Progress goes to the console as it runs: model i/n, its rates, and an estimate of the time left.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext

import torch

from vitzoo.bench import measure as bench
from vitzoo.bench.measure import CLOCKS, official_arithmetic, peak_memory, time_iters

DEFAULT_NAMES = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_tiny_distilled_patch16_224",
                 "vit_base_patch16_224", "beit_base_patch16_224", "t2t_vit_14", "t2t_vit_t_14")
# The quick default (`make bench`): one timm-referenced and one naive-attention model, a short timing.
QUICK_NAMES = ("deit_tiny_patch16_224", "t2t_vit_t_14")
PRESETS = {"quick": {"names": list(QUICK_NAMES), "batch": 4, "iters": 1, "rounds": 5},
           "full": {"names": list(DEFAULT_NAMES), "batch": 8, "iters": 3, "rounds": 5}}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_pair(name: str, ref_kind: str):
    """(ours, reference, reference label): :func:`vitzoo.bench.measure.build_pair` (timm's model with its weights
    copied into ours, or ours with naive attention math), labelled as this script's table does."""
    try:
        ours, ref, label = bench.build_pair(name, {"naive": "official"}.get(ref_kind, ref_kind))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return ours, ref, {"official": "naive-attn"}.get(label, label)


def forward_fn(model, x, device, dtype, naive: bool = False):
    def run():
        amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        with torch.inference_mode(), amp, (official_arithmetic() if naive else nullcontext()):
            return model(x)

    return run


def bench_one(name: str, args, device, dtype) -> dict:
    ours, ref, ref_label = build_pair(name, args.reference)
    ours, ref = ours.to(device), ref.to(device)
    if args.channels_last:
        ours, ref = ours.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
    size = ours.data_config["input_size"]
    torch.manual_seed(1)
    x = torch.randn(args.batch, *size, device=device)
    naive = ref_label == "naive-attn"
    with torch.inference_mode():  # same weights -> same function (fp32 check, before any compile)
        with official_arithmetic() if naive else nullcontext():
            ref_out = ref(x[:2]).float()
        diff = (ours(x[:2]).float() - ref_out).abs().max().item()
    if args.compile:
        ours, ref = torch.compile(ours), torch.compile(ref)
    fns = {"ours": forward_fn(ours, x, device, dtype), "ref": forward_fn(ref, x, device, dtype, naive)}
    for fn in fns.values():  # warm-up: allocator, kernels, compilation
        time_iters(fn, args.warmup, device)
    rates: dict[str, list[float]] = {"ours": [], "ref": []}
    for r in range(args.rounds):
        for key in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
            rates[key].append(args.batch * args.iters / time_iters(fns[key], args.iters, device, args.clock))
    ours_rate, ref_rate = statistics.median(rates["ours"]), statistics.median(rates["ref"])
    # ratio: median of the per-round ratios; the two runs of a round are adjacent in time, so a change
    # in machine load between rounds cancels out of each paired ratio
    ratio = statistics.median(o / r for o, r in zip(rates["ours"], rates["ref"]))
    mem = {k: peak_memory(fn, device) for k, fn in fns.items()}
    return {"name": name, "batch": args.batch, "dtype": args.dtype, "device": str(device),
            "reference": ref_label, "ours_img_s": ours_rate, "ref_img_s": ref_rate,
            "ratio": ratio, "max_abs_diff_fp32": diff,
            "ours_rounds": rates["ours"], "ref_rounds": rates["ref"],
            "ours_peak_mib": mem["ours"], "ref_peak_mib": mem["ref"], "compile": args.compile}


def print_table(rows: list[dict]) -> None:
    memory = any(r["ours_peak_mib"] is not None for r in rows)
    head = ["name", "batch", "dtype", "reference", "ours img/s", "ref img/s", "ratio", "max|diff|"]
    if memory:  # CUDA: the allocator's peak, weights included; CPU: the call's allocations above the weights
        head += ["ours MiB", "ref MiB"]
    lines = []
    for r in rows:
        cells = [r["name"], str(r["batch"]), r["dtype"], r["reference"], f"{r['ours_img_s']:.1f}",
                 f"{r['ref_img_s']:.1f}", f"{r['ratio']:.3f}x", f"{r['max_abs_diff_fp32']:.1e}"]
        if memory:
            cells += [f"{r['ours_peak_mib']:.0f}", f"{r['ref_peak_mib']:.0f}"]
        lines.append(cells)
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for cells in lines:
        print("| " + " | ".join(cells) + " |")


def model_sizes(names: list[str]) -> list[int]:
    """Parameter count of each model (built on the meta device: instant), a rough cost for the ETA."""
    from vitzoo import create_model

    with torch.device("meta"):
        return [sum(p.numel() for p in create_model(n).parameters()) for n in names]


def progress(start: float, sizes: list[int], done: int) -> str:
    """'1:05 so far, about 2:10 left': the time so far, scaled by the parameters of the models left."""
    elapsed = time.perf_counter() - start
    left = elapsed * sum(sizes[done:]) / max(1, sum(sizes[:done]))

    def clock(seconds: float) -> str:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"

    return f"{clock(elapsed)} so far" + (f", about {clock(left)} left" if done < len(sizes) else ", done")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true",
                    help=f"all {len(DEFAULT_NAMES)} models, batch 8, 3 iters x 5 rounds (default: quick: "
                         f"{', '.join(QUICK_NAMES)}, batch 4, 1 iter x 5 rounds)")
    ap.add_argument("--names", nargs="+", default=None, help="registered model names (default: the preset's)")
    ap.add_argument("--batch", type=int, default=None, help="images per forward (default: the preset's)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="fp32, or bf16/fp16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--channels-last", action="store_true", help="channels-last weights for both models")
    ap.add_argument("--reference", default="auto", choices=("auto", "timm", "naive"),
                    help="auto: timm where timm has the name, else naive attention")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up forwards per model")
    ap.add_argument("--iters", type=int, default=None, help="forwards per model per round (default: the preset's)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternating timing rounds, median reported (default: the preset's)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                    help="wall (default) or cpu: process CPU time, robust to other jobs on a shared CPU "
                         "(then use --threads 1)")
    ap.add_argument("--json", default=None, help="also write the results (with every round) to this file")
    args = ap.parse_args(argv)
    for key, value in PRESETS["full" if args.full else "quick"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and args.clock != "wall":
        raise SystemExit("--clock cpu measures host CPU time; on CUDA use the default wall clock")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = DTYPES[args.dtype]
    import timm

    print(f"# torch {torch.__version__}, timm {timm.__version__}, {device}"
          f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"threads {torch.get_num_threads()}, {args.clock} clock, {platform.processor() or platform.machine()}",
          flush=True)
    rows = []
    sizes = model_sizes(args.names)
    start = time.perf_counter()
    for i, name in enumerate(args.names, 1):
        print(f"# [{i}/{len(args.names)}] {name} ...", flush=True)
        row = bench_one(name, args, device, dtype)
        rows.append(row)
        print(f"# [{i}/{len(args.names)}] {name}: ours {row['ours_img_s']:.1f} img/s, {row['reference']} "
              f"{row['ref_img_s']:.1f} img/s, ratio {row['ratio']:.3f}; {progress(start, sizes, i)}",
              flush=True)
    print_table(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"torch": torch.__version__, "timm": timm.__version__, "args": vars(args), "results": rows},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
