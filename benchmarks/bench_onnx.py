"""ONNX Runtime speed of the int8 models ``vitzoo export --quantize int8`` writes, against the fp32 model.

Exports ``--model`` (random init; speed does not depend on the weights) to fp32 ONNX, quantizes it both
ways (dynamic; static calibrated on ``--calib`` generated images), then times the three sessions on the same
batch, alternating their order over ``--rounds`` rounds (median img/s, and the median of the per-round
ratios int8 / fp32). Also prints each int8 model's top-1 agreement and max logit difference with fp32 on
that batch. Accuracy on labelled images is what ``vitzoo eval-onnx`` reports (tests/test_precision.py
checks it on a trained model).

``--openvino`` also runs the same three files through OpenVINO's CPU plugin (issue 12: "OpenVINO if it is
faster on Intel CPUs -- measure and choose"), alternated with the ONNX Runtime sessions in the same rounds:
the fp32 file once with ``INFERENCE_PRECISION_HINT`` f32 (the same arithmetic as ORT's fp32) and once with
OpenVINO's own default, which on a CPU with AMX / AVX512-BF16 is bf16 (it then differs from fp32 as bf16
does). OpenVINO is not a vitzoo dependency: install it next to vitzoo to measure (``pip install openvino``).

    python benchmarks/bench_onnx.py --model deit_small_patch16_224 --batch 8 --rounds 5
    python benchmarks/bench_onnx.py --model deit_small_patch16_224 --batch 8 --rounds 5 --openvino

``--torch-int8`` also times vitzoo's own int8 in PyTorch (``--precision int8``: the same model, its linear
layers in oneDNN's int8 kernels) with per-call ranges and calibrated on the same images as the static file,
alternated with the sessions in the same rounds: which int8 deploy path is faster here.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vitzoo.bench import measure as bench
from vitzoo.data import image_batches, make_shapes_dataset
from vitzoo.deploy.export import export_model
from vitzoo.deploy.onnx_runtime import create_session, run_session
from vitzoo.deploy.quantize import quantize_onnx
from vitzoo.models import create_model
from vitzoo.runtime.cpu import int8_weight_bits
from vitzoo.runtime.packed import calibrate_int8, pack_linears


def openvino_runners(paths: dict[str, Path], threads: int) -> tuple[dict, str]:
    """{label: x -> logits} for the fp32 file at f32 and at OpenVINO's default precision, and the int8
    files; and what OpenVINO's default is on this CPU."""
    import openvino as ov  # optional: only this benchmark's --openvino

    core = ov.Core()
    default = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT")).removeprefix("<Type: '").rstrip("'>")
    common = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    plans = {"ov fp32 (f32 hint)": (paths["fp32"], {"INFERENCE_PRECISION_HINT": "f32"}),
             f"ov fp32 file ({default}, OpenVINO's default)": (paths["fp32"], {}),
             "ov int8 dynamic": (paths["dynamic"], {}), "ov int8 static": (paths["static"], {})}
    runners = {}
    for label, (path, config) in plans.items():
        compiled = core.compile_model(str(path), "CPU", {**common, **config})
        runners[label] = lambda x, c=compiled: np.asarray(c(x)[0], dtype=np.float32)
    return runners, f"openvino {ov.__version__}, CPU default inference precision {default}"


def torch_int8_runners(model: torch.nn.Module, calibration: Path, num_images: int) -> dict:
    """{label: x -> logits} for ``model`` with int8 linear layers (the policy's weight bits), per call and
    calibrated on ``calibration``."""
    bits = int8_weight_bits()
    per_call = pack_linears(copy.deepcopy(model), int8_weight_bits=bits)
    calibrated = pack_linears(copy.deepcopy(model), int8_weight_bits=bits)
    calibrate_int8(calibrated, image_batches(calibration, model.data_config, num_images))

    def runner(m):
        def run(x):
            with torch.inference_mode():
                return m(torch.from_numpy(x)).numpy()
        return run

    return {"torch int8 per call": runner(per_call), "torch int8 calibrated": runner(calibrated)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calib", type=int, default=32, help="generated calibration images for static int8")
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT's default)")
    ap.add_argument("--openvino", action="store_true", help="also time the same files in OpenVINO (if installed)")
    ap.add_argument("--torch-int8", action="store_true", help="also time vitzoo's int8 in PyTorch (per call, calibrated)")
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
        runners = {k: (lambda x, s=s: run_session(s, x)) for k, s in sessions.items()}
        if args.openvino:
            more, about = openvino_runners(paths, args.threads)
            runners.update(more)
            print(f"# {about}", flush=True)
        if args.torch_int8:
            runners.update(torch_int8_runners(model, calib / "val", args.calib))
        x = np.random.default_rng(0).standard_normal((args.batch, *model.data_config["input_size"]),
                                                     dtype=np.float32)
        outputs = {k: run(x) for k, run in runners.items()}  # warm-up, and the logits compared below
        rates: dict[str, list[float]] = {k: [] for k in runners}
        keys = list(runners)
        for r in range(args.rounds):
            for k in (keys if r % 2 == 0 else keys[::-1]):
                t0 = time.perf_counter()
                runners[k](x)
                rates[k].append(args.batch / (time.perf_counter() - t0))
        print(f"| {args.model} batch {args.batch} | img/s | ratio vs ORT fp32 | top-1 agreement | max\\|diff\\| |")
        print("|---|---:|---:|---:|---:|")
        base = outputs["fp32"]
        for k in keys:
            ratio = statistics.median(a / b for a, b in zip(rates[k], rates["fp32"]))
            same = k == "fp32"
            agree = "-" if same else f"{100 * (outputs[k].argmax(1) == base.argmax(1)).mean():.0f}%"
            diff = "-" if same else f"{np.abs(outputs[k] - base).max():.3f}"
            label = k if k.startswith(("ov ", "torch ")) else ("ORT fp32" if same else f"ORT int8 {k}")
            print(f"| {label} | {statistics.median(rates[k]):.1f} | {ratio:.2f}x | {agree} | {diff} |")
        print("# file sizes: " + ", ".join(f"{k} {p.stat().st_size / 2**20:.1f} MiB" for k, p in paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
