"""`vitzoo infer`: predict the class of one image or of every image in a folder, write predictions JSON.

Output, as the DeiT seed shows it: one console line per image, ``PATH (class: N)`` (followed by the class
name when the checkpoint records class names), and a JSON file mapping each image path to its class index
(``{"/data/a.JPEG": 293, ...}``). ``--topk K`` prints the K best classes with probabilities and writes them
to a second file beside the first (``predictions.topk.json``: ``{path: {"class": i, "topk": [[idx, prob],
...]}}``), so the main file keeps the seed's ``{path: int}`` format whatever the flags.

Folders: image files (png/jpeg/...) in the folder root, as in the seed; ``--recursive`` walks sub-folders.
Files that are not images (by extension) and images that fail to decode are reported on stderr and skipped;
the JSON is still written for the rest. The helpers here are shared with ``vitzoo infer-onnx``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import torch

from vitzoo.errors import UserError

DEFAULT_OUTPUT = "predictions.json"


# --------------------------------------------------------------------------------- shared helpers
def collect_images(data: str, recursive: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """(image files, [(path, reason)] for the other files) under ``data`` (a file or a folder)."""
    from vitzoo.data import list_images

    root = Path(data)
    if not root.exists():
        raise UserError(f"no such file or folder: {root}")
    images = list_images(root, recursive=recursive)
    skipped: list[tuple[str, str]] = []
    if root.is_dir():
        pattern = root.rglob("*") if recursive else root.iterdir()
        chosen = set(images)
        skipped = [(str(p), "not an image file (by extension)") for p in sorted(pattern)
                   if p.is_file() and p not in chosen and not p.name.startswith(".")]
    return images, skipped


def iter_batches(paths: list[Path], transform: Callable, batch_size: int,
                 bad: list[tuple[str, str]]) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Decode + transform images in order, ``batch_size`` at a time; unreadable ones go to ``bad``."""
    from vitzoo.data import load_image

    names: list[str] = []
    tensors: list[torch.Tensor] = []
    for p in paths:
        try:
            img = load_image(p)
        except UserError as e:
            bad.append((str(p), str(e).split(": ", 1)[-1]))
            continue
        names.append(str(p))
        tensors.append(transform(img))
        if len(names) == batch_size:
            yield names, torch.stack(tensors)
            names, tensors = [], []
    if names:
        yield names, torch.stack(tensors)


def predict(paths: list[Path], transform: Callable, run: Callable[[torch.Tensor], torch.Tensor],
            batch_size: int, topk: int, class_names: list[str]) -> tuple[dict, dict, list]:
    """Run ``run`` (batch -> logits) over the images; prints the console lines as results arrive.

    Returns ({path: class}, {path: {"class", "topk"}}, [(path, reason)] for unreadable images).
    """
    preds: dict[str, int] = {}
    rich: dict[str, dict] = {}
    bad: list[tuple[str, str]] = []
    for names, x in iter_batches(paths, transform, batch_size, bad):
        probs = run(x).float().softmax(-1)
        k = max(1, min(topk or 1, probs.shape[-1]))
        top_p, top_i = probs.topk(k, dim=-1)
        for name, ps, ids in zip(names, top_p.tolist(), top_i.tolist()):
            cls = int(ids[0])
            preds[name] = cls
            rich[name] = {"class": cls, "topk": [[int(i), round(float(p), 6)] for i, p in zip(ids, ps)]}
            label = f" {class_names[cls]}" if cls < len(class_names) else ""
            line = f"{name} (class: {cls}){label}"
            if topk and topk > 1:
                line += f"  top-{k}: " + ", ".join(
                    f"{i}{'/' + class_names[i] if i < len(class_names) else ''} {p:.4f}" for i, p in zip(ids, ps))
            print(line, flush=True)
    return preds, rich, bad


def write_outputs(output: str, preds: dict, rich: dict, topk: int) -> list[Path]:
    from vitzoo.checkpoint import atomic_write_text

    out = Path(output)
    written = [atomic_write_text(out, json.dumps(preds, indent=1) + "\n")]
    if topk and topk > 1:
        side = out.with_name(out.stem + ".topk" + (out.suffix or ".json"))
        written.append(atomic_write_text(side, json.dumps(rich, indent=1) + "\n"))
    return written


def report(skipped: list[tuple[str, str]], bad: list[tuple[str, str]], n_done: int, written: list[Path]) -> None:
    for path, reason in skipped + bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    extra = f"; skipped {len(skipped) + len(bad)} file(s)" if skipped or bad else ""
    print(f"predicted {n_done} image(s){extra}; wrote {', '.join(map(str, written))}", file=sys.stderr)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", metavar="DATA", help="an image file or a folder of images")
    p.add_argument("--output", default=DEFAULT_OUTPUT,
                   help="predictions JSON {path: class index} (default: %(default)s)")
    p.add_argument("--topk", type=int, default=1,
                   help="also print the K best classes with probabilities and write them to "
                        "<output>.topk.json as {path: {class, topk: [[idx, prob], ...]}} (default: 1)")
    p.add_argument("--recursive", action="store_true", help="include images in sub-folders of DATA")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")


def check_common_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")


def run_prediction(args, transform, run, class_names) -> int:
    images, skipped = collect_images(args.data, args.recursive)
    if not images:
        raise UserError(f"no image files in {args.data}" + ("" if args.recursive else " (use --recursive for sub-folders)"))
    preds, rich, bad = predict(images, transform, run, args.batch_size, args.topk, class_names)
    if not preds and Path(args.data).is_file():
        raise UserError(f"{args.data}: not a readable image ({bad[0][1]})" if bad else f"{args.data}: no prediction")
    written = write_outputs(args.output, preds, rich, args.topk)
    report(skipped, bad, len(preds), written)
    return 0


# ---------------------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitzoo infer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(p)
    p.add_argument("--checkpoint", required=True, help="vitzoo checkpoint (.pt/.safetensors) or official file")
    p.add_argument("--arch", default=None,
                   help="model name; needed only when the checkpoint does not record it (official files)")
    p.add_argument("--use-ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_common_args(args)
    from vitzoo.data import build_eval_transform
    from vitzoo.engine.dist import resolve_device
    from vitzoo.models import load_model

    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, arch=args.arch, use_ema=args.use_ema, device=str(device))
    # the eval transform the model was trained/evaluated with (after config overrides), else the family's
    data_config = meta.get("data_config") or model.data_config
    transform = build_eval_transform(data_config)
    class_names = [str(c) for c in meta.get("class_names") or []]

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).cpu()

    return run_prediction(args, transform, run, class_names)
