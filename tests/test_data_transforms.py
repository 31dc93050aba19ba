"""The transforms that decode large JPEGs at a reduced scale (data/transforms.py): the training crop
(DraftResizedCrop) against timm's RandomResizedCropAndInterpolation, the infer resize (DraftResize) against
the eval chain, BEiT's pre-training views (mim/transforms.py) against themselves on the decoded image; and
the training chain's one-pass tensor conversion against timm's MaybeToTensor + Normalize."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
from torchvision.transforms import Normalize

from vitzoo.config import config_from_dict
from vitzoo.data import build_dataset, build_eval_transform, build_train_transform, resolve_data_config
from vitzoo.data import transforms as vt
from vitzoo.data.datasets import _open_rgb, is_undecoded_jpeg
from vitzoo.data.synthetic import photo_like
from vitzoo.inference.predict import _ImageFiles
from vitzoo.mim.transforms import MIMTransform


def photo(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    photo_like(width, height, seed=width).convert(mode).save(path, quality=90)
    return path


def spy_on_decoding(monkeypatch) -> list[tuple[int, int]]:
    """The sizes the transforms decode images at, appended as they decode."""
    decoded, decode = [], vt.decode_image

    def spy(img, draft_size=None):
        out = decode(img, draft_size)
        decoded.append(out.size)
        return out

    monkeypatch.setattr(vt, "decode_image", spy)
    return decoded


def crop_pair(path: Path, seed: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(timm's crop of the decoded file, ours of the lazily opened file), with the same random draws."""
    timm_crop, ours = RandomResizedCropAndInterpolation(**kw), vt.DraftResizedCrop(**kw)
    random.seed(seed)
    expected = np.asarray(timm_crop(_open_rgb(path)), np.float32)
    random.seed(seed)
    got = np.asarray(ours(_open_rgb(path, lazy=True)), np.float32)
    return expected, got


@pytest.mark.parametrize("name,mode", [("a.jpg", "RGB"), ("gray.jpg", "L"), ("b.png", "RGB"), ("p.png", "P")])
def test_same_pixels_as_timm_where_the_crop_is_not_shrunk_much(tmp_path, name, mode):
    path = photo(tmp_path / name, 320, 240, mode)
    assert is_undecoded_jpeg(_open_rgb(path, lazy=True)) == name.endswith(".jpg")
    for seed in range(6):
        expected, got = crop_pair(path, seed, size=64, interpolation="bicubic")
        assert got.shape == (64, 64, 3) and np.array_equal(got, expected)


@pytest.mark.parametrize("width,height", [(1600, 1200), (1603, 1201)])  # odd: libjpeg rounds the scaled size up
def test_large_jpeg_decodes_reduced_and_stays_close(tmp_path, monkeypatch, width, height):
    path = photo(tmp_path / "big.jpg", width, height)
    decoded = spy_on_decoding(monkeypatch)
    for seed in range(4):  # crops of >= 90% of the area: >= 1,138 px, shrunk >= 5x to 224
        expected, got = crop_pair(path, seed, size=224, scale=(0.9, 1.0), interpolation="bicubic")
        assert np.abs(got - expected).mean() < 1.0  # grey levels of 255 (measured: about 0.3)
    assert decoded and all(w <= 802 and h <= 601 for w, h in decoded)  # libjpeg's 1/2 scale or less


def test_train_set_hands_jpegs_undecoded_to_the_crop(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        photo(tmp_path / "train" / cls / "x.jpg", 96, 80)
    cfg = config_from_dict({"data_path": str(tmp_path), "num_workers": 0, "input_size": 32, "output_dir": "",
                            "reprob": 0.0}, strict=True)
    transform = build_train_transform(cfg, resolve_data_config(cfg, None))
    assert transform.opens_lazily and isinstance(transform.transforms[0], vt.DraftResizedCrop)
    ds = build_dataset(cfg, "train")
    assert is_undecoded_jpeg(ds._load(0))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0



def test_random_interpolation_is_for_training_only():
    """interpolation: random draws bilinear or bicubic per training crop (timm's); the evaluation resize
    and the checkpoint's preprocessing keep the model's filter (timm's eval transform has no random)."""
    cfg = config_from_dict({"data_path": "", "num_workers": 0, "output_dir": "", "interpolation": "random"},
                           strict=True)
    data_config = resolve_data_config(cfg, {"interpolation": "bilinear"})
    assert data_config["interpolation"] == "bilinear"
    crop = build_train_transform(cfg, data_config).transforms[0]
    assert isinstance(crop.interpolation, (list, tuple)) and len(crop.interpolation) == 2
    assert build_eval_transform(data_config) is not None

EVAL_CONFIG = {"input_size": (3, 224, 224), "crop_pct": 0.875, "mean": (0.5,) * 3, "std": (0.5,) * 3,
               "interpolation": "bicubic"}


def test_infer_resize_same_as_eval_for_small_jpegs(tmp_path):
    path = photo(tmp_path / "a.jpg", 700, 500)  # short side 500 < 4 x 256: decoded in full
    drafted = build_eval_transform(EVAL_CONFIG, draft=True)
    assert drafted.opens_lazily and isinstance(drafted.transforms[0], vt.DraftResize)
    assert torch.equal(drafted(_open_rgb(path, lazy=True)), build_eval_transform(EVAL_CONFIG)(_open_rgb(path)))


@pytest.mark.parametrize("width,height", [(1600, 1200), (1603, 1200)])
def test_infer_resize_decodes_large_jpegs_reduced_and_stays_close(tmp_path, monkeypatch, width, height):
    """Short side 1200 = 4.7 x 256: libjpeg's 1/2 scale. At 1603 px the scaled image is 802 px wide, not
    801.5: the resize must keep the full image's output size and extent (it once shifted the crop)."""
    path = photo(tmp_path / "big.jpg", width, height)
    decoded = spy_on_decoding(monkeypatch)
    got = build_eval_transform(EVAL_CONFIG, draft=True)(_open_rgb(path, lazy=True))
    expected = build_eval_transform(EVAL_CONFIG)(_open_rgb(path))
    assert decoded == [((width + 1) // 2, 600)] and got.shape == expected.shape == (3, 224, 224)
    assert (got - expected).abs().mean() * 0.5 * 255 < 1.0  # grey levels (std 0.5); measured <= 0.4


def test_infer_names_a_large_jpeg_that_breaks_while_decoding(tmp_path):
    good = photo(tmp_path / "good.jpg", 1600, 1200)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # the header reads, the data ends
    files = _ImageFiles([good, broken], build_eval_transform(EVAL_CONFIG, draft=True))
    assert files[0][1].shape == (3, 224, 224) and files[0][2] is None
    name, x, why = files[1]
    assert name == str(broken) and x is None and why.startswith("not a readable image (image file is truncated")


def mim_views(path: Path, lazy: bool, seed: int) -> tuple[torch.Tensor, ...]:
    """BEiT's two views of one crop (mim/transforms.py), colour jitter and flip on, seeded."""
    cfg = config_from_dict({"data_path": "", "output_dir": "", "color_jitter": 0.4}, strict=True)
    transform = MIMTransform(cfg, dict(EVAL_CONFIG), grid=(14, 14), second_size=112)
    random.seed(seed), torch.manual_seed(seed)
    return transform(_open_rgb(path, lazy=lazy))


def test_beit_views_of_a_small_jpeg_are_unchanged_and_of_a_large_one_close(tmp_path, monkeypatch):
    small, large = photo(tmp_path / "small.jpg", 500, 375), photo(tmp_path / "large.jpg", 1600, 1200)
    for seed in range(3):
        for a, b in zip(mim_views(small, False, seed), mim_views(small, True, seed)):
            assert torch.equal(a, b)
    decoded = spy_on_decoding(monkeypatch)
    for seed in range(3):  # the jitter runs on the reduced image (contrast: its mean); measured <= 0.65 grey
        (patches, view, mask), (patches_lazy, view_lazy, mask_lazy) = (mim_views(large, lazy, seed)
                                                                        for lazy in (False, True))
        assert torch.equal(mask, mask_lazy) and patches.shape == patches_lazy.shape == (3, 224, 224)
        assert (patches - patches_lazy).abs().mean() * 0.5 * 255 < 1.0 and (view - view_lazy).abs().mean() * 255 < 1.0
    assert any(w < 1600 for w, _ in decoded)


def test_training_tensor_is_timms_to_tensor_then_normalize_in_one_pass():
    cfg = config_from_dict({"data_path": "", "output_dir": "", "input_size": 32}, strict=True)
    steps = build_train_transform(cfg, resolve_data_config(cfg, None)).transforms
    fused = next(t for t in steps if isinstance(t, vt.ToNormalizedTensor))
    img = photo_like(50, 70).resize((32, 32))
    mean, std = resolve_data_config(cfg, None)["mean"], resolve_data_config(cfg, None)["std"]
    expected = Normalize(mean, std)(MaybeToTensor()(img))
    got = fused(img)
    assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == expected.shape == (3, 32, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)  # the last bit: (x - 255m) / 255s
    already = torch.rand(3, 8, 8)  # anything but an RGB PIL image takes timm's pair itself
    assert torch.equal(fused(already), Normalize(mean, std)(already))
    assert not any(type(t).__name__ in ("MaybeToTensor", "Normalize") for t in steps)
