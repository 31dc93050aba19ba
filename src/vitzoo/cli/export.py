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

from vitzoo.deploy.export import FORMATS, SUFFIX, export_model
from vitzoo.engine.dist import resolve_device
from vitzoo.models import load_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", "--checkpoint-path", "--checkpoint_path", required=True,
                   help="vitzoo checkpoint (.pt/.safetensors) or official release file")
    p.add_argument("--arch", "--model", default=None,
                   help="model name; needed only when the checkpoint does not record it (official files)")
    # --format too: the short name users reach for, and the one the config's note on `file_format` gives
    p.add_argument("--file-format", "--file_format", "--format", default="ONNX", type=str.upper,
                   choices=FORMATS, help="ONNX | TORCHSCRIPT | EXPORTED_PROGRAM (torch.export .pt2)")
    p.add_argument("--output", default=None,
                   help="output file; when not given: <arch>.onnx / .pt / .pt2 in the current folder "
                        "(as the seed)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (any batch size) or a fixed batch size N")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = str(resolve_device(args.device))
    model, meta = load_model(args.checkpoint, arch=args.arch, use_ema=args.use_ema)
    arch = meta.get("arch") or args.arch or model.arch
    meta = {**meta, "arch": arch}
    output = Path(args.output or f"{arch}{SUFFIX[args.file_format]}")
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
    return 0
