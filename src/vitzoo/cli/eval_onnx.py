"""`vitzoo eval-onnx`: top-1 / top-5 accuracy of an exported ONNX model on a folder of class sub-folders.

DATASET is an ImageNet-style split (``DATASET/<class>/<images>``). Preprocessing comes from the ONNX
metadata (so the numbers equal ``vitzoo eval`` on the same images); labels follow the class names recorded
in the model when the folder names are among them, else the sorted folder names (as training does).
Prints ``eval results: {'Top1-Acc': ..., 'Top5-Acc': ...}`` as the DeiT seed does.
"""
from __future__ import annotations

import argparse
import os

from vitzoo.deploy.onnx_runtime import class_names_of, create_session, data_config_for, evaluate_folder
from vitzoo.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo eval-onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="validation folder: DATASET/<class>/<images>")
    p.add_argument("--onnx-path", "--onnx_path", required=True, help="ONNX model written by vitzoo export")
    p.add_argument("--image-size", "--image_size", type=int, default=None,
                   help="input size override (default: the size recorded in the model)")
    p.add_argument("-m", "--device", default="auto", type=str.upper, choices=["AUTO", "CPU", "GPU"],
                   help="ONNX Runtime execution provider (GPU needs onnxruntime-gpu)")
    p.add_argument("--prefetch", type=int, default=16, help="batches decoded ahead by the loader workers")
    p.add_argument("--batch-size", type=int, default=32, help="images per ONNX Runtime call")
    p.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image decoding processes (0 = in the main process)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.prefetch < 1 or args.num_workers < 0:
        raise UserError("--batch-size and --prefetch must be >= 1, --num-workers >= 0")
    session = create_session(args.onnx_path, args.device)
    data_config = data_config_for(session, args.image_size)
    results = evaluate_folder(session, args.dataset, data_config, class_names_of(session),
                              batch_size=args.batch_size, num_workers=args.num_workers, prefetch=args.prefetch)
    print("eval results: " + str({k: results[k] for k in ("Top1-Acc", "Top5-Acc")}))
    return 0
