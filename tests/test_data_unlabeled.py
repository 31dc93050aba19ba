"""build_unlabeled_dataset: any folder tree of images (labels ignored), split folders, errors, bad images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.config import RunConfig, config_from_dict
from vitzoo.data import build_loader, build_unlabeled_dataset, report_bad_files
from vitzoo.errors import UserError


def make_cfg(**kw) -> RunConfig:
    base = {"data_path": "", "num_workers": 0, "batch_size": 2, "input_size": 16, "output_dir": ""}
    return config_from_dict({**base, **kw}, strict=True)


def save(path: Path, value: int, ext: str = ".png") -> Path:
    path = path.with_suffix(ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """Images at depth 0, 1 and 3, with a class-like folder and a flat one, plus non-image files."""
    save(tmp_path / "top", 10)
    save(tmp_path / "cats" / "a", 20, ".jpg")
    save(tmp_path / "cats" / "b", 30)
    save(tmp_path / "deep" / "x" / "y" / "c", 40, ".JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "deep" / ".hidden.png").write_bytes(b"")
    return tmp_path


def test_any_tree_labels_zero_and_no_val(tree):
    cfg = make_cfg(data_path=str(tree))
    ds = build_unlabeled_dataset(cfg, "train", transform=lambda im: np.asarray(im)[0, 0, 0])
    assert [Path(p).relative_to(tree).as_posix() for p in ds.paths] == [
        "cats/a.jpg", "cats/b.png", "deep/x/y/c.JPEG", "top.png"]
    assert set(ds.targets) == {0} and ds.classes == ["images"]
    assert [ds[i][1] for i in range(len(ds))] == [0, 0, 0, 0]
    assert build_unlabeled_dataset(cfg, "val") is None  # no data_path/val: no validation set


def test_split_folders_and_val_excluded_from_train(tree):
    save(tree / "val" / "v1", 50)
    cfg = make_cfg(data_path=str(tree))
    train, val = build_unlabeled_dataset(cfg, "train"), build_unlabeled_dataset(cfg, "val")
    assert len(train) == 4 and not any("/val/" in p for p in train.paths)  # root minus val/
    assert len(val) == 1 and val[0][0].shape == (3, 16, 16)  # the default eval transform
    save(tree / "train" / "t1", 60)  # train/ exists: it alone is the train set
    assert [Path(p).name for p in build_unlabeled_dataset(cfg, "train").paths] == ["t1.png"]
    other = tree / "elsewhere"
    save(other / "deep" / "o", 70)
    assert len(build_unlabeled_dataset(make_cfg(data_path=str(tree), val_data_path=str(other)), "val")) == 1


def test_tuple_transform_passes_through_collate(tree):
    cfg = make_cfg(data_path=str(tree), batch_size=2)

    def views(im):
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()
        return x, x[:, ::2, ::2], torch.zeros(3, dtype=torch.bool)

    ds = build_unlabeled_dataset(cfg, "train", transform=views)
    (big, small, mask), y = next(iter(build_loader(cfg, ds, "train")))
    assert big.shape == (2, 3, 12, 12) and small.shape == (2, 3, 6, 6) and mask.shape == (2, 3)
    assert y.tolist() == [0, 0]


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match="folder not found: .*missing"):
        build_unlabeled_dataset(make_cfg(data_path=str(tmp_path / "missing")), "train")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "a.txt").write_text("x")
    with pytest.raises(UserError, match=r"no images under .*empty \(any depth; extensions read: .jpg"):
        build_unlabeled_dataset(make_cfg(data_path=str(tmp_path / "empty")), "train")
    with pytest.raises(UserError, match="data_path is not set"):
        build_unlabeled_dataset(make_cfg(), "train")
    with pytest.raises(UserError, match="val_data_path: folder not found"):
        build_unlabeled_dataset(make_cfg(data_path=str(tmp_path), val_data_path=str(tmp_path / "nope")), "val")


def test_corrupt_image_skipped_reported_or_fatal(tree, tmp_path):
    (tree / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cfg = make_cfg(data_path=str(tree), num_workers=2, batch_size=1)
    ds = build_unlabeled_dataset(cfg, "train")
    assert len(ds) == 5
    batches = list(build_loader(cfg, ds, "train"))  # workers find it; the loader relays it
    assert len(batches) == 5  # the bad one is replaced by the next image
    out = tmp_path / "run"
    out.mkdir()
    assert [Path(p).name for p in report_bad_files(ds, out, 1)] == ["broken.png"]
    assert "broken.png" in (out / "bad_files.txt").read_text()
    strict = build_unlabeled_dataset(make_cfg(data_path=str(tree), bad_image_policy="error"), "train")
    with pytest.raises(UserError, match="unreadable image .*broken.png"):
        [strict[i] for i in range(len(strict))]


def test_seeded_subset_and_exact_batches_across_workers(tree):
    kw = {"data_path": str(tree), "train_num_samples": 3}
    ds0 = build_unlabeled_dataset(make_cfg(**kw), "train")
    assert len(ds0) == 3
    got = []
    for workers in (0, 2):
        cfg = make_cfg(**kw, num_workers=workers, batch_size=1)
        got.append([x for x, _ in build_loader(cfg, build_unlabeled_dataset(cfg, "train"), "train")])
    assert all(torch.equal(a, b) for a, b in zip(*got, strict=True))
