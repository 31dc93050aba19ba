"""`vitzoo infer-onnx`: `vitzoo infer` with an exported ONNX model run by ONNX Runtime.

Same console lines and the same ``{path: class}`` JSON as the PyTorch command; the preprocessing and
class names come from the metadata ``vitzoo export`` stored in the file.
"""
from __future__ import annotations

import argparse

import torch

from vitzoo.cli.helpfmt import HelpFormatter
from vitzoo.data import build_eval_transform
from vitzoo.deploy.onnx_runtime import (
    add_engine_args,
    class_names_of,
    data_config_for,
    open_model,
    run_session,
)
from vitzoo.inference.predict import add_common_args, find_inputs, run_prediction


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo infer-onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    add_common_args(p)
    p.add_argument("--onnx-path", "--onnx_path", required=True, help="ONNX model written by vitzoo export")
    p.add_argument("-m", "--device", default="auto", type=str.upper, choices=["AUTO", "CPU", "GPU"],
                   help="ONNX Runtime execution provider (GPU needs onnxruntime-gpu)")
    p.add_argument("--image-size", "--image_size", type=int, default=None,
                   help="input size override (default: the size recorded in the model)")
    add_engine_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    inputs = find_inputs(args)  # before the model loads: bad input fails fast
    session = open_model(args.onnx_path, args.device, args.engine, args.precision)
    transform = build_eval_transform(data_config_for(session, args.image_size), draft=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_session(session, x.numpy()))

    return run_prediction(args, inputs, transform, run, class_names_of(session))
