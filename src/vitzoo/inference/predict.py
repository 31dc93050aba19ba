"""Predict classes for image files with any model, the part ``vitzoo infer`` and ``infer-onnx`` share.

A model is a ``run`` callable (a batch of preprocessed images -> logits), so the PyTorch command and the
ONNX Runtime one print the same console lines and write the same JSON by construction; each command only
builds its ``run``, its transform and its class names. What gets written (the seed's ``{path: class}``
file plus an optional ``.topk.json`` beside it) is described in :mod:`vitzoo.cli.infer`.

A folder laid out as ImageNet's (``DATA/<class>/<images>``, no images in DATA itself: what ``vitzoo eval``,
the seeds' eval scripts and ``vitzoo demo`` hand over) is walked whole, and each image's class folder is
its true class: printed beside the prediction, kept in the ``.topk.json``, and summed into a top-1 line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from vitzoo.checkpoint import atomic_write_text
from vitzoo.data import decoding_errors_named, list_images, load_image, opens_lazily
from vitzoo.data.device.jpeg import DevicePreprocess, EncodedFiles, pack_encoded, unpack_encoded
from vitzoo.data.workers import worker_init
from vitzoo.errors import UserError

DEFAULT_OUTPUT = "predictions.json"
CPU = torch.device("cpu")


class Inputs(NamedTuple):
    """What a predicting command reads, found before any model loads (:func:`find_inputs`)."""

    images: list[Path]
    skipped: list[tuple[str, str]]  # (other file, why it is skipped)
    truths: dict[str, str]  # image path -> the name of its class folder (ImageNet layout), else empty


def is_class_folders(root: Path) -> bool:
    """Whether the folder ``root`` is laid out as ImageNet's: no image files of its own, and sub-folders
    (the classes). A folder with images of its own keeps the seed's behaviour: its root only."""
    return not list_images(root) and any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir())


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


def collect_inputs(data: str, recursive: bool = False) -> Inputs:
    """:func:`collect_images`, and the true classes of a folder of class folders (:func:`is_class_folders`),
    which is walked whole with or without ``recursive``."""
    root = Path(data)
    by_class = root.is_dir() and is_class_folders(root)
    images, skipped = collect_images(data, recursive or by_class)
    truths = {str(p): p.relative_to(root).parts[0] for p in images} if by_class else {}
    return Inputs(images, skipped, truths)


class _ImageFiles(torch.utils.data.Dataset):
    """The files to predict, decoded and transformed in loader workers; an unreadable file yields its reason."""

    def __init__(self, paths: list[Path], transform: Callable):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | None, str | None]:
        p = self.paths[i]
        try:  # (a transform that opens_lazily decodes large JPEGs at a reduced scale: DraftResize)
            with decoding_errors_named(p):
                return str(p), self.transform(load_image(p, opens_lazily(self.transform))), None
        except UserError as e:
            return str(p), None, str(e).removeprefix(f"{p}: ")


def _stack_readable(items: list) -> tuple[list[str], torch.Tensor | None, list[tuple[str, str]]]:
    """(names, the readable images stacked, [(name, why)] for the others). Run in the loader worker, so a
    batch crosses to the main process as one tensor in shared memory, not one pickled tensor per image:
    measured on an H100 host (deit_small, 256 per batch, 8 workers), per-image lists made ``vitzoo infer``
    0.59x a plain timm script."""
    names = [name for name, x, _ in items if x is not None]
    batch = torch.stack([x for _, x, _ in items if x is not None]) if names else None
    return names, batch, [(name, why) for name, x, why in items if x is None]


def auto_batch_size(device: torch.device) -> int:
    """``--batch-size auto``: 256 on a GPU (deit_small on an H100, bf16: 20,310 img/s at 64, 23,230 at 256,
    23,970 at 512), 32 on a CPU (flat from batch 8 on: benchmarks/README.md's scaling tables)."""
    return 256 if device.type == "cuda" else 32


def auto_workers(num_images: int, batch_size: int) -> int:
    """Loader processes for ``--num-workers auto`` when there is more than one batch (else 0: no start-up):
    half the cores, at least 2 and at most 8, decoding while the model runs. On a 16-core Xeon host (AMX,
    deit_small, 512 JPEGs) 2 / 4 / 8 workers gave 1.80x / 1.85x / 1.94x a plain timm script with 2."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, max(2, cores // 2), cores) if num_images > batch_size else 0


def iter_batches(paths: list[Path], transform: Callable, batch_size: int, bad: list[tuple[str, str]],
                 num_workers: int = 0, on_device: DevicePreprocess | None = None,
                 ) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Decode + transform images in order, ``batch_size`` at a time, in ``num_workers`` loader processes
    while the model runs on the previous batch; unreadable ones go to ``bad``. With ``on_device`` the
    workers only read the files and the batch is decoded and preprocessed on the model's device."""
    dataset = _ImageFiles(paths, transform) if on_device is None else EncodedFiles(paths)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_stack_readable if on_device is None else pack_encoded,
                                         worker_init_fn=worker_init(), prefetch_factor=2 if num_workers else None)
    for batch in loader:
        names, x, failed = batch if on_device is None else _stack_readable(on_device(unpack_encoded(batch)))
        bad.extend(failed)
        if names:
            yield names, x


def predict(paths: list[Path], transform: Callable, run: Callable[[torch.Tensor], torch.Tensor],
            batch_size: int, topk: int, class_names: list[str], num_workers: int = 0,
            on_device: DevicePreprocess | None = None, truths: dict[str, str] | None = None,
            ) -> tuple[dict, dict, list]:
    """Run ``run`` (batch -> logits) over the images; prints the console lines as results arrive, each
    with ``true: NAME`` after it where ``truths`` knows the image's class.

    Returns ({path: class}, {path: {"class", "topk"[, "true"]}}, [(path, reason)] for unreadable images).
    """
    truths = truths or {}
    preds: dict[str, int] = {}
    rich: dict[str, dict] = {}
    bad: list[tuple[str, str]] = []
    for names, x in iter_batches(paths, transform, batch_size, bad, num_workers, on_device):
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
            if name in truths:
                rich[name]["true"] = truths[name]
                line += f"  true: {truths[name]}"
            print(line, flush=True)
    return preds, rich, bad


def topk_path(output: str | Path) -> Path:
    """``predictions.json`` -> ``predictions.topk.json``."""
    out = Path(output)
    return out.with_name(out.stem + ".topk" + (out.suffix or ".json"))


def write_outputs(output: str, preds: dict, rich: dict, topk: int) -> tuple[list[Path], Path | None]:
    """Write ``{path: class}`` (and, with ``topk`` > 1, the ``.topk.json`` beside it) atomically.

    Without ``topk`` > 1 a ``.topk.json`` left beside the output by an earlier run is deleted, so the
    files next to each other always come from the same run. Returns (written, deleted or None).
    """
    written = [atomic_write_text(output, json.dumps(preds, indent=1) + "\n")]
    side = topk_path(output)
    if topk and topk > 1:
        written.append(atomic_write_text(side, json.dumps(rich, indent=1) + "\n"))
        return written, None
    if side.is_file():
        side.unlink()
        return written, side
    return written, None


def folder_accuracy(preds: dict[str, int], truths: dict[str, str], class_names: list[str]) -> str | None:
    """'top-1 against the class folders: 482 of 500 (96.4%)' -- over the predicted images whose folder
    names a class of the model (by name; by index where the model records no names), else None."""
    names = class_names or [str(i) for i in range(max(preds.values(), default=-1) + 1)]
    known = set(names)
    judged = [(names[cls] if cls < len(names) else None) == truths[p] for p, cls in preds.items()
              if truths.get(p) in known]
    if not judged:
        return None
    unknown = sum(1 for p in preds if p in truths and truths[p] not in known)
    rest = f"; {unknown} image(s) in folders that name no class of the model" if unknown else ""
    return (f"top-1 against the class folders: {sum(judged)} of {len(judged)} "
            f"({100 * sum(judged) / len(judged):.1f}%){rest}")


def report(skipped: list[tuple[str, str]], bad: list[tuple[str, str]], n_done: int, written: list[Path],
           stale: Path | None = None, accuracy: str | None = None) -> None:
    """Skipped files and the summary go to stderr, so stdout holds only the per-image lines."""
    for path, reason in skipped + bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    extra = f"; skipped {len(skipped) + len(bad)} file(s)" if skipped or bad else ""
    print(f"predicted {n_done} image(s){extra}; wrote {', '.join(map(str, written))}", file=sys.stderr)
    if accuracy:
        print(accuracy, file=sys.stderr)
    if stale is not None:
        print(f"deleted {stale}: it held an earlier run's top-k (use --topk K to write it)", file=sys.stderr)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every predicting command takes (what to read, what to write, how many at a time)."""
    p.add_argument("data", metavar="DATA", help="an image file, a folder of images, or a folder of class folders "
                   "(DATA/<class>/<images>, as ImageNet: walked whole, each image's true class printed beside "
                   "its prediction)")
    p.add_argument("--output", default=DEFAULT_OUTPUT,
                   help="predictions JSON {path: class index} (default: %(default)s)")
    p.add_argument("--topk", type=int, default=1,
                   help="also print the K best classes with probabilities and write them to <output>.topk.json "
                        "as {path: {class, topk: [[idx, prob], ...]}}; without it an older <output>.topk.json "
                        "is deleted (default: %(default)s)")
    p.add_argument("--recursive", action="store_true",
                   help="include images in sub-folders of DATA (a folder of class folders is walked without it)")
    p.add_argument("--batch-size", default="auto",
                   help="images per forward pass; auto = 256 when the model runs on a GPU, 32 on a CPU "
                        "(default: %(default)s)")
    p.add_argument("--num-workers", default="auto",
                   help="loader processes decoding images while the model runs; auto = half the cores (2 to 8) "
                        "when there is more than one batch, else 0 (default: %(default)s)")


def find_inputs(args: argparse.Namespace) -> Inputs:
    """Check :func:`add_common_args`' options and find the images, before any model is loaded: a wrong
    path, an empty folder or a bad value then fails at once instead of after the weights loaded."""
    if args.batch_size != "auto" and not (str(args.batch_size).isdigit() and int(args.batch_size) >= 1):
        raise UserError(f"--batch-size must be auto or an integer >= 1, got {args.batch_size}")
    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    if args.num_workers != "auto" and not str(args.num_workers).isdigit():
        raise UserError(f"--num-workers must be auto or an integer >= 0, got {args.num_workers}")
    inputs = collect_inputs(args.data, args.recursive)
    if not inputs.images:
        raise UserError(f"no image files in {args.data}" + ("" if args.recursive else " (use --recursive for sub-folders)"))
    return inputs


def run_prediction(args: argparse.Namespace, inputs: Inputs, transform: Callable,
                   run: Callable[[torch.Tensor], torch.Tensor], class_names: list[str],
                   on_device: DevicePreprocess | None = None, device: torch.device = CPU) -> int:
    """A predicting command once its model is ready (on ``device``): predict the images, write the JSON,
    report."""
    images, skipped, truths = inputs
    batch_size = auto_batch_size(device) if args.batch_size == "auto" else int(args.batch_size)
    workers = auto_workers(len(images), batch_size) if args.num_workers == "auto" else int(args.num_workers)
    preds, rich, bad = predict(images, transform, run, batch_size, args.topk, class_names, workers, on_device,
                               truths)
    if not preds and Path(args.data).is_file():
        raise UserError(f"{args.data}: {bad[0][1]}" if bad else f"{args.data}: no prediction")
    written, stale = write_outputs(args.output, preds, rich, args.topk)
    report(skipped, bad, len(preds), written, stale, folder_accuracy(preds, truths, class_names))
    return 0
