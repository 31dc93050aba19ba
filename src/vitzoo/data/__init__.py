"""Data pipeline: datasets (folders, CIFAR binary, unlabeled image trees, WebDataset shards), the DeiT/T2T/BEiT transforms, loaders, a generated set.

Typical use (the trainer)::

    data_config = resolve_data_config(cfg, model)            # -> checkpoint meta["data_config"]
    train_ds = build_dataset(cfg, "train", data_config=data_config)
    val_ds = build_dataset(cfg, "val", data_config=data_config, classes=train_ds.classes)
    train_loader = build_loader(cfg, train_ds, "train", distributed=dist)
    mixup_fn = build_mixup(cfg, len(train_ds.classes))
    for epoch ...: set_epoch(train_loader, epoch); ...; report_bad_files(train_ds, cfg.output_dir, epoch)
"""

from __future__ import annotations

from vitzoo.data.build import build_dataset, check_split_data, image_batches
from vitzoo.data.cifar import CifarBinaryDataset, read_cifar_bin
from vitzoo.data.datasets import (
    IMG_EXTENSIONS,
    ImageFolderDataset,
    decoding_errors_named,
    list_images,
    load_image,
    opens_lazily,
    report_bad_files,
)
from vitzoo.data.loader import (
    Loader,
    OrderedSplitSampler,
    build_loader,
    loader_from_batch,
    relay_collate,
    set_epoch,
    usable_cpus,
)
from vitzoo.data.synthetic import SHAPES, make_shapes_dataset
from vitzoo.data.transforms import (
    build_eval_transform,
    build_mixup,
    build_train_transform,
    device_stage,
    resolve_data_config,
)
from vitzoo.data.unlabeled import ImageTreeDataset, build_unlabeled_dataset

__all__ = [
    "IMG_EXTENSIONS",
    "SHAPES",
    "CifarBinaryDataset",
    "ImageFolderDataset",
    "ImageTreeDataset",
    "Loader",
    "OrderedSplitSampler",
    "build_dataset",
    "build_eval_transform",
    "build_loader",
    "build_mixup",
    "build_train_transform",
    "build_unlabeled_dataset",
    "check_split_data",
    "decoding_errors_named",
    "device_stage",
    "image_batches",
    "list_images",
    "load_image",
    "loader_from_batch",
    "make_shapes_dataset",
    "opens_lazily",
    "read_cifar_bin",
    "relay_collate",
    "report_bad_files",
    "resolve_data_config",
    "set_epoch",
    "usable_cpus",
]
