"""CIFAR-10 / CIFAR-100 in their binary distribution format, parsed with numpy (never pickle).

The binary batches are what the seeds' CIFAR readers consume; the Python-pickle batches would need an
unpickler, which a dataset must never run.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vitzoo.data.datasets import BaseDataset
from vitzoo.errors import UserError

log = logging.getLogger(__name__)


# CIFAR binary format (https://www.cs.toronto.edu/~kriz/cifar.html): each record is the label byte(s)
# followed by 3072 bytes: 1024 R, 1024 G, 1024 B, each a 32x32 plane in row-major order.
CIFAR_FORMATS = {
    "cifar10": {
        "label_bytes": 1,
        "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
        "val": ["test_batch.bin"],
        "names": "batches.meta.txt",
        "num_classes": 10,
        "folder": "cifar-10-batches-bin",
        "per_file": 10000,
    },
    "cifar100": {
        "label_bytes": 2,
        "train": ["train.bin"],
        "val": ["test.bin"],
        "names": "fine_label_names.txt",
        "num_classes": 100,
        "folder": "cifar-100-binary",
        "per_file": None,
    },
}
_PIXELS = 3 * 32 * 32


def read_cifar_bin(path: str | os.PathLike, label_bytes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR ``.bin`` file -> (images uint8 (N, 32, 32, 3), labels int64 (N,)).

    With two label bytes (CIFAR-100: coarse, fine) the fine label (second byte) is returned.
    """
    path = Path(path)
    rec = label_bytes + _PIXELS
    size = path.stat().st_size
    if size == 0 or size % rec:
        raise UserError(
            f"{path}: {size} bytes is not a whole number of CIFAR records; expected a multiple "
            f"of {rec} bytes ({label_bytes} label byte(s) + {_PIXELS} pixel bytes per record, "
            f"{rec * 10000} for a file of 10000 images)"
        )
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, rec)
    labels = raw[:, label_bytes - 1].astype(np.int64)
    images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> HWC
    return np.ascontiguousarray(images), labels


class CifarBinaryDataset(BaseDataset):
    """CIFAR-10 / CIFAR-100 from the binary distribution (``cifar-10-batches-bin`` layout)."""

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        kind: str = "cifar10",
        transform: Callable | None = None,
        names_file: str | os.PathLike | None = None,
    ):
        spec = CIFAR_FORMATS[kind]
        parts = [read_cifar_bin(f, spec["label_bytes"]) for f in files]
        self.images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.max(initial=0) >= spec["num_classes"]:
            bad = next(str(f) for f, p in zip(files, parts) if p[1].max(initial=0) >= spec["num_classes"])
            raise UserError(
                f"{bad}: label {int(labels.max())} out of range for {kind} "
                f"({spec['num_classes']} classes); is this the right dataset kind?"
            )
        classes = [str(i) for i in range(spec["num_classes"])]
        if names_file is not None and Path(names_file).is_file():
            names = [ln.strip() for ln in Path(names_file).read_text(encoding="utf-8").splitlines()]
            names = [n for n in names if n]
            if len(names) == spec["num_classes"]:
                classes = names
            else:
                log.warning(
                    "%s: %d names for %d classes; using numbers", names_file, len(names), spec["num_classes"]
                )
        self.files = [str(f) for f in files]
        super().__init__(classes, labels, transform, "skip")

    def _load(self, record: int):
        from PIL import Image

        return Image.fromarray(self.images[record])

    def _name(self, record: int) -> str:
        return f"{self.files[0]}#{record}"


def cifar_files(kind: str, folder: Path, split: str, explicit: bool) -> list[Path]:
    """The .bin files of ``split`` in ``folder`` (or its standard sub-folder)."""
    spec = CIFAR_FORMATS[kind]
    if not folder.exists():
        raise UserError(f"{kind} data folder not found: {folder}")
    if folder.is_file():
        return [folder]
    for d in (folder, folder / spec["folder"]):
        files = [d / n for n in spec[split] if (d / n).is_file()]
        if files:
            return files
    if explicit and split == "val":  # a separate verify folder may name its test batch differently
        files = sorted(p for p in folder.glob("*.bin") if p.name not in spec["train"])
        if files:
            return files
    raise UserError(f"no {kind} {split} batch in {folder}: expected {' / '.join(spec[split])}")
