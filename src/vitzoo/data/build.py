"""The dataset a RunConfig describes: which reader, which folder or files, which subset and transform."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from vitzoo.config import RunConfig
from vitzoo.data.cifar import CIFAR_FORMATS, CifarBinaryDataset, cifar_files
from vitzoo.data.datasets import BaseDataset, ImageFolderDataset, list_images, load_image
from vitzoo.data.shards.read import build_shard_dataset, shard_sources
from vitzoo.data.transforms import build_eval_transform, build_train_transform, resolve_data_config
from vitzoo.errors import UserError


def _split_root(cfg: RunConfig, split: str) -> Path:
    if split == "val" and cfg.val_data_path:
        return Path(cfg.val_data_path)
    if not cfg.data_path:
        raise UserError("data_path is not set (the folder that holds the dataset)")
    return Path(cfg.data_path)


def _folder_for(cfg: RunConfig, split: str, root: Path) -> Path:
    """``root/train_dir`` or ``root/val_dir``; a ``val_data_path`` may also be the val folder itself."""
    sub = (cfg.train_dir if split == "train" else cfg.val_dir) or split
    if (root / sub).is_dir() or split == "train" or not cfg.val_data_path:
        return root / sub
    return root


def _train_classes(cfg: RunConfig) -> list[str] | None:
    """The train folder's classes (so a val folder missing a class keeps the same label indices)."""
    train_root = Path(cfg.data_path) / (cfg.train_dir or "train")
    if not cfg.data_path or not train_root.is_dir():
        return None
    return sorted(d.name for d in os.scandir(train_root) if d.is_dir() and not d.name.startswith(".")) or None


def train_class_count(cfg: RunConfig) -> int | None:
    """How many classes the train set has, known without reading an image: a folder's class folders, CIFAR's
    10 / 100; None for shards (their labels are known only once read) or a folder not found."""
    if cfg.dataset == "webdataset":
        return None
    if cfg.dataset != "folder":
        return CIFAR_FORMATS[cfg.dataset]["num_classes"]
    classes = _train_classes(cfg)
    return len(classes) if classes else None


def check_split_data(cfg: RunConfig, split: str) -> Path:
    """The folder (or CIFAR file) ``split`` reads, checked to exist without reading it: a command calls
    this before it loads weights or starts processes, so a wrong path fails at once."""
    if cfg.dataset == "webdataset":
        found = shard_sources(cfg, split)
        if found is None:
            raise UserError(f"no validation shards: set val_data_path, or put them in {cfg.data_path}/{cfg.val_dir}")
        return Path(found[0][0])
    root = _split_root(cfg, split)
    if cfg.dataset != "folder":
        return cifar_files(cfg.dataset, root, split, bool(split == "val" and cfg.val_data_path))[0]
    folder = _folder_for(cfg, split, root)
    if not folder.is_dir():
        raise UserError(f"dataset folder not found: {folder} (expected {folder}/<class>/<images>)")
    return folder


def build_dataset(
    cfg: RunConfig,
    split: str,
    *,
    transform: Callable | None = None,
    data_config: dict | None = None,
    classes: Sequence[str] | None = None,
) -> BaseDataset:
    """Build the ``split`` ('train' | 'val') dataset that ``cfg`` describes.

    The transform is, in order of preference: ``transform``; the split's transform built from
    ``data_config`` (see :func:`vitzoo.data.resolve_data_config`); the split's transform from the
    config alone (model defaults unknown: input_size / crop_pct / mean / std from cfg or ImageNet's).
    ``build_loader(..., data_config=...)`` may replace it later. ``classes`` fixes the label order of a
    folder dataset (default: the train folder's classes, so train and val agree).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    kind, policy = cfg.dataset, cfg.bad_image_policy
    if kind == "webdataset":
        check_split_data(cfg, split)  # (the error for absent validation shards)
        shard_ds = build_shard_dataset(cfg, split, classes=classes)
        return finish_dataset(cfg, split, shard_ds, transform, data_config)
    root = _split_root(cfg, split)
    if kind == "folder":
        ds: BaseDataset = ImageFolderDataset(
            _folder_for(cfg, split, root),
            classes=classes or (_train_classes(cfg) if split == "val" else None),
            bad_image_policy=policy,
        )
    else:
        explicit = bool(split == "val" and cfg.val_data_path)
        files = cifar_files(kind, root, split, explicit)
        name_file = CIFAR_FORMATS[kind]["names"]
        dirs = (files[0].parent, root, Path(cfg.data_path or "."))
        names = next((d / name_file for d in dirs if (d / name_file).is_file()), None)
        ds = CifarBinaryDataset(files, kind, names_file=names)
    return finish_dataset(cfg, split, ds, transform, data_config)


def finish_dataset(cfg: RunConfig, split: str, ds, transform: Callable | None, data_config: dict | None):
    """The seeded subset and the transform (a streamed set's length is its num_samples already)."""
    if isinstance(ds, BaseDataset):
        num = cfg.train_num_samples if split == "train" else cfg.val_num_samples
        ds.select_subset(num, cfg.seed + (0 if split == "train" else 1))
    if transform is None:
        data_config = data_config or resolve_data_config(cfg, None)
        transform = (
            build_train_transform(cfg, data_config) if split == "train" else build_eval_transform(data_config)
        )
    ds.transform = transform
    return ds


def image_batches(folder: str | os.PathLike, data_config: dict, limit: int,
                  batch_size: int = 16) -> Iterator[torch.Tensor]:
    """``limit`` images under ``folder`` (recursive), through the eval transform of ``data_config``, in
    batches of ``batch_size`` (a generator: only one batch is in memory): calibration images for int8
    (``vitzoo export --quantize int8``, ``infer / eval --calibration-data``). Evenly spaced over the sorted
    paths, not the first ones: in a folder per class every class has its share (the first 64 of a sorted
    ImageNet train tree are all tench). Unreadable images are skipped, with a note on stderr naming one;
    none readable is a UserError once the images are read."""
    paths = list_images(Path(folder), recursive=True)
    paths = [paths[i * len(paths) // limit] for i in range(limit)] if len(paths) > limit else paths
    transform = build_eval_transform(data_config)
    batch, skipped, count = [], [], 0
    for path in paths:
        try:
            batch.append(transform(load_image(path)))
        except UserError as e:  # names the file: "PATH: not a readable image (...)"
            skipped.append(str(e))
            continue
        if len(batch) == batch_size:
            count += len(batch)
            yield torch.stack(batch)
            batch = []
    if batch:
        count += len(batch)
        yield torch.stack(batch)
    if skipped:
        print(f"note: {len(skipped)} unreadable calibration image(s) skipped, e.g. {skipped[0]}", file=sys.stderr,
              flush=True)
    if not count:
        raise UserError(f"no readable images in {folder} (calibration images: png / jpeg / ... files, searched "
                        "recursively)")
