"""WebDataset shards: make-dataset shards, the map-style reader of local tars, the streamed URL reader,
bad members, exact batches across workers and resume, and `vitzoo train` on shards."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.cli import main
from vitzoo.config import RunConfig, config_from_dict
from vitzoo.data import (
    build_dataset,
    build_loader,
    build_unlabeled_dataset,
    check_split_data,
    loader_from_batch,
    set_epoch,
)
from vitzoo.data.datasets import is_undecoded_jpeg
from vitzoo.errors import UserError

TINY = "{patch_size: 4, depth: 1, embed_dim: 24, num_heads: 2}"
CLASSES = ["apple", "mango", "zebra"]


def make_cfg(**kw) -> RunConfig:
    base = {"dataset": "webdataset", "num_workers": 0, "batch_size": 4, "input_size": 16, "output_dir": ""}
    return config_from_dict({**base, **kw}, strict=True)


def pixels(img) -> tuple:
    return tuple(np.asarray(img).reshape(-1)[:3])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An ImageNet-style folder (pixel value encodes split, class and index) and its shards."""
    root = tmp_path_factory.mktemp("shards")
    for s, (split, n) in enumerate((("train", 8), ("val", 2))):
        for c, name in enumerate(CLASSES):
            (root / "folder" / split / name).mkdir(parents=True)
            for i in range(n):
                value = (100 * s + 30 * c + i, c, i)
                ext = ".jpg" if i == 1 else ".png"  # (a .jpg is lossy: compared through the same decoder)
                Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(root / "folder" / split / name / f"{i}{ext}")
    assert main(["make-dataset", "shards", str(root / "wds"), "--from-folder", str(root / "folder"),
                 "--shards", "3", "--quiet"]) == 0
    return root


def identity_cfg(data, **kw) -> RunConfig:
    return make_cfg(data_path=str(data / "wds"), **kw)


def test_shards_hold_the_folder_images_and_labels(data):
    cfg = identity_cfg(data)
    assert sorted(p.name for p in (data / "wds" / "train").iterdir()) == [f"shard-00000{i}.tar" for i in range(3)]
    assert (data / "wds" / "classes.txt").read_text().split() == CLASSES
    folder = build_dataset(make_cfg(dataset="folder", data_path=str(data / "folder")), "train", transform=pixels)
    shards = build_dataset(cfg, "train", transform=pixels)
    assert shards.classes == CLASSES and len(shards) == len(folder) == 24
    assert sorted(shards[i] for i in range(24)) == sorted(folder[i] for i in range(24))
    assert shards.targets != sorted(shards.targets)  # shuffled before sharding
    val = build_dataset(cfg, "val", transform=pixels, classes=shards.classes)
    assert sorted(val[i][1] for i in range(len(val))) == [0, 0, 1, 1, 2, 2]
    unlabeled = build_unlabeled_dataset(cfg, "train", transform=pixels)
    assert {unlabeled[i][1] for i in range(24)} == {0} and unlabeled.classes == ["images"]
    # a brace pattern, a single shard, '::' lists and file:// name the same files
    pattern = f"{data}/wds/train/shard-{{000000..000002}}.tar"
    assert len(build_dataset(make_cfg(data_path=pattern), "train")) == 24
    two = f"file://{data}/wds/train/shard-000000.tar::{data}/wds/train/shard-000001.tar"
    assert len(build_dataset(make_cfg(data_path=two), "train")) == 16


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_members_skipped_named_and_classes_json(tmp_path):
    shard = tmp_path / "train" / "s.tar"
    shard.parent.mkdir()
    _tar(shard, {"a.png": _png(1), "a.cls": b"0", "bad.png": b"\x89PNG garbage", "bad.cls": b"1",
                 "noimg.cls": b"1", "nolabel.png": _png(4), "b.png": _png(2), "b.cls": b"1"})
    (tmp_path / "classes.json").write_text(json.dumps({"cat": 0, "dog": 1}))
    ds = build_dataset(make_cfg(data_path=str(tmp_path)), "train", transform=pixels)
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    got = [ds[i] for i in range(len(ds))]
    assert got.count(((1, 1, 1), 0)) == 1 and got.count(((2, 2, 2), 1)) >= 1
    assert sorted(ds.bad_files) == [f"{shard}:{k}" for k in ("bad", "noimg", "nolabel")]
    assert ds.bad_files[f"{shard}:nolabel"] == "no .cls member"
    strict = build_dataset(make_cfg(data_path=str(tmp_path), bad_image_policy="error"), "train")
    with pytest.raises(UserError, match=r"unreadable image .*s.tar:bad"):
        [strict[i] for i in range(len(strict))]
    # pre-training ignores labels: only the undecodable members are bad
    unl = build_unlabeled_dataset(make_cfg(data_path=str(tmp_path)), "train", transform=pixels)
    [unl[i] for i in range(len(unl))]
    assert sorted(unl.bad_files) == [f"{shard}:{k}" for k in ("bad", "noimg")]


def test_loader_batches_identical_with_0_and_2_workers_and_resume(data):
    runs = []
    for workers in (0, 2):
        cfg = identity_cfg(data, num_workers=workers)  # the default train transform: random crops, flips
        loader = build_loader(cfg, build_dataset(cfg, "train"), "train")
        set_epoch(loader, 1)
        runs.append([(x, y) for x, y in loader])
    assert len(runs[0]) == 6
    for (x0, y0), (x2, y2) in zip(*runs, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    resumed = list(loader_from_batch(loader, 4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, runs[0][4:], strict=True))


def test_streamed_urls_pipe_cat(data):
    url = f"pipe:cat {data}/wds/train/shard-{{000000..000002}}.tar"
    with pytest.raises(UserError, match="set train_num_samples"):
        build_dataset(make_cfg(data_path=url), "train")
    labels = {}
    for workers in (0, 2, 2):
        cfg = make_cfg(data_path=url, train_num_samples=24, num_workers=workers, shard_shuffle_buffer=8)
        loader = build_loader(cfg, build_dataset(cfg, "train", classes=CLASSES), "train")
        set_epoch(loader, 3)
        batches = [(x, y) for x, y in loader]
        assert len(loader) == len(batches) == 6 and all(x.shape == (4, 3, 16, 16) for x, _ in batches)
        labels.setdefault(workers, []).append(torch.cat([y for _, y in batches]).tolist())
        if workers == 2:  # mid-epoch resume continues with the same batches
            assert [y.tolist() for _, y in loader_from_batch(loader, 3)] == [y.tolist() for _, y in batches[3:]]
    assert labels[2][0] == labels[2][1]  # same seed, epoch and workers: same stream
    assert sorted(labels[0][0]) == [0] * 8 + [1] * 8 + [2] * 8  # one worker: the epoch is one pass
    val = build_dataset(make_cfg(data_path=url, val_data_path=f"pipe:cat {data}/wds/val/shard-000000.tar",
                                 val_num_samples=2), "val", classes=CLASSES)
    assert len(list(build_loader(make_cfg(), val, "val"))) == 1


def test_missing_shards_and_val_errors(data, tmp_path):
    with pytest.raises(UserError, match="shard not found: .*nope-000001.tar"):
        check_split_data(make_cfg(data_path=f"{tmp_path}/nope-{{000001..000002}}.tar"), "train")
    with pytest.raises(UserError, match=r"no \.tar shards in"):
        check_split_data(make_cfg(data_path=str(tmp_path)), "train")
    only_train = make_cfg(data_path=f"{data}/wds/train/shard-000000.tar")
    with pytest.raises(UserError, match="no validation shards: set val_data_path"):
        check_split_data(only_train, "val")
    assert build_unlabeled_dataset(only_train, "val") is None


@pytest.mark.usefixtures("one_thread")
def test_vitzoo_train_one_epoch_on_shards(data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "deit_tiny_patch16_224", "--model_overrides", TINY, "--input_size", "16",
            "--num_classes", "3", "--dataset", "webdataset", "--data_path", str(data / "wds"),
            "--output_dir", str(out), "--batch_size", "8", "--num_workers", "0", "--amp_level", "O0",
            "--device", "cpu", "--epochs", "1", "--warmup_epochs", "0", "--aa", "none", "--mixup", "0",
            "--cutmix", "0", "--reprob", "0", "--ckpt_save_every_seconds", "0"]
    assert main(args) == 0
    assert "eval results:" in (out / "train.log").read_text()


def test_local_shards_hand_jpegs_undecoded_to_the_training_crop(data):
    """As image folders do (data/transforms.py DraftResizedCrop decodes large JPEGs at a reduced scale)."""
    ds = build_dataset(identity_cfg(data), "train")  # the training transform: opens_lazily
    assert ds.transform.opens_lazily
    assert sum(is_undecoded_jpeg(ds._load(r)) for r in range(len(ds))) == 3  # the three 1.jpg, not the PNGs
    assert all(ds[i][0].shape == (3, 16, 16) for i in range(len(ds)))
