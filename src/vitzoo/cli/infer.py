"""`vitzoo infer`: predict the class of one image or of every image in a folder, write predictions JSON.

Output, as the DeiT seed shows it: one console line per image, ``PATH (class: N)`` (followed by the class
name when the checkpoint records class names), and a JSON file mapping each image path to its class index
(``{"/data/a.JPEG": 293, ...}``). ``--topk K`` prints the K best classes with probabilities and writes them
to a second file beside the first (``predictions.topk.json``: ``{path: {"class": i, "topk": [[idx, prob],
...]}}``), so the main file keeps the seed's ``{path: int}`` format whatever the flags. Without ``--topk``
an older ``predictions.topk.json`` beside the output is deleted (and said so): files side by side always
come from the same run.

Folders: image files (png/jpeg/...) in the folder root, as in the seed; ``--recursive`` walks sub-folders.
A folder of class folders and no images of its own (ImageNet's layout, ``DATA/<class>/<images>``: what
``vitzoo demo`` suggests and the seeds' eval scripts take) is walked whole, and each line ends with the
image's true class, ``true: NAME`` (its folder); a top-1 line against the folders closes the summary.
Files that are not images (by extension) and images that fail to decode are reported on stderr and skipped;
the JSON is still written for the rest. The prediction itself is :mod:`vitzoo.inference.predict`, shared with
``vitzoo infer-onnx``.
"""
from __future__ import annotations

import argparse

import torch

from vitzoo.cli.helpfmt import HelpFormatter
from vitzoo.data import build_eval_transform
from vitzoo.data.device.jpeg import DECODE_CHOICES, DECODE_HELP, choose_preprocess
from vitzoo.engine.dist import resolve_device
from vitzoo.inference.evaluate import add_calibration_args, calibrate, check_calibration
from vitzoo.inference.predict import add_common_args, find_inputs, run_prediction
from vitzoo.models import load_model
from vitzoo.runtime.precision import PRECISION_CHOICES, inference_precision, refuse_int8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo infer", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    add_common_args(p)
    p.add_argument("--checkpoint", required=True, help="vitzoo checkpoint (.pt/.safetensors), official file, weights tag "
                        "(deit_small_patch16_224.fb_in1k), hf-hub:org/repo or URL")
    p.add_argument("--arch", default=None,
                   help="model name; needed only when the checkpoint neither records it nor fits one registered model "
                        "by its weights' shapes; one the checkpoint records otherwise is an error")
    p.add_argument("--use-ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="number format of the forward; auto = bf16 weights where the device has bf16 units "
                        "and the model measures faster in bf16, else fp32; int8 (CPU): linear layers in int8, fastest on "
                        "CPUs with VNNI, top-1 may move (check with vitzoo eval --amp_dtype int8) "
                        "(default: %(default)s)")
    add_calibration_args(p, "--precision int8")
    p.add_argument("--decode", default="auto", choices=DECODE_CHOICES, help=DECODE_HELP + " (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    inputs = find_inputs(args)  # before the model loads: bad input fails fast
    device = resolve_device(args.device)
    refuse_int8(args.precision, device)
    check_calibration(args, args.precision, "--precision int8")
    model, meta = load_model(args.checkpoint, arch=args.arch, use_ema=args.use_ema, device=str(device))
    # the eval transform the model was trained/evaluated with (after config overrides), else the family's
    data_config = meta.get("data_config") or model.data_config
    transform = build_eval_transform(data_config, draft=True)  # large JPEGs decode at a reduced scale
    class_names = [str(c) for c in meta.get("class_names") or []]
    precision = inference_precision(args.precision, device, model)
    model = precision.cast_model(model)
    calibrate(model, precision, args, data_config)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        with precision.context(device):
            return model(precision.cast_input(x.to(device))).float().cpu()

    on_device = choose_preprocess(args.decode, data_config, device)
    return run_prediction(args, inputs, transform, run, class_names, on_device, device)
