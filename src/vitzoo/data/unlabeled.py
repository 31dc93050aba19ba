"""Unlabeled images for pre-training (``vitzoo pretrain``, ``vitzoo train-tokenizer``): labels ignored.

``dataset: folder`` reads every image of a folder tree at any depth (class folders, flat folders, or a
mix); ``dataset: webdataset`` reads the images of tar shards (:mod:`vitzoo.data.shards.read`) and drops their
``.cls``. Every item is ``(transform(image), 0)``: the label is a constant so the loaders, collate and
bad-file relay of the labeled path work unchanged, and the transform may return a tuple (BEiT's
pre-training transform returns patch view, tokenizer view and mask; ``default_collate`` stacks each).

Which folder a split reads (``data_path`` = D):

- train: ``D/train_dir`` when it exists, else ``D`` itself (minus ``D/val_dir`` when that exists, so
  validation images are never trained on);
- val: ``val_data_path`` (its ``val_dir`` sub-folder when it has one), else ``D/val_dir`` when it
  exists, else ``None``: no validation set, the caller decides what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from vitzoo.config import RunConfig
from vitzoo.data.build import finish_dataset
from vitzoo.data.datasets import IMG_EXTENSIONS, BaseDataset, ImageFiles, list_images
from vitzoo.data.shards.read import build_shard_dataset
from vitzoo.errors import UserError

UNLABELED_CLASSES = ["images"]  # one name for the constant label 0 (checkpoints carry a class list)


class ImageTreeDataset(ImageFiles):
    """Every image under ``root`` (any depth, sorted by path), label 0; ``exclude``: sub-trees to leave out."""

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        *,
        exclude: tuple[Path, ...] = (),
        bad_image_policy: str = "skip",
    ):
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"image folder not found: {root}")
        skip = tuple(str(p) + os.sep for p in exclude)
        paths = [str(p) for p in list_images(root, recursive=True) if not str(p).startswith(skip)]
        if not paths:
            raise UserError(
                f"no images under {root} (any depth; extensions read: {' '.join(IMG_EXTENSIONS)})"
            )
        self.root = root
        self.paths = paths
        super().__init__(UNLABELED_CLASSES, [0] * len(paths), transform, bad_image_policy)



def unlabeled_folder(cfg: RunConfig, split: str) -> tuple[Path, tuple[Path, ...]] | None:
    """The folder ``split`` reads and the sub-trees it leaves out; None for a 'val' that does not exist."""
    if split == "val":
        if cfg.val_data_path:
            root = Path(cfg.val_data_path)
            if not root.is_dir():
                raise UserError(f"val_data_path: folder not found: {root}")
            sub = root / cfg.val_dir if cfg.val_dir else root
            return (sub if sub.is_dir() else root), ()
        if not cfg.data_path or not cfg.val_dir:
            return None
        val = Path(cfg.data_path) / cfg.val_dir
        return (val, ()) if val.is_dir() else None
    if not cfg.data_path:
        raise UserError("data_path is not set (a folder of images, any tree; labels are ignored)")
    root = Path(cfg.data_path)
    if not root.is_dir():
        raise UserError(f"data_path: folder not found: {root}")
    train = root / cfg.train_dir if cfg.train_dir else root
    if train != root and train.is_dir():
        return train, ()
    val = root / cfg.val_dir if cfg.val_dir else None
    return root, ((val,) if val is not None and val.is_dir() else ())


def build_unlabeled_dataset(
    cfg: RunConfig, split: str, transform: Callable | None = None
) -> BaseDataset | None:
    """The ``split`` ('train' | 'val') images of ``cfg`` with labels ignored; None when there is no 'val'.

    ``transform`` defaults to the split's usual transform from the config (as :func:`build_dataset`);
    it may return a tuple. ``train_num_samples`` / ``val_num_samples`` pick a fixed seeded subset.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if cfg.dataset == "webdataset":
        ds = build_shard_dataset(cfg, split, labeled=False)
    elif cfg.dataset == "folder":
        where = unlabeled_folder(cfg, split)
        if where is None:
            return None
        ds = ImageTreeDataset(where[0], exclude=where[1], bad_image_policy=cfg.bad_image_policy)
    else:
        raise UserError(f"unlabeled images are read from dataset: folder or webdataset, not {cfg.dataset!r}")
    return None if ds is None else finish_dataset(cfg, split, ds, transform, None)
