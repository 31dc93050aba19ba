"""Write WebDataset shards from an ImageNet-style folder (``vitzoo make-dataset shards OUT --from-folder DIR``).

Layout written: ``OUT/train/shard-000000.tar ...``, ``OUT/val/shard-000000.tar ...`` (when DIR has a
``val`` folder) and ``OUT/classes.txt``, which ``dataset: webdataset, data_path: OUT`` reads. Each sample
is ``<key>.<ext>`` (the image file's bytes, not re-encoded: the images stay identical) + ``<key>.cls``
(the class index as text), the WebDataset convention. Training samples are shuffled (seeded) before they
are dealt to shards, as the WebDataset docs advise: a streaming reader only shuffles within a buffer, so
class-sorted shards would give class-sorted batches. Each shard is written atomically (temp file +
rename), and the tar headers carry fixed times and owners so the same input gives the same bytes.
"""

from __future__ import annotations

import io
import math
import os
import tarfile
from pathlib import Path

import numpy as np

from vitzoo.checkpoint import atomic_write, atomic_write_text, make_folder
from vitzoo.data.datasets import IMG_EXTENSIONS, list_images
from vitzoo.errors import UserError

SHARD_NAME = "shard-{:06d}.tar"


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: reproducible shards
    tf.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[tuple[str, Path, int]]) -> None:
    """One tar of ``(key, image file, label)`` samples, written atomically."""

    def write(tmp: str) -> None:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
            for key, image, label in samples:
                _add(tf, f"{key}{image.suffix.lower()}", image.read_bytes())
                _add(tf, f"{key}.cls", str(label).encode())

    atomic_write(path, write)


def _class_tree(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    found = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{root}: class folder {unknown[0]} is not among the train classes")
    items = [(p, classes.index(c)) for c in found for p in list_images(root / c, recursive=True)]
    if not items:
        raise UserError(f"no images in {root}/<class>/ (extensions: {' '.join(IMG_EXTENSIONS)})")
    return items


def folder_to_shards(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num_shards: int | None = None,
    per_shard: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, int]:
    """Convert ``src/{train,val}/<class>/*`` (or ``src/<class>/*``: train only) to shards in ``out``.

    ``num_shards`` per split (train; val gets as many, fewer if it is smaller), else ``ceil(n /
    per_shard)``. Returns ``{split: images written}``.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UserError(f"--from-folder: folder not found: {src}")
    splits = {s: src / s for s in ("train", "val") if (src / s).is_dir()} or {"train": src}
    classes = sorted(d.name for d in os.scandir(splits["train"]) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"no class folders in {splits['train']} (expected <class>/<images>)")
    if num_shards is not None and num_shards < 1 or per_shard < 1:
        raise UserError("--shards and --per-shard must be at least 1")
    for split in splits:
        old = sorted((out / split).glob("*.tar"))
        if old and not overwrite:
            raise UserError(f"{out / split} already holds {len(old)} shard(s); pass --overwrite to replace them")
        for p in old:
            p.unlink()
    written = {}
    for split, root in splits.items():
        items = _class_tree(root, classes)
        if split == "train":  # shuffled before sharding (see the module docstring)
            items = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
        n = num_shards or math.ceil(len(items) / per_shard)
        n = min(n, len(items))
        make_folder(out / split, f"cannot write the shards into {out}")
        for s, part in enumerate(np.array_split(np.arange(len(items)), n)):
            samples = [(f"{split}_{i:08d}", items[i][0], items[i][1]) for i in part]
            write_shard(out / split / SHARD_NAME.format(s), samples)
        written[split] = len(items)
    atomic_write_text(out / "classes.txt", "\n".join(classes) + "\n")
    return written
