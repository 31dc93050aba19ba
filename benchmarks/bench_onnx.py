"""ONNX Runtime speed of the int8 models ``vitzoo export --quantize int8`` writes, against the fp32 model.

Exports ``--model`` (random init; speed does not depend on the weights) to fp32 ONNX, quantizes it both
ways (dynamic; static calibrated on ``--calib`` generated images), then times the three sessions on the same
batch, alternating their order over ``--rounds`` rounds (median img/s, and the median of the per-round
ratios int8 / fp32). Also prints each int8 model's top-1 agreement and max logit difference with fp32 on
that batch. Accuracy on labelled images is what ``vitzoo eval-onnx`` reports (tests/test_precision.py
checks it on a trained model).

    python benchmarks/bench_onnx.py --model deit_small_patch16_224 --batch 8 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vitzoo import bench
from vitzoo.data import make_shapes_dataset
from vitzoo.deploy.export import export_model
from vitzoo.deploy.onnx_runtime import create_session, run_session
from vitzoo.deploy.quantize import compare_sessions, quantize_onnx
from vitzoo.models import create_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calib", type=int, default=32, help="generated calibration images for static int8")
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT's default)")
    args = ap.parse_args(argv)
    info = bench.machine_info()
    import onnxruntime

    print(f"# {info['cpu']} (flags: {' '.join(info['cpu_flags'])}), onnxruntime {onnxruntime.__version__}, "
          f"torch {info['torch']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = create_model(args.model).eval()
        fp32 = tmp / "m.fp32.onnx"
        export_model(model, fp32, "ONNX")
        size = model.data_config["input_size"][-1]
        calib = make_shapes_dataset(tmp / "calib", num_train=5, num_val=args.calib, size=size, num_classes=5)
        paths = {"fp32": fp32}
        for mode in ("dynamic", "static"):
            paths[mode] = tmp / f"m.{mode}.onnx"
            quantize_onnx(fp32, paths[mode], mode, calib / "val", args.calib)
        sessions = {k: create_session(p, "CPU", threads=args.threads or None) for k, p in paths.items()}
        x = np.random.default_rng(0).standard_normal((args.batch, *model.data_config["input_size"]),
                                                     dtype=np.float32)
        for s in sessions.values():
            run_session(s, x)  # warm-up
        rates: dict[str, list[float]] = {k: [] for k in sessions}
        keys = list(sessions)
        for r in range(args.rounds):
            for k in (keys if r % 2 == 0 else keys[::-1]):
                t0 = time.perf_counter()
                run_session(sessions[k], x)
                rates[k].append(args.batch / (time.perf_counter() - t0))
        print(f"| {args.model} batch {args.batch} | img/s | ratio vs fp32 | top-1 agreement | max\\|diff\\| |")
        print("|---|---:|---:|---:|---:|")
        for k in keys:
            ratio = statistics.median(a / b for a, b in zip(rates[k], rates["fp32"]))
            cmp = compare_sessions(sessions[k], sessions["fp32"], x) if k != "fp32" else None
            agree = f"{100 * cmp['top1_agree']:.0f}%" if cmp else "-"
            diff = f"{cmp['max_abs_diff']:.3f}" if cmp else "-"
            label = "fp32" if k == "fp32" else f"int8 {k}"
            print(f"| {label} | {statistics.median(rates[k]):.1f} | {ratio:.2f}x | {agree} | {diff} |")
        print("# file sizes: " + ", ".join(f"{k} {p.stat().st_size / 2**20:.1f} MiB" for k, p in paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
