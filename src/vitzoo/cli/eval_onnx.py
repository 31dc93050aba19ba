"""`vitzoo eval-onnx`: top-1 / top-5 accuracy of an exported ONNX model on a folder of class sub-folders.

DATASET is an ImageNet-style split (``DATASET/<class>/<images>``). Preprocessing comes from the ONNX
metadata (so the numbers equal ``vitzoo eval`` on the same images); labels follow the class names recorded
in the model when the folder names are among them, else the sorted folder names (as training does).
Prints ``eval results: {'Top1-Acc': ..., 'Top5-Acc': ...}`` as the DeiT seed does.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from vitzoo.cli.helpfmt import HelpFormatter
from vitzoo.deploy.onnx_runtime import (
    add_engine_args,
    class_names_of,
    data_config_for,
    evaluate_folder,
    open_model,
    session_metadata,
)
from vitzoo.errors import UserError
from vitzoo.inference.evaluate import describe_change


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo eval-onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="validation folder: DATASET/<class>/<images>")
    p.add_argument("--onnx-path", "--onnx_path", required=True, help="ONNX model written by vitzoo export")
    p.add_argument("--image-size", "--image_size", type=int, default=None,
                   help="input size override (default: the size recorded in the model)")
    p.add_argument("-m", "--device", default="auto", type=str.upper, choices=["AUTO", "CPU", "GPU"],
                   help="ONNX Runtime execution provider (GPU needs onnxruntime-gpu)")
    add_engine_args(p)
    p.add_argument("--prefetch", type=int, default=16, help="batches decoded ahead by the loader workers")
    p.add_argument("--batch-size", type=int, default=32, help="images per engine call")
    p.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image decoding processes (0 = in the main process)")
    p.add_argument("--compare", default=None, metavar="ONNX",
                   help="also evaluate this model (e.g. the fp32 one) on the same images and print the change; "
                        "an int8 model from vitzoo export is compared with its fp32 file by default, an "
                        "OpenVINO run in bf16/fp16 with the same file in ONNX Runtime")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.prefetch < 1 or args.num_workers < 0:
        raise UserError("--batch-size and --prefetch must be >= 1, --num-workers >= 0")
    if not os.path.isdir(args.dataset):  # before the model loads: a wrong path fails at once
        raise UserError(f"dataset folder not found: {args.dataset} (expected {args.dataset}/<class>/<images>)")
    session = open_model(args.onnx_path, args.device, args.engine, args.precision)
    data_config = data_config_for(session, args.image_size)
    results = evaluate_folder(session, args.dataset, data_config, class_names_of(session),
                              batch_size=args.batch_size, num_workers=args.num_workers, prefetch=args.prefetch)
    print("eval results: " + str({k: results[k] for k in ("Top1-Acc", "Top5-Acc")}))
    reference = args.compare or _fp32_source(args.onnx_path, session)
    if reference is None and getattr(session, "precision", "fp32") != "fp32":
        reference = args.onnx_path  # OpenVINO in bf16/fp16: the change against the file's fp32 numbers (ORT)
    if reference:
        ref = evaluate_folder(open_model(reference, args.device, announce=False), args.dataset, data_config,
                              class_names_of(session), batch_size=args.batch_size, num_workers=args.num_workers,
                              prefetch=args.prefetch)
        print(describe_change(f"{reference} on the same {results['num_samples']} images", ref, results))
    return 0


def _fp32_source(path: str, session) -> str | None:
    """The fp32 file an int8 model was quantized from (recorded by vitzoo export), if it is still beside it."""
    name = session_metadata(session).get("quantized_from")
    candidate = Path(path).with_name(name) if name else None
    return str(candidate) if candidate is not None and candidate.is_file() else None
