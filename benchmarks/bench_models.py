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

    python benchmarks/bench_models.py                       # CPU, fp32, batch 8, default names
    python benchmarks/bench_models.py --device cuda --dtype bf16 --batch 64 --compile --json out.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

DEFAULT_NAMES = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_tiny_distilled_patch16_224",
                 "vit_base_patch16_224", "beit_base_patch16_224", "t2t_vit_14", "t2t_vit_t_14")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_pair(name: str, ref_kind: str):
    """(ours, reference, reference label): timm's model with its weights copied into ours, or for
    names timm lacks, ours with explicit (naive) attention math."""
    import timm

    from vitzoo import create_model

    torch.manual_seed(0)
    if ref_kind == "timm" or (ref_kind == "auto" and timm.is_model(name)):
        ref = timm.create_model(name, pretrained=False).eval()
        ours = create_model(name).eval()
        missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
        # non-persistent buffers of ours (e.g. BEiT's relative_position_index) are derived, not loaded
        unexpected = [k for k in unexpected if not k.endswith("relative_position_index")]
        if missing or unexpected:
            raise SystemExit(f"{name}: timm weights do not map onto ours: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}")
        return ours, ref, "timm"
    ours = create_model(name).eval()
    ref = copy.deepcopy(ours)
    return ours, ref, "naive-attn"


def naive_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The official T2T-ViT attention arithmetic: the (B, heads, N, N) map is materialised."""
    attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_mask is not None:
        attn = attn + attn_mask
    return attn.softmax(dim=-1) @ v


@contextmanager
def naive_attention():
    """Swap ``F.scaled_dot_product_attention`` for :func:`naive_sdpa` (the reference runs only)."""
    fused = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = naive_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = fused


def forward_fn(model, x, device, dtype, naive: bool = False):
    def run():
        amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        with torch.inference_mode(), amp, (naive_attention() if naive else nullcontext()):
            return model(x)

    return run


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()  # host-device sync: time the kernels, not their launch


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_iters(fn, iters: int, device, clock: str = "wall") -> float:
    """Seconds for ``iters`` calls: wall-clock, or CPU time of this process (``cpu``: on a machine shared
    with other jobs, time spent waiting for a core is not counted; use with --threads 1, since idle
    OpenMP threads spin and would be counted)."""
    now = CLOCKS[clock]
    sync(device)
    t0 = now()
    for _ in range(iters):
        fn()
    sync(device)
    return now() - t0


def peak_memory(fn, device) -> float | None:
    """Peak CUDA memory (MiB) allocated during one forward (weights included), None on CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


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
        with naive_attention() if naive else nullcontext():
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
    cuda = any(r["ours_peak_mib"] is not None for r in rows)
    head = ["name", "batch", "dtype", "reference", "ours img/s", "ref img/s", "ratio", "max|diff|"]
    if cuda:
        head += ["ours MiB", "ref MiB"]
    lines = []
    for r in rows:
        cells = [r["name"], str(r["batch"]), r["dtype"], r["reference"], f"{r['ours_img_s']:.1f}",
                 f"{r['ref_img_s']:.1f}", f"{r['ratio']:.3f}x", f"{r['max_abs_diff_fp32']:.1e}"]
        if cuda:
            cells += [f"{r['ours_peak_mib']:.0f}", f"{r['ref_peak_mib']:.0f}"]
        lines.append(cells)
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for cells in lines:
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", nargs="+", default=list(DEFAULT_NAMES), help="registered model names")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="fp32, or bf16/fp16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--channels-last", action="store_true", help="channels-last weights for both models")
    ap.add_argument("--reference", default="auto", choices=("auto", "timm", "naive"),
                    help="auto: timm where timm has the name, else naive attention")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up forwards per model")
    ap.add_argument("--iters", type=int, default=3, help="forwards per model per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (median reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                    help="wall (default) or cpu: process CPU time, robust to other jobs on a shared CPU "
                         "(then use --threads 1)")
    ap.add_argument("--json", default=None, help="also write the results (with every round) to this file")
    args = ap.parse_args(argv)

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
    for name in args.names:
        row = bench_one(name, args, device, dtype)
        rows.append(row)
        print(f"#   {name}: ours {row['ours_img_s']:.1f} img/s, {row['reference']} {row['ref_img_s']:.1f} img/s, "
              f"ratio {row['ratio']:.3f}", flush=True)
    print_table(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"torch": torch.__version__, "timm": timm.__version__, "args": vars(args), "results": rows},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
