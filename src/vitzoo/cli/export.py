"""`vitzoo export`: write a checkpoint as ONNX, TorchScript or a torch.export program, then verify it.

ONNX gets a dynamic batch axis (``--batch N`` fixes it) and exact GELU (``--fix-gelu`` switches the model
to tanh-GELU, the approximation the MindSpore seed needed; never needed here). The file records arch,
preprocessing and class names, so ``vitzoo eval-onnx`` / ``infer-onnx`` need no extra flags. After writing,
the file is reloaded and compared with PyTorch on a random batch; a difference above the tolerance is an
error (exit 2).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vitzoo.cli.helpfmt import HelpFormatter
from vitzoo.deploy.export import FORMATS, SUFFIX, export_model
from vitzoo.deploy.onnx_runtime import create_session, data_config_for
from vitzoo.deploy.quantize import MODES, ImageReader, compare_sessions, quantize_onnx
from vitzoo.engine.dist import resolve_device
from vitzoo.errors import UserError
from vitzoo.models import load_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo export", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", "--checkpoint-path", "--checkpoint_path", required=True,
                   help="vitzoo checkpoint (.pt/.safetensors), official release file, weights tag "
                        "(deit_small_patch16_224.fb_in1k), hf-hub:org/repo or URL")
    p.add_argument("--arch", "--model", default=None,
                   help="model name; needed only when the checkpoint neither records it nor fits one registered model "
                        "by its weights' shapes; one the checkpoint records otherwise is an error")
    # --format too: the short name users reach for, and the one the config's note on `file_format` gives
    p.add_argument("--file-format", "--file_format", "--format", default="ONNX", type=str.upper,
                   choices=FORMATS, help="ONNX | TORCHSCRIPT | EXPORTED_PROGRAM (torch.export .pt2)")
    p.add_argument("--output", default=None,
                   help="output file; when not given: <arch>.onnx / .pt / .pt2 in the current folder "
                        "(as the seed)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (any batch size) or a fixed batch size N")
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16", "int8"),
                   help="the file's number format, in the names eval / infer use: fp32 (and auto: the engine "
                        "picks the run-time precision, e.g. eval-onnx's OpenVINO engine computes an fp32 file in "
                        "bf16 on CPUs with bf16 units), fp16 (= --fp16), int8 (= --quantize int8); bf16 files are not "
                        "written: export fp32 and let that engine compute in bf16")
    p.add_argument("--fp16", action="store_true", help="export in float16 (verified against the fp32 model)")
    p.add_argument("--fix-gelu", "--fix_gelu", action="store_true",
                   help="use tanh-approximated GELU (changes the numbers slightly; not needed for ONNX here)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--dynamo", action="store_true",
                   help="use torch.export-based ONNX exporter instead of the (faster) TorchScript-based one")
    p.add_argument("--use-ema", action="store_true", help="export the checkpoint's EMA weights")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs logit difference allowed in verification; when not given: 1e-4 fp32, "
                        "1e-2 fp16, times max(1, max |logit|)")
    p.add_argument("--device", default="cpu", help="device to export and verify on (cpu | cuda)")
    q = p.add_argument_group("int8 (ONNX Runtime quantization)")
    q.add_argument("--quantize", choices=("int8",), default=None,
                   help="write an int8 ONNX model to --output and keep the fp32 one beside it as <name>.fp32.onnx")
    q.add_argument("--quantize-mode", choices=MODES, default="dynamic",
                   help="dynamic: int8 weights, activation ranges per batch (no images needed; measured the "
                        "faster one here, docs/performance.md); static: activation ranges calibrated on "
                        "--calibration-data")
    q.add_argument("--calibration-data", default=None, metavar="FOLDER",
                   help="images (searched recursively) to calibrate static int8 and to check the int8 model on")
    q.add_argument("--calibration-images", type=int, default=64, help="at most this many calibration images")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_precision(args)
    device = str(resolve_device(args.device))
    model, meta = load_model(args.checkpoint, arch=args.arch, use_ema=args.use_ema)
    arch = meta.get("arch") or args.arch or model.arch
    meta = {**meta, "arch": arch}
    output = Path(args.output or f"{arch}{SUFFIX[args.file_format]}")
    if args.quantize and (args.file_format != "ONNX" or args.fp16):
        raise UserError("--quantize int8 writes ONNX from the fp32 model: use it without --fp16 and with "
                        "--file-format ONNX")
    final, output = output, (output.with_name(output.stem + ".fp32.onnx") if args.quantize else output)
    res = export_model(model, output, args.file_format, meta=meta, batch=args.batch, fp16=args.fp16,
                       fix_gelu=args.fix_gelu, opset=args.opset, dynamo=args.dynamo,
                       tolerance=args.tolerance, device=device)
    print(f"exported {arch} -> {res.path} ({args.file_format}, batch {args.batch}"
          f"{', fp16' if args.fp16 else ''}{', tanh-GELU' if args.fix_gelu else ''})")
    print(f"verified on a random batch of {res.batch_checked}: max abs diff vs PyTorch {res.max_abs_diff:.3g} "
          f"(tolerance {res.tolerance:.3g})")
    if args.fix_gelu:
        print(f"note: tanh-GELU changes logits by up to {res.gelu_diff:.3g} vs the exact-GELU model")
    if res.sidecar:
        print(f"metadata sidecar: {res.sidecar}")
    if args.quantize:
        _quantize(args, output, final)
    return 0


def apply_precision(args) -> None:
    """--precision onto the flags it names (--fp16, --quantize int8); a contradiction is an error."""
    wanted = args.precision
    if wanted is None:
        return
    if wanted == "bf16":
        raise UserError("--precision bf16: vitzoo does not write bf16 files; export fp32 and run it with "
                        "eval-onnx / infer-onnx --engine openvino, which computes in bf16 on CPUs with bf16 units")
    asked = "fp16" if args.fp16 else "int8" if args.quantize else "fp32"
    if asked != "fp32" and wanted not in (asked, "auto"):
        raise UserError(f"--precision {wanted} contradicts --{'fp16' if args.fp16 else 'quantize int8'}")
    args.fp16 = args.fp16 or wanted == "fp16"
    args.quantize = args.quantize or ("int8" if wanted == "int8" else None)


def _quantize(args, fp32_path: Path, output: Path) -> None:
    """int8 model of ``fp32_path`` at ``output``; compared with fp32 on the calibration images (or noise)."""
    info = quantize_onnx(fp32_path, output, args.quantize_mode, args.calibration_data, args.calibration_images)
    fp32, int8 = create_session(fp32_path, "CPU"), create_session(output, "CPU")
    if args.calibration_data:
        reader = ImageReader(args.calibration_data, data_config_for(fp32), fp32.get_inputs()[0].name,
                             args.calibration_images, batch=10**6)
        x, on = next(iter(reader.get_next().values())), f"{reader.count} calibration image(s)"
    else:
        x, on = np.random.default_rng(0).standard_normal((4, *fp32.get_inputs()[0].shape[1:])).astype(np.float32), \
            "4 random inputs"
    cmp = compare_sessions(int8, fp32, x)
    extra = f", calibrated on {info['calibration_images']} image(s)" if info["calibration_images"] else ""
    print(f"quantized -> {output} (int8 {info['mode']}{extra}; fp32 model kept as {fp32_path})")
    print(f"int8 vs fp32 on {on}: same top-1 class on {100 * cmp['top1_agree']:.1f}%, max abs logit diff "
          f"{cmp['max_abs_diff']:.3g} (max |logit| {cmp['max_abs_logit']:.3g}); accuracy: vitzoo eval-onnx "
          f"DATASET --onnx-path {output}")
