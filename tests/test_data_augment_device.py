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
from vitzoo.data.datasets import seeded_augmentation
from vitzoo.data.device.augment_ops import DeviceAugment, apply_plan
from vitzoo.data.device.augment_plan import PLAN_WIDTH, _Recorder
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



def test_smooth_is_pillows_on_noise_too():
    """Sharpness blends against Pillow's SMOOTH: on noise (every rounding case) the same integers."""
    from PIL import ImageFilter

    from vitzoo.data.device.augment_ops import _smooth

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8))
    expected = np.array(noise.filter(ImageFilter.SMOOTH))
    got = _smooth(as_batch(noise))[0].permute(1, 2, 0).to(torch.uint8).numpy()
    assert np.array_equal(got, expected)

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



def test_the_stage_never_reads_the_device_back(photo):
    """Every op and filter in two layers, and erasing boxes, on images on the meta device, which has no data:
    a read-back from the device (``.item()``, a boolean mask, ``unique``, ``bincount``) fails there, and on
    a GPU it would wait for the training step still running on it."""
    rows: list = []
    for resample in (Image.BILINEAR, Image.BICUBIC, Image.NEAREST):
        for name, args in OPS:
            _Recorder(name, rows)(photo, *args, fillcolor=FILL, resample=resample)
    plan = torch.zeros(len(rows), 2, PLAN_WIDTH, dtype=torch.float64)
    for i, row in enumerate(rows):
        plan[i, 0, : len(row)] = plan[-1 - i, 1, : len(row)] = torch.tensor(row, dtype=torch.float64)
    boxes = torch.tensor([[[10, 20, 30, 40]], [[0, 0, 0, 0]]] * (len(rows) // 2), dtype=torch.float64)
    stage = DeviceAugment((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), FILL, erase_mode="const")
    images = torch.empty(len(rows), 3, 224, 224, dtype=torch.uint8, device="meta")
    out = stage.apply(images, plan, boxes, torch.arange(len(rows)))
    assert out.device.type == "meta" and out.shape == images.shape and out.dtype == torch.float32
    with pytest.raises(NotImplementedError):  # (what the old boolean masks did)
        images[torch.zeros(len(rows), dtype=torch.bool, device="meta")]


# ------------------------------------------------------------------------------------ decode_on: device
def decode_chain(**kw):
    return build_train_transform(make_cfg(augment_on="device", decode_on="device", **kw), DEFAULT_DATA_CONFIG)


def test_device_decode_draws_and_crops_what_the_worker_path_does(monkeypatch):
    """Same seeds: the plans equal those of augment_on: device with the workers decoding (so the crop and
    flip draws came first, in timm's order), and the crops -- decoded by libjpeg-turbo here (nvJPEG on a
    GPU), resized by Pillow's arithmetic in batched products -- are the workers' Pillow crops, bit for bit."""
    data = jpeg_bytes()
    plain = build_train_transform(make_cfg(augment_on="device"), DEFAULT_DATA_CONFIG)
    decoding = decode_chain()
    from vitzoo.data.datasets import open_image
    from vitzoo.data.device.decode import EncodedBatch

    crops, samples = [], []
    for seed in range(12):
        with seeded_augmentation(seed):
            crops.append(plain(open_image(io.BytesIO(data), lazy=True)))
        with seeded_augmentation(seed):
            samples.append(decoding(open_image(io.BytesIO(data), lazy=True)))
    assert all(s.data == data and s.pixels is None for s in samples)  # the bytes, undecoded
    batch = EncodedBatch.collate(samples)
    for (pixels, plan, boxes, seed), sample in zip(crops, samples):
        assert torch.equal(plan, sample.plan) and torch.equal(boxes, sample.boxes) and seed == sample.seed
    assert 0 < int(batch.crops[:, 4].sum()) < 12  # both sides of the flip drawn
    stage = device_stage(decoding)
    decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(data)))).permute(2, 0, 1)
    made = stage.resized_crops([decoded] * 12, batch.crops.tolist())
    assert torch.equal(made, torch.stack([c[0] for c in crops]).permute(0, 3, 1, 2))
    out, labels = stage(batch, torch.arange(12), "cpu")
    assert out.shape == (12, 3, 224, 224) and torch.equal(labels, torch.arange(12))
    from vitzoo.data.device import jpeg as gpu_jpeg

    monkeypatch.setattr(gpu_jpeg, "DECODE_BYTES", 1)  # one JPEG per decode call: the same batch
    assert torch.equal(stage(batch, torch.arange(12), "cpu")[0], out)


def test_device_decode_mixes_formats_and_replaces_an_unreadable_jpeg(tmp_path, caplog):
    good = jpeg_bytes()
    broken = bytearray(good)  # Pillow opens it (the header is whole), no decoder decodes it: its first
    at = broken.find(b"\xff\xc4")  # Huffman table is garbage
    broken[at + 5:at + 25] = b"\xff" * 20
    broken = bytes(broken)
    png = io.BytesIO()
    photo_like(300, 200, seed=4).convert("RGB").save(png, "PNG")
    from vitzoo.data.datasets import open_image
    from vitzoo.data.loader import relay_collate

    chain = decode_chain()
    items = []
    for i, data in enumerate([good, broken, png.getvalue(), good]):
        with seeded_augmentation(i):
            items.append((chain(open_image(io.BytesIO(data), lazy=True)), 10 + i))
    batch, labels, _ = relay_collate(items)
    assert batch.sizes[2] == 0 and batch.made.shape == (1, 224, 224, 3)  # the PNG was cropped in the worker
    with caplog.at_level("WARNING", logger="vitzoo"):
        out, labels = device_stage(chain)(batch, labels, "cpu")
    assert out.shape == (4, 3, 224, 224)
    assert labels.tolist() == [10, 12, 12, 13]  # the broken JPEG's place: the next image, with its label
    assert "replaced in its batch by the next image" in caplog.text


def test_device_decode_through_loader_workers(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    for i in range(6):
        photo_like(80, 64, seed=i).convert("RGB").save(tmp_path / "train" / "a" / f"{i}.jpg", quality=90)
    photo_like(80, 64, seed=9).convert("RGB").save(tmp_path / "train" / "a" / "9.png")
    from vitzoo.data import build_dataset

    cfg = make_cfg(data_path=str(tmp_path), augment_on="device", decode_on="device", num_workers=2, batch_size=7,
                   input_size=32, persistent_workers=False)
    ds = build_dataset(cfg, "train", data_config={**DEFAULT_DATA_CONFIG, "input_size": (3, 32, 32)})
    (x, y), = list(build_loader(cfg, ds, "train"))
    assert sorted(x.sizes).count(0) == 1 and x.made.shape == (1, 32, 32, 3)
    out, y = device_stage(ds.transform)(x, y, "cpu")
    assert out.shape == (7, 3, 32, 32) and out.dtype == torch.float32


def test_decode_on_device_needs_augment_on_device():
    from vitzoo.errors import ConfigError

    with pytest.raises(ConfigError, match="needs 'augment_on: device'"):
        make_cfg(decode_on="device")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_same_pixels_as_on_the_cpu(monkeypatch):
    """`pytest -m gpu`: the plans of 64 drawn images applied on CUDA equal the CPU's (TF32 is where they could
    differ), and decode_on: device's crops (nvJPEG against libjpeg-turbo) agree within a few grey levels."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)  # as the trainer sets them
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    data = jpeg_bytes()
    chain = build_train_transform(make_cfg(augment_on="device"), DEFAULT_DATA_CONFIG)
    parts = []
    for seed in range(64):
        with seeded_augmentation(seed):
            parts.append(chain(Image.open(io.BytesIO(data))))
    batch = [torch.stack(p) for p in zip(*parts)]
    stage = device_stage(chain)
    on_cpu, _ = stage(batch, torch.zeros(64), "cpu")
    on_gpu, _ = stage(batch, torch.zeros(64), "cuda")
    erased = torch.zeros_like(on_cpu, dtype=torch.bool)
    for i, (top, left, h, w) in enumerate(batch[2][:, 0].tolist()):
        erased[i, :, top:top + h, left:left + w] = True
    assert (on_gpu.cpu() - on_cpu).abs().masked_fill(erased, 0).max() < 1e-5
    from vitzoo.data.datasets import open_image
    from vitzoo.data.device.decode import EncodedBatch

    decoding = decode_chain(aa="none", color_jitter=0.0, reprob=0.0)
    samples = []
    for seed in range(16):
        with seeded_augmentation(seed):
            samples.append(decoding(open_image(io.BytesIO(data), lazy=True)))
    encoded = EncodedBatch.collate(samples)
    cpu_crops, _ = device_stage(decoding)(encoded, torch.zeros(16), "cpu")
    gpu_crops, _ = device_stage(decoding)(encoded, torch.zeros(16), "cuda")
    std = torch.tensor(DEFAULT_DATA_CONFIG["std"]).view(1, 3, 1, 1) * 255
    levels = ((gpu_crops.cpu() - cpu_crops) * std).abs()
    assert levels.mean() < 0.5 and levels.max() <= 4.01
