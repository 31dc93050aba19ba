"""augment_on: device -- the device ops against timm's Pillow ops, and the split chain against timm's chain."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as taa

from vitzoo.config import config_from_dict
from vitzoo.data import build_loader, build_train_transform, device_stage
from vitzoo.data.augment_ops import apply_plan
from vitzoo.data.augment_plan import PLAN_WIDTH, _Recorder
from vitzoo.data.datasets import seeded_augmentation
from vitzoo.data.synthetic import photo_like
from vitzoo.data.transforms import DEFAULT_DATA_CONFIG, _posterize
from vitzoo.errors import UserError

FILL = (124, 116, 104)  # timm's img_mean for ImageNet's mean
# (timm op, level args): every op of RandAugment's increasing set, at magnitudes either side of neutral
OPS = [("AutoContrast", ()), ("Equalize", ()), ("Invert", ()), ("PosterizeIncreasing", (2,)),
       ("PosterizeIncreasing", (0,)), ("SolarizeIncreasing", (100,)), ("SolarizeAdd", (60,)),
       ("ColorIncreasing", (1.7,)), ("ColorIncreasing", (0.3,)), ("ContrastIncreasing", (1.8,)),
       ("ContrastIncreasing", (0.4,)), ("BrightnessIncreasing", (1.6,)), ("SharpnessIncreasing", (1.8,)),
       ("SharpnessIncreasing", (0.2,)), ("Rotate", (23.0,)), ("Rotate", (-17.0,)), ("ShearX", (0.25,)),
       ("ShearY", (-0.2,)), ("TranslateXRel", (0.3,)), ("TranslateYRel", (-0.25,)),
       # the names AutoAugment's policies ('original', 'v0', ...) use for the same arithmetic
       ("Posterize", (5,)), ("Solarize", (200,)), ("Color", (0.5,)), ("Contrast", (1.3,)),
       ("Brightness", (0.7,)), ("Sharpness", (1.5,)), ("TranslateX", (-40.0,)), ("TranslateY", (35.0,))]


def make_cfg(**kw):
    base = {"data_path": "", "num_workers": 0, "batch_size": 8, "output_dir": ""}
    return config_from_dict({**base, **kw}, strict=True)


@pytest.fixture(scope="module")
def photo():
    return photo_like(224, 224, seed=3).convert("RGB")


def as_batch(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W) uint8


@pytest.mark.parametrize("resample", [Image.BILINEAR, Image.BICUBIC], ids=["bilinear", "bicubic"])
@pytest.mark.parametrize(("name", "args"), OPS, ids=[f"{n}{a}" for n, a in OPS])
def test_each_op_gives_pillows_pixels(photo, name, args, resample):
    op = _posterize if taa.NAME_TO_OP[name] is taa.posterize else taa.NAME_TO_OP[name]
    expected = np.array(op(photo, *args, fillcolor=FILL, resample=resample))
    rows: list = []
    _Recorder(name, rows)(photo, *args, fillcolor=FILL, resample=resample)
    plan = torch.zeros(1, 1, PLAN_WIDTH, dtype=torch.float64)
    plan[0, 0, : len(rows[0])] = torch.tensor(rows[0], dtype=torch.float64)
    got = apply_plan(as_batch(photo), plan, torch.tensor(FILL, dtype=torch.float32))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected), np.abs(got.astype(int) - expected).max()


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    photo_like(400, 320, seed=1).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_split_chain_gives_timms_images_outside_the_erased_boxes():
    """Same sample seeds: the workers' crops + plans, applied on the device as one batch, equal timm's CPU
    chain (RandAugment m9, bicubic, random erasing 0.25) everywhere but inside the erasing boxes, which hold
    noise from another generator."""
    data = jpeg_bytes()
    on_cpu = build_train_transform(make_cfg(), DEFAULT_DATA_CONFIG)
    split = build_train_transform(make_cfg(augment_on="device"), DEFAULT_DATA_CONFIG)
    stage = device_stage(split)
    assert device_stage(on_cpu) is None and stage is not None
    expected, parts = [], []
    for seed in range(48):
        with seeded_augmentation(seed):
            expected.append(on_cpu(Image.open(io.BytesIO(data))))
        with seeded_augmentation(seed):
            parts.append(split(Image.open(io.BytesIO(data))))
    pixels, plans, boxes, seeds = (torch.stack(p) for p in zip(*parts))
    assert pixels.dtype == torch.uint8 and pixels.shape == (48, 224, 224, 3)
    assert len(set(plans[:, :, 0].flatten().tolist())) >= 8  # many op kinds in one batch
    got, _ = stage((pixels, plans, boxes, seeds), torch.zeros(48, dtype=torch.int64), "cpu")
    expected = torch.stack(expected)
    erased = torch.zeros(48, 1, 224, 224, dtype=torch.bool)
    for i, (top, left, h, w) in enumerate(boxes[:, 0].tolist()):
        erased[i, :, top:top + h, left:left + w] = True
    assert 4 <= int((boxes[:, 0, 2] > 0).sum()) <= 24  # about a quarter of the images erased
    assert (got - expected).abs().masked_fill(erased, 0).max() < 1e-5
    inside = (got - expected).abs()[erased.expand_as(got)]
    assert inside.numel() and inside.mean() > 0.5  # noise, not the image
    again, _ = stage((pixels, plans, boxes, seeds), torch.zeros(48, dtype=torch.int64), "cpu")
    assert torch.equal(got, again)  # the noise is the seeds', not the global generator's


def test_device_plans_do_not_depend_on_loader_workers(tmp_path):
    for i in range(8):
        Image.fromarray(np.asarray(photo_like(64, 48, seed=i).convert("RGB"))).save(tmp_path / f"{i}.jpg")
    (tmp_path / "train" / "a").mkdir(parents=True)
    for p in tmp_path.glob("*.jpg"):
        p.rename(tmp_path / "train" / "a" / p.name)
    from vitzoo.data import build_dataset

    batches = []
    for workers in (0, 2):
        cfg = make_cfg(data_path=str(tmp_path), augment_on="device", num_workers=workers, batch_size=4,
                       input_size=32, persistent_workers=False)
        ds = build_dataset(cfg, "train", data_config={**DEFAULT_DATA_CONFIG, "input_size": (3, 32, 32)})
        batches.append([x for x, _ in build_loader(cfg, ds, "train")])
    for one, two in zip(*batches):
        for a, b in zip(one, two):
            assert torch.equal(a, b)


@pytest.mark.parametrize("kw", [{"aa": "none"}, {"aa": "augmix-m5-w4-d2"}], ids=["colour-jitter", "augmix"])
def test_recipes_without_a_device_version_are_refused_in_one_line(kw):
    with pytest.raises(UserError, match="augment_on: cpu"):
        build_train_transform(make_cfg(augment_on="device", **kw), DEFAULT_DATA_CONFIG)


def test_autoaugment_policies_and_no_augmentation_plan_too():
    for aa, rows in (("original", 2), ("none", 0)):
        cfg = make_cfg(augment_on="device", aa=aa, color_jitter=0.0, reprob=0.0)
        chain = build_train_transform(cfg, DEFAULT_DATA_CONFIG)
        with seeded_augmentation(5):
            pixels, plan, boxes, seed = chain(Image.open(io.BytesIO(jpeg_bytes())))
        assert plan.shape == (rows, PLAN_WIDTH) and boxes.shape == (0, 4)
        out, _ = device_stage(chain)((pixels[None], plan[None], boxes[None], seed[None]), torch.zeros(1), "cpu")
        assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32


@pytest.mark.parametrize("mode", ["const", "rand"])
def test_erasing_modes_fill_the_boxes_as_timms(mode):
    """const: zeros; rand: one normal colour per box and channel (pixel mode: the chain test above)."""
    chain = build_train_transform(make_cfg(augment_on="device", reprob=1.0, remode=mode), DEFAULT_DATA_CONFIG)
    parts = []
    for seed in range(4):
        with seeded_augmentation(seed):
            parts.append(chain(Image.open(io.BytesIO(jpeg_bytes()))))
    batch = [torch.stack(p) for p in zip(*parts)]
    out, _ = device_stage(chain)(batch, torch.zeros(4), "cpu")
    for image, (top, left, h, w) in zip(out, batch[2][:, 0].tolist()):
        assert h > 0
        box = image[:, top:top + h, left:left + w]
        colour = box[:, :1, :1]
        assert torch.equal(box, colour.expand_as(box))  # one value per channel
        assert bool((colour == 0).all()) == (mode == "const")
