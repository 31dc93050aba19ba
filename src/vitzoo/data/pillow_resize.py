"""Pillow's resize of 8-bit images (``Image.resize``) on tensors, a batch at a time, to the same integers.

Why: ``decode_on: device`` crops and resizes on the GPU what a loader worker would crop and resize with
Pillow (timm's RandomResizedCrop). torch's antialiased resize follows Pillow's filters but not its
arithmetic (a few grey levels apart), and runs once per image since the crops differ in size. Here the
batch's crops are padded into one tensor and each pass is one matrix product with Pillow's own
coefficients, so a batch costs a handful of kernels and the pixels are Pillow's:

- ``precompute_coeffs`` (Resample.c): for each output pixel, the filter (box, bilinear, bicubic with
  a = -0.5) at the input pixels within its support, widened by the downscale factor, normalised to sum 1 in
  double precision, then to fixed point with 22 fractional bits (``normalize_coeffs_8bpc``).
- two passes, each ``(2^21 + sum pixel * coefficient) >> 22`` clipped to 0..255
  (``ImagingResampleHorizontal_8bpc`` / ``Vertical``): the first pass's result is rounded to 8 bits
  before the second reads it, so their order matters: horizontal first, but since Pillow 13 vertical
  first where the height shrinks by more than twice as many pixels as the width.
- NEAREST is not a filter in Pillow but an affine transform (``ImagingScaleAffine`` in Geometry.c): the
  input pixel ``int(xo)`` with ``xo`` accumulated by in / out from half a step; here a coefficient of 1.

The products of 8-bit pixels and 22-bit coefficients, and their sums, are integers: exact in float32 only
below 2^24, so the coefficients are split into digits of a few bits, one float32 product per digit
(:func:`_digit_plan` bounds every partial sum below 2^24), recombined in int64. TF32 is switched off
around the products (the trainer turns it on), as any rounding would move a pixel.

The products are dense (every output pixel against the whole padded row): about 4 * 3 * h * w * 224
multiply-adds per (h, w) crop and pass pair, 0.7 GFLOP for a 500x375 crop, so ~90 GFLOP for a batch of 128
such crops -- a few milliseconds of an H100's float32 units by that count (not measured yet), ~30 img/s on
one AVX2 core (measured), which is why the device stage is for GPUs.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import PIL
import torch

PILLOW_MAJOR = int(PIL.__version__.split(".")[0])
PRECISION_BITS = 22  # Resample.c: 32 bits - 8 for the result - 2 for negative lobes and overflow
NEAREST, BILINEAR, BICUBIC, BOX = 0, 2, 3, 4  # Pillow's Image.Resampling codes
FILTER_NAMES = {"nearest": NEAREST, "bilinear": BILINEAR, "bicubic": BICUBIC, "box": BOX}
# padded input pixels per matrix product: 3 channels of float32 -> 192 MB
RESIZE_PIXELS = 1 << 24
EXACT_BELOW = 1 << 24  # float32 holds every integer below this


def _box(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x <= 0.5)).double()


def _bilinear(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    return torch.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """Resample.c's bicubic_filter (a = -0.5), its operations in its order."""
    a, x = -0.5, x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, 0.0))


_FILTERS = {BOX: (_box, 0.5), BILINEAR: (_bilinear, 1.0), BICUBIC: (_bicubic, 2.0)}


@functools.lru_cache(maxsize=8192)
def coefficients(in_size: int, out_size: int, code: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's fixed-point coefficients for resizing ``in_size`` pixels to ``out_size`` with filter
    ``code``: (the first input pixel of each output pixel (out,), int64 coefficients (out, taps)), on the
    host. Cached: a crop's width or height takes a few hundred values."""
    if code == NEAREST:
        step, xo, first = in_size / out_size, in_size / out_size * 0.5, []
        for _ in range(out_size):  # (accumulated, as Geometry.c does: not (i + 0.5) * step)
            first.append(int(xo))
            xo += step
        return torch.tensor(first, dtype=torch.long), torch.full((out_size, 1), 1 << PRECISION_BITS)
    filter_fn, support = _FILTERS[code]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    xmin = torch.trunc(center - support + 0.5).clamp(min=0)
    xmax = torch.trunc(center + support + 0.5).clamp(max=in_size) - xmin  # taps in use
    taps = torch.arange(ksize, dtype=torch.float64)
    in_use = taps < xmax[:, None]
    weights = torch.where(in_use, filter_fn((taps + xmin[:, None] - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = torch.zeros(out_size, dtype=torch.float64)
    for x in range(ksize):  # summed in order, as Resample.c (a pairwise sum can differ in the last bit)
        total = total + weights[:, x]
    weights = torch.where(total[:, None] != 0, weights / total[:, None], weights)
    scaled = weights * (1 << PRECISION_BITS)
    fixed = torch.where(weights < 0, (scaled - 0.5).trunc(), (scaled + 0.5).trunc())  # (int) truncates
    return xmin.long(), fixed.long()


def _digit_plan(weights: torch.Tensor) -> tuple[int, int]:
    """(bits per digit, digits) that keep every partial sum of 8-bit pixels times one digit of ``weights``
    (rows of int64 coefficients) below 2^24; (0, 1) where none does (a float64 product then)."""
    for bits, digits in ((PRECISION_BITS + 2, 1), (11, 2), (8, 3)):
        parts = _split(weights, bits, digits)
        if all(255 * int(part.abs().sum(dim=-1).max()) < EXACT_BELOW for _, part in parts):
            return bits, digits
    return 0, 1


def _split(weights: torch.Tensor, bits: int, digits: int) -> list[tuple[int, torch.Tensor]]:
    """``weights`` = sum of digit << shift: the lower digits in [0, 2^bits), the top one signed."""
    parts, rest = [], weights
    for j in range(digits - 1):
        parts.append((j * bits, rest & ((1 << bits) - 1)))
        rest = rest >> bits
    parts.append(((digits - 1) * bits, rest))
    return parts


@contextmanager
def _ieee_float32():
    """No TF32 (CUDA) or reduced-precision (oneDNN) float32 products for the duration."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)


def _resample(x: torch.Tensor, sizes: list[int], out_size: int, codes: list[int]) -> torch.Tensor:
    """One 8-bit pass along the last dim of ``x`` (B, C, R, L), float32 integers, image i using its first
    ``sizes[i]`` columns -> (B, C, R, out_size) float32 integers in 0..255."""
    batch, length = x.shape[0], x.shape[-1]
    first, weights = zip(*(coefficients(n, out_size, code) for n, code in zip(sizes, codes)))
    taps = max(w.shape[1] for w in weights)
    weights = torch.stack([torch.nn.functional.pad(w, (0, taps - w.shape[1])) for w in weights])  # (B, out, taps)
    index = (torch.stack(first)[..., None] + torch.arange(taps)).clamp(max=length - 1)  # (padding: weight 0)
    bits, digits = _digit_plan(weights)
    device = x.device
    index, weights = index.to(device, non_blocking=True), weights.to(device, non_blocking=True)
    dense = torch.zeros(batch, out_size, length, dtype=torch.long, device=device).scatter_add_(2, index, weights)
    rows = x.reshape(batch, -1, length)  # (B, C*R, L): one product per image
    if bits == 0:  # (a crop shrunk ~150x or more: float64 holds these sums)
        total = torch.bmm(rows.double(), dense.double().transpose(1, 2))
    else:  # each digit's sums are exact in float32, their weighted total in float64
        total = sum(torch.bmm(rows, part.float().transpose(1, 2)).double() * (1 << shift)
                    for shift, part in _split(dense, bits, digits))
    total = ((total + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).floor_().clamp_(0, 255)
    return total.float().reshape(*x.shape[:-1], out_size)


def horizontal_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Pillow's order of the two passes for (h, w) -> (h, w): horizontal first, but since Pillow 13 vertical
    first where the height shrinks by more than twice the pixels the width does (ImagingResampleInner)."""
    shrink_h, shrink_w = in_size[0] - out_size[0], in_size[1] - out_size[1]
    return PILLOW_MAJOR < 13 or not (shrink_h > 0 and shrink_h > shrink_w * 2)


def resize(images: list[torch.Tensor], size: tuple[int, int], codes: list[int]) -> torch.Tensor:
    """Pillow's ``Image.resize`` of each (3, h_i, w_i) uint8 image to ``size`` (h, w) with filter
    ``codes[i]``, all on one device -> (B, 3, h, w) uint8, a few padded batches at a time."""
    device = images[0].device
    out = torch.empty(len(images), 3, *size, dtype=torch.uint8, device=device)
    shapes = [tuple(im.shape[1:]) for im in images]
    for across_first in (True, False):
        chosen = [i for i, shape in enumerate(shapes) if horizontal_first(shape, size) == across_first]
        chosen.sort(key=lambda i: shapes[i][0] * shapes[i][1])  # (similar sizes share a padded batch)
        for group in _groups(chosen, shapes):
            heights, widths = [shapes[i][0] for i in group], [shapes[i][1] for i in group]
            padded = images[0].new_zeros(len(group), 3, max(heights), max(widths), dtype=torch.float32)
            for row, i in enumerate(group):
                padded[row, :, :heights[row], :widths[row]] = images[i]
            filters = [codes[i] for i in group]
            with _ieee_float32():
                if across_first:
                    x = _resample(padded, widths, size[1], filters)
                    x = _resample(x.transpose(2, 3), heights, size[0], filters).transpose(2, 3)
                else:
                    x = _resample(padded.transpose(2, 3), heights, size[0], filters).transpose(2, 3)
                    x = _resample(x, widths, size[1], filters)
            out.index_copy_(0, torch.tensor(group).to(device, non_blocking=True), x.to(torch.uint8))
    return out


def _groups(chosen: list[int], shapes: list[tuple[int, int]]) -> list[list[int]]:
    """``chosen`` images in runs whose padded batch stays within RESIZE_PIXELS (one image at least)."""
    groups, group, high, wide = [], [], 0, 0
    for i in chosen:
        h, w = shapes[i]
        if group and (len(group) + 1) * max(high, h) * max(wide, w) > RESIZE_PIXELS:
            groups.append(group)
            group, high, wide = [], 0, 0
        group.append(i)
        high, wide = max(high, h), max(wide, w)
    return groups + [group] if group else groups
