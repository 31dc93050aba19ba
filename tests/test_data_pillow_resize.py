"""vitzoo.data.device.pillow_resize against Pillow's own ``Image.resize``: the same integers, every filter and pass order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitzoo.data.device import pillow_resize as pr
from vitzoo.data.device.pillow_resize import (
    BICUBIC,
    BILINEAR,
    BOX,
    NEAREST,
    coefficients,
    horizontal_first,
    resize,
)
from vitzoo.data.synthetic import photo_like

# (h, w): down- and upscales, one axis only, the output's own size, tall and wide strips (Pillow 13 runs
# the vertical pass first where the height shrinks by more than twice the pixels the width does)
SHAPES = [(320, 400), (90, 60), (200, 900), (224, 224), (224, 500), (700, 224), (411, 220), (37, 1001),
          (898, 29), (3, 5)]


def pillow_pair(shape: tuple[int, int], seed: int) -> tuple[Image.Image, torch.Tensor]:
    h, w = shape
    if seed % 2:  # noise: every tap and the clipping of bicubic's negative lobes count
        img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    else:
        img = photo_like(w, h, seed=seed).convert("RGB")
    return img, torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("code", [NEAREST, BOX, BILINEAR, BICUBIC], ids=["nearest", "box", "bilinear", "bicubic"])
def test_a_batch_of_mixed_sizes_gives_pillows_pixels(code):
    images, expected = [], []
    for seed, shape in enumerate(SHAPES):
        img, tensor = pillow_pair(shape, seed)
        images.append(tensor)
        expected.append(torch.from_numpy(np.array(img.resize((224, 200), code))).permute(2, 0, 1))
    assert {horizontal_first(shape, (200, 224)) for shape in SHAPES} == ({True, False} if pr.PILLOW_MAJOR >= 13 else {True})
    got = resize(images, (200, 224), [code] * len(images))
    for shape, out, pillow in zip(SHAPES, got, expected):
        assert torch.equal(out, pillow), (shape, (out.int() - pillow.int()).abs().max())


def test_each_image_takes_its_own_filter():
    img, tensor = pillow_pair((300, 260), 1)
    codes = [NEAREST, BOX, BILINEAR, BICUBIC]
    got = resize([tensor] * 4, (224, 224), codes)
    for out, code in zip(got, codes):
        assert np.array_equal(out.permute(1, 2, 0).numpy(), np.array(img.resize((224, 224), code)))


@pytest.mark.parametrize(("width", "plan"), [(400, (11, 2)), (4000, (8, 3)), (40000, (0, 1))])
def test_large_shrinks_split_the_coefficients_finer_and_stay_exact(width, plan):
    """A wider filter sums more products: the coefficients are split into more digits (float32 holds their
    sums), and past a ~50x bicubic shrink the product runs in float64."""
    assert pr._digit_plan(coefficients(width, 224, BICUBIC)[1][None]) == plan
    img, tensor = pillow_pair((4, width), 3)
    assert np.array_equal(resize([tensor], (4, 224), [BICUBIC])[0].permute(1, 2, 0).numpy(),
                          np.array(img.resize((224, 4), BICUBIC)))


def test_reduced_precision_float32_products_are_switched_off_around_it():
    img, tensor = pillow_pair((333, 517), 5)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # (bf16 products in oneDNN where the CPU has them)
    try:
        got = resize([tensor], (224, 224), [BICUBIC])[0]
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    assert np.array_equal(got.permute(1, 2, 0).numpy(), np.array(img.resize((224, 224), BICUBIC)))


def test_it_never_reads_the_device_back():
    """Every size and coefficient is decided on the host: on the meta device (no data; a read-back fails)
    a batch of both pass orders and all filters goes through."""
    images = [torch.empty(3, h, w, dtype=torch.uint8, device="meta") for h, w in SHAPES]
    out = resize(images, (224, 224), [NEAREST, BOX, BILINEAR, BICUBIC] * 2 + [BICUBIC] * (len(SHAPES) - 8))
    assert out.device.type == "meta" and out.shape == (len(SHAPES), 3, 224, 224) and out.dtype == torch.uint8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_same_integers(monkeypatch):
    """`pytest -m gpu`: with TF32 on (as the trainer sets it) the CUDA products still give Pillow's pixels."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    images, expected = [], []
    for seed, shape in enumerate(SHAPES):
        img, tensor = pillow_pair(shape, seed)
        images.append(tensor.cuda())
        expected.append(torch.from_numpy(np.array(img.resize((224, 224), BICUBIC))).permute(2, 0, 1))
    got = resize(images, (224, 224), [BICUBIC] * len(images)).cpu()
    assert torch.allclose(got.float(), torch.stack(expected).float(), atol=0)
    assert torch.backends.cuda.matmul.allow_tf32  # restored
