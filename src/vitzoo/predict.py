"""Predict classes for image files with any model, the part ``vitzoo infer`` and ``infer-onnx`` share.

A model is a ``run`` callable (a batch of preprocessed images -> logits), so the PyTorch command and the
ONNX Runtime one print the same console lines and write the same JSON by construction; each command only
builds its ``run``, its transform and its class names. What gets written (the seed's ``{path: class}``
file plus an optional ``.topk.json`` beside it) is described in :mod:`vitzoo.cli.infer`.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import torch

from vitzoo.checkpoint import atomic_write_text
from vitzoo.data import list_images, load_image
from vitzoo.errors import UserError

DEFAULT_OUTPUT = "predictions.json"


def collect_images(data: str, recursive: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """(image files, [(path, reason)] for the other files) under ``data`` (a file or a folder)."""
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
    """Write ``{path: class}`` (and, with ``topk`` > 1, the ``.topk.json`` beside it) atomically."""
    out = Path(output)
    written = [atomic_write_text(out, json.dumps(preds, indent=1) + "\n")]
    if topk and topk > 1:
        side = out.with_name(out.stem + ".topk" + (out.suffix or ".json"))
        written.append(atomic_write_text(side, json.dumps(rich, indent=1) + "\n"))
    return written


def report(skipped: list[tuple[str, str]], bad: list[tuple[str, str]], n_done: int, written: list[Path]) -> None:
    """Skipped files and the summary go to stderr, so stdout holds only the per-image lines."""
    for path, reason in skipped + bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    extra = f"; skipped {len(skipped) + len(bad)} file(s)" if skipped or bad else ""
    print(f"predicted {n_done} image(s){extra}; wrote {', '.join(map(str, written))}", file=sys.stderr)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every predicting command takes (what to read, what to write, how many at a time)."""
    p.add_argument("data", metavar="DATA", help="an image file or a folder of images")
    p.add_argument("--output", default=DEFAULT_OUTPUT,
                   help="predictions JSON {path: class index} (default: %(default)s)")
    p.add_argument("--topk", type=int, default=1,
                   help="also print the K best classes with probabilities and write them to <output>.topk.json "
                        "as {path: {class, topk: [[idx, prob], ...]}} (default: %(default)s)")
    p.add_argument("--recursive", action="store_true", help="include images in sub-folders of DATA")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")


def check_common_args(args: argparse.Namespace) -> None:
    """Refuse bad values of :func:`add_common_args`' options before a model is loaded."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")


def run_prediction(args: argparse.Namespace, transform: Callable, run: Callable[[torch.Tensor], torch.Tensor],
                   class_names: list[str]) -> int:
    """A predicting command once its model is ready: find the images, predict, write the JSON, report."""
    images, skipped = collect_images(args.data, args.recursive)
    if not images:
        raise UserError(f"no image files in {args.data}" + ("" if args.recursive else " (use --recursive for sub-folders)"))
    preds, rich, bad = predict(images, transform, run, args.batch_size, args.topk, class_names)
    if not preds and Path(args.data).is_file():
        raise UserError(f"{args.data}: not a readable image ({bad[0][1]})" if bad else f"{args.data}: no prediction")
    written = write_outputs(args.output, preds, rich, args.topk)
    report(skipped, bad, len(preds), written)
    return 0
