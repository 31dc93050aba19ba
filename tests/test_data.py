"""Data pipeline: folder / CIFAR readers, subsets, bad files, transforms, mixup, loaders, make-dataset."""

from __future__ import annotations

import functools
import hashlib
import operator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.config import RunConfig, config_from_dict
from vitzoo.data import (
    OrderedSplitSampler,
    build_dataset,
    build_eval_transform,
    build_loader,
    build_mixup,
    build_train_transform,
    image_batches,
    list_images,
    load_image,
    make_shapes_dataset,
    read_cifar_bin,
    report_bad_files,
    resolve_data_config,
    set_epoch,
)
from vitzoo.data.loader import usable_cpus
from vitzoo.errors import UserError


def make_cfg(**kw) -> RunConfig:
    """A validated RunConfig with the DeiT recipe's data keys at tiny sizes (what the pipeline reads)."""
    base = {"data_path": "", "num_workers": 0, "batch_size": 4, "input_size": 32, "output_dir": ""}
    return config_from_dict({**base, **kw}, strict=True)


def write_folder(root: Path, spec: dict[str, int], size: int = 12, ext: str = ".png") -> None:
    """root/<class>/<i><ext> with ``spec[class]`` images whose pixel value encodes (class, i)."""
    for ci, (cls, n) in enumerate(sorted(spec.items())):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.full((size, size, 3), ci * 40 + i, np.uint8)
            Image.fromarray(arr).save(root / cls / f"img{i}{ext}")


@pytest.fixture
def folder(tmp_path):
    write_folder(tmp_path / "train", {"zebra": 3, "apple": 2, "mango": 3})
    write_folder(tmp_path / "val", {"zebra": 1, "apple": 2, "mango": 1})
    return tmp_path


# ---------------------------------------------------------------------------------------- folder reader
def test_folder_reader_classes_labels_and_extensions(folder):
    Image.new("RGB", (8, 8)).save(folder / "train" / "apple" / "UPPER.JPG")  # case-insensitive extension
    (folder / "train" / "apple" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    cfg = make_cfg(data_path=str(folder))
    ds = build_dataset(cfg, "train")
    assert ds.classes == ["apple", "mango", "zebra"]  # sorted folder names
    assert len(ds) == 3 + 3 + 3
    assert sum(t == 0 for t in ds.targets) == 3  # 2 png + 1 JPG in apple
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    val = build_dataset(cfg, "val")
    assert val.classes == ds.classes and sorted(val.targets) == [0, 0, 1, 2]


def test_val_folder_missing_a_class_keeps_train_label_indices(folder):
    import shutil

    shutil.rmtree(folder / "val" / "apple")
    val = build_dataset(make_cfg(data_path=str(folder)), "val")
    assert val.classes == ["apple", "mango", "zebra"] and sorted(val.targets) == [1, 2]


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_dataset(make_cfg(data_path=str(tmp_path / "nope")), "train")
    (tmp_path / "train" / "empty").mkdir(parents=True)
    write_folder(tmp_path / "train", {"full": 1})
    with pytest.raises(UserError, match=r"train[/\\]empty holds no images"):
        build_dataset(make_cfg(data_path=str(tmp_path)), "train")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "loose.png").write_bytes(b"")
    with pytest.raises(UserError, match="no class folders"):
        build_dataset(make_cfg(data_path=str(tmp_path)), "val")


def test_subsets_are_seeded_and_fixed(folder):
    cfg = make_cfg(data_path=str(folder), train_num_samples=4, seed=3)
    a, b = build_dataset(cfg, "train"), build_dataset(cfg, "train")
    assert len(a) == 4 and a.targets == b.targets and list(a._index) == list(b._index)
    assert list(a._index) == sorted(a._index)
    other = {
        tuple(build_dataset(make_cfg(data_path=str(folder), train_num_samples=4, seed=s), "train")._index)
        for s in range(8)
    }
    assert len(other) > 1  # the seed picks the subset
    assert len(build_dataset(make_cfg(data_path=str(folder), train_num_samples=100), "train")) == 8


def test_list_and_load_image(folder, tmp_path):
    files = list_images(folder / "train" / "zebra")
    assert [f.name for f in files] == ["img0.png", "img1.png", "img2.png"]
    assert list_images(files[0]) == [files[0]]
    assert len(list_images(folder / "train", recursive=True)) == 8
    Image.new("L", (5, 7)).save(tmp_path / "gray.png")
    img = load_image(tmp_path / "gray.png")
    assert img.mode == "RGB" and img.size == (5, 7)
    with pytest.raises(UserError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="no such file or folder"):
        list_images(tmp_path / "missing")


# ---------------------------------------------------------------------------------------- CIFAR binary
def cifar_records(labels, label_bytes=1, coarse=None) -> tuple[bytes, np.ndarray]:
    """Real CIFAR binary records: label byte(s) then R, G, B planes (1024 bytes each, row-major)."""
    rng = np.random.default_rng(len(labels))
    imgs = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    out = bytearray()
    for i, (lab, img) in enumerate(zip(labels, imgs)):
        if label_bytes == 2:
            out.append(coarse[i])
        out.append(lab)
        for c in range(3):
            out += img[:, :, c].tobytes()  # one colour plane
    return bytes(out), imgs


def test_cifar10_binary_reader(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    truth = {}
    for b in range(1, 6):
        labels = [(b + i) % 10 for i in range(3)]
        data, imgs = cifar_records(labels)
        (d / f"data_batch_{b}.bin").write_bytes(data)
        truth[b] = (labels, imgs)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (d / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    verify = tmp_path / "cifar-10-verify-bin"
    verify.mkdir()
    vdata, vimgs = cifar_records([9, 0])
    (verify / "test_batch.bin").write_bytes(vdata)

    imgs, labels = read_cifar_bin(d / "data_batch_2.bin")
    assert labels.tolist() == truth[2][0] and np.array_equal(imgs, truth[2][1])

    cfg = make_cfg(dataset="CIFAR10", data_path=str(d), val_data_path=str(verify), input_size=48)
    train = build_dataset(cfg, "train")
    assert len(train) == 15 and train.classes == names
    assert train.targets == functools.reduce(operator.iadd, (truth[b][0] for b in range(1, 6)), [])
    val = build_dataset(cfg, "val")
    assert val.targets == [9, 0] and val.classes == names  # names found beside the train batches
    x, y = val[0]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and y == 9  # 32x32 upsampled to 48
    # raw pixels round-trip through the eval transform without resizing at input 32, crop 1.0
    raw = build_dataset(
        make_cfg(
            dataset="cifar10",
            data_path=str(verify),
            val_data_path="",
            crop_pct=1.0,
            imagenet_default_mean_and_std=False,
        ),
        "val",
    )
    x0, _ = raw[1]
    expect = torch.from_numpy(vimgs[1]).permute(2, 0, 1).float() / 255
    assert torch.allclose(x0, (expect - 0.5) / 0.5, atol=1e-5)
    assert raw.classes == [str(i) for i in range(10)]  # no names file there


def test_cifar100_fine_labels_and_wrong_size(tmp_path):
    data, _ = cifar_records([42, 7, 99], label_bytes=2, coarse=[3, 1, 19])
    (tmp_path / "train.bin").write_bytes(data)
    (tmp_path / "test.bin").write_bytes(data[: 2 * 3074])
    cfg = make_cfg(dataset="cifar100", data_path=str(tmp_path))
    train = build_dataset(cfg, "train")
    assert train.targets == [42, 7, 99] and len(train.classes) == 100
    assert build_dataset(cfg, "val").targets == [42, 7]
    (tmp_path / "test.bin").write_bytes(data[:3000])
    with pytest.raises(UserError, match=r"test\.bin.*multiple of 3074"):
        build_dataset(cfg, "val")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "test_batch.bin").write_bytes(b"\0" * 3072)
    with pytest.raises(UserError, match=r"test_batch\.bin.*multiple of 3073"):
        build_dataset(make_cfg(dataset="cifar10", data_path=str(tmp_path / "bad")), "val")
    with pytest.raises(UserError, match="no cifar10 train batch"):
        build_dataset(make_cfg(dataset="cifar10", data_path=str(tmp_path / "bad")), "train")


# ---------------------------------------------------------------------------------------- bad files
def corrupt(root: Path) -> list[str]:
    """A truncated JPEG, a zero-byte file and a text file named .jpg, among good images."""
    cls = root / "train" / "mango"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(cls / "full.jpg")
    data = (cls / "full.jpg").read_bytes()
    (cls / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (cls / "zero.jpg").write_bytes(b"")
    (cls / "text.jpg").write_text("hello, I am not a JPEG")
    return sorted(str(cls / n) for n in ("trunc.jpg", "zero.jpg", "text.jpg"))


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_images_skipped_counted_and_reported(folder, tmp_path, workers):
    bad = corrupt(folder)
    cfg = make_cfg(data_path=str(folder), num_workers=workers, batch_size=2)
    ds = build_dataset(cfg, "train")
    assert len(ds) == 12
    loader = build_loader(cfg, ds, "train")
    for epoch in range(2):  # persistent workers: the second epoch must not lose or duplicate anything
        n = sum(len(y) for _, y in loader)
        assert n == 12
        assert sorted(ds.bad_files) == bad
        assert report_bad_files(ds, tmp_path / "out", epoch) == bad
    text = (tmp_path / "out" / "bad_files.txt").read_text()
    assert "3 unreadable" in text and all(b in text for b in bad)
    # the replacement is deterministic: a bad index yields the next readable sample (in dataset order)
    det = build_dataset(cfg, "train", transform=build_eval_transform(resolve_data_config(cfg, None)))
    for b in bad:
        i = det.paths.index(b)
        nxt = next(j % len(det) for j in range(i + 1, i + len(det)) if det.paths[j % len(det)] not in bad)
        (x, y), (x2, y2) = det[i], det[nxt]
        assert torch.equal(x, x2) and y == y2


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_policy_error(folder, workers):
    bad = corrupt(folder)
    cfg = make_cfg(data_path=str(folder), num_workers=workers, batch_size=12, bad_image_policy="error")
    loader = build_loader(cfg, build_dataset(cfg, "train"), "train")
    with pytest.raises(UserError) as e:
        next(iter(loader))
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg  # one clean line, even from a worker
    assert any(b in msg for b in bad) and "bad_image_policy" in msg


# ---------------------------------------------------------------------------------------- transforms
class FakeModel:
    data_config: ClassVar[dict] = {
        "input_size": (3, 40, 40),
        "crop_pct": 0.9,
        "mean": (0.1, 0.2, 0.3),
        "std": (1.0, 1.0, 1.0),
        "interpolation": "bilinear",
    }


def test_resolve_data_config_overrides():
    dc = resolve_data_config(make_cfg(input_size=None, interpolation="bilinear"), FakeModel())
    assert dc == {**FakeModel.data_config, "input_size": (3, 40, 40)}
    dc = resolve_data_config(
        make_cfg(input_size=64, crop_pct=0.75, imagenet_default_mean_and_std=False), FakeModel()
    )
    assert dc["input_size"] == (3, 64, 64) and dc["crop_pct"] == 0.75 and dc["interpolation"] == "bicubic"
    assert dc["mean"] == dc["std"] == (0.5, 0.5, 0.5)
    dc = resolve_data_config(make_cfg(imagenet_default_mean_and_std=True), FakeModel())
    assert dc["mean"] == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("aa", ["rand-m9-mstd0.5-inc1", "original", "augmix-m5-w4-d2", "none"])
def test_train_transform_shapes(aa):
    cfg = make_cfg(aa=aa, aa_interpolation="bilinear", reprob=1.0)
    t = build_train_transform(cfg, resolve_data_config(cfg, None))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), np.uint8))
    x = t(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    if aa == "none":
        assert not any("RandAug" in type(s).__name__ for s in t.transforms)
    # posterize at 0 bits (RandAugment magnitude 10) must not crash with Pillow >= 13: a black image
    found = 0
    for t_ in t.transforms:
        for op in [
            *(getattr(t_, "ops", None) or []),
            *functools.reduce(operator.iadd, getattr(t_, "policy", None) or [], []),
        ]:
            if "Posterize" in op.name:
                assert op.aug_fn(img, 0).getextrema() == ((0, 0),) * 3
                assert op.aug_fn(img, 8) is img
                found += 1
    assert (found > 0) == (aa != "none")
    with pytest.raises(UserError, match="aa="):
        build_train_transform(make_cfg(aa="bogus-aug"), resolve_data_config(cfg, None))


def test_eval_transform_resize_crop_normalise():
    dc = {
        "input_size": (3, 32, 32),
        "crop_pct": 0.5,
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "interpolation": "nearest",
    }
    arr = np.zeros((64, 96, 3), np.uint8)
    arr[16:48, 32:64] = 255  # a white centre block exactly the crop region after no resize (64 / 0.5 = 64)
    x = build_eval_transform(dc)(Image.fromarray(arr).convert("RGBA"))  # any mode in, RGB tensor out
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.all(x == 1.0)  # centre crop of the short-side-64 image is the white block, (1-0.5)/0.5
    small = build_eval_transform({**dc, "input_size": (3, 48, 48), "crop_pct": 1.0})(
        Image.new("RGB", (32, 32))
    )
    assert small.shape == (3, 48, 48)  # CIFAR-size images are upsampled


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_mixup_targets_sum_to_one(mode):
    cfg = make_cfg(mixup_mode=mode, cutmix_minmax=None)
    mix = build_mixup(cfg, 5)
    x = torch.randn(6, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    for _ in range(3):
        xm, t = mix(x.clone(), y)
        assert xm.shape == x.shape and t.shape == (6, 5)
        assert torch.allclose(t.sum(1), torch.ones(6))
        assert t.min() >= 0.1 / 5 - 1e-6  # label smoothing folded in
    assert build_mixup(make_cfg(mixup=0.0, cutmix=0.0), 5) is None
    assert build_mixup(make_cfg(mixup=0.0, cutmix=0.0, cutmix_minmax=[0.2, 0.8]), 5) is not None
    with pytest.raises(UserError):
        build_mixup(make_cfg(mixup_mode="rows"), 5)


# ---------------------------------------------------------------------------------------- loaders
def test_loaders_samplers_and_split(folder):
    cfg = make_cfg(data_path=str(folder), batch_size=3, eval_batch_size=3)
    ds = build_dataset(cfg, "train")
    loader = build_loader(cfg, ds, "train")
    assert len(loader) == 2  # 8 samples, drop_last
    order = [y.tolist() for _, y in loader]
    assert order == [y.tolist() for _, y in build_loader(cfg, build_dataset(cfg, "train"), "train")]
    val = build_dataset(cfg, "val")
    vl = build_loader(cfg, val, "val")
    assert sum(len(y) for _, y in vl) == len(val) == 4  # no drop_last in eval
    # a non-padded split: the ranks together see each index exactly once
    idx = sorted(i for r in range(3) for i in OrderedSplitSampler(range(10), 3, r))
    assert idx == list(range(10))
    assert (
        build_loader(
            make_cfg(data_path=str(folder), repeated_aug=True, batch_size=2), ds, "train"
        ).sampler.sampler.__class__.__name__
        == "RepeatAugSampler"
    )
    with pytest.raises(UserError, match="fewer than one batch"):
        build_loader(make_cfg(batch_size=64), ds, "train")


# ---------------------------------------------------------------------------------------- make-dataset
def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_make_dataset_deterministic_and_readable(tmp_path):
    from vitzoo.cli import main

    args = ["--num-train", "12", "--num-val", "6", "--size", "24", "--num-classes", "3", "--quiet"]
    assert main(["make-dataset", "shapes", str(tmp_path / "a"), "--seed", "5", *args]) == 0
    make_shapes_dataset(tmp_path / "b", 12, 6, 24, 5, num_classes=3)
    make_shapes_dataset(tmp_path / "c", 12, 6, 24, 6, num_classes=3)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    ds = build_dataset(make_cfg(data_path=str(tmp_path / "a")), "train")
    assert ds.classes == ["circle", "square", "triangle"] and len(ds) == 12
    assert sorted(ds.targets) == [0] * 4 + [1] * 4 + [2] * 4
    assert Image.open(ds.paths[0]).size == (24, 24)
    # same settings again: nothing to do; other settings: refused unless --overwrite
    assert main(["make-dataset", "shapes", str(tmp_path / "a"), "--seed", "5", *args]) == 0
    assert main(["make-dataset", "shapes", str(tmp_path / "a"), "--seed", "7", *args]) == 2
    assert main(["make-dataset", "shapes", str(tmp_path / "a"), "--seed", "6", "--overwrite", *args]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "c")


@pytest.mark.parametrize("workers", [2, 3])
def test_augmentation_draws_belong_to_the_sample(folder, workers):
    """Batches depend on (seed, epoch, position), not on the loader's worker count, and loading them
    leaves the main process's random streams where they were (mixup and drop path draw from those)."""
    def epoch_batches(num_workers: int) -> tuple[torch.Tensor, float]:
        cfg = make_cfg(data_path=str(folder), num_workers=num_workers, batch_size=2, reprob=0.5)
        loader = build_loader(cfg, build_dataset(cfg, "train"), "train")
        set_epoch(loader, 3)
        torch.manual_seed(0)
        batches = torch.cat([x for x, _ in loader])
        return batches, torch.rand(1).item()

    (a, after_a), (b, after_b) = epoch_batches(0), epoch_batches(workers)
    torch.manual_seed(0)
    assert torch.equal(a, b) and after_a == after_b == torch.rand(1).item()


def test_workers_capped_at_the_usable_cpus(folder):
    """More loader workers than CPUs only compete for them (and torch warns): capped, same batches."""
    cfg = make_cfg(data_path=str(folder), num_workers=usable_cpus() + 6, batch_size=2)
    assert build_loader(cfg, build_dataset(cfg, "train"), "train").num_workers == usable_cpus()


def test_calibration_images_are_spread_over_the_folder_and_skip_bad_files(tmp_path, capsys):
    """image_batches (int8 calibration): evenly spaced over the sorted paths, so every class of a folder per
    class is in it, streamed in batches; an unreadable image is skipped with a note naming it; none readable
    is one line."""
    for c in ("a", "b", "c"):
        (tmp_path / c).mkdir()
        for i in range(4):
            Image.new("RGB", (16, 16), (80 * ("abc".index(c)), 10 * i, 0)).save(tmp_path / c / f"{i}.png")
    config = {"input_size": (3, 16, 16), "interpolation": "bilinear", "crop_pct": 1.0,
              "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    batches = list(image_batches(tmp_path, config, 3))
    assert [b.shape for b in batches] == [(3, 3, 16, 16)]
    assert sorted(round(v * 255 / 80) for v in batches[0][:, 0, 0, 0].tolist()) == [0, 1, 2]  # one per class
    (tmp_path / "b" / "9.png").write_bytes(b"not a png")
    assert [len(b) for b in image_batches(tmp_path, config, 100, batch_size=5)] == [5, 5, 2]
    err = capsys.readouterr().err
    assert "1 unreadable calibration image(s) skipped" in err and "9.png" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"nope")
    with pytest.raises(UserError, match="no readable images in"):
        list(image_batches(bad, config, 8))
