"""Pillow's resize of 8-bit images (``Image.resize``) on tensors, a batch at a time, to the same integers.

Why: ``decode_on: device`` crops and resizes on the GPU what a loader worker would crop and resize with
Pillow (timm's RandomResizedCrop). torch's antialiased resize follows Pillow's filters but not its
arithmetic (a few grey levels apart), and runs once per image since the crops differ in size. Here the
batch's crops are padded into one tensor and each pass is a few matrix products with Pillow's own
coefficients, so a batch costs a few dozen kernels and the pixels are Pillow's:

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
(:func:`_digit_plan` bounds every partial sum below 2^23), recombined by carrying floors up from the lowest
digit (:func:`_to_pixels`). TF32 is switched off
around the products (the trainer turns it on), as any rounding would move a pixel.

Each pass makes its output a tile of TILE pixels at a time from the window of input pixels the tile reads
(as wide as the batch's widest), gathered per image: about 2 * 3 * h * (TILE * scale + taps) * TILE
multiply-adds per tile and digit. On one AVX2 core a batch of 64 ~400 px JPEGs decodes, crops and resizes
at 69-112 img/s this way (4x the dense products over whole rows, half of torch's per-image resize, which
computes other pixels); on a GPU it is a few dozen kernels per batch (not measured yet).
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
TILE = 32  # output pixels per product


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


@functools.lru_cache(maxsize=2048)
def coefficients(in_size: int, out_size: int, code: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's fixed-point coefficients for resizing ``in_size`` pixels to ``out_size`` with filter
    ``code``: (the first input pixel of each output pixel (out,), int64 coefficients (out, taps)), on the
    host. Cached (a training crop's side takes a few hundred values; an entry is ~10-100 KB)."""
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
    (rows of int64 coefficients) below 2^23, half float32's exact range, so that a digit's sums plus the
    carry from the digit below stay exact; (0, 1) where none does (a float64 product then). For bicubic,
    two digits of 11 bits serve shrinks up to ~7x, three of 8 bits up to ~48x."""
    for bits, digits in ((11, 2), (8, 3)):
        parts = _split(weights, bits, digits)
        if all(255 * int(part.abs().sum(dim=-1).max()) < EXACT_BELOW // 2 for _, part in parts):
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


def _resample(x: torch.Tensor, sizes: list[int], out_size: int, codes: list[int], axis: int,
              resized: list[int], starts: list[int]) -> torch.Tensor:
    """One 8-bit pass along ``axis`` (2: the rows, vertical; 3: the columns, horizontal) of ``x``
    (B, C, H, W), float32 integers: image i, its first ``sizes[i]`` pixels along it resized to
    ``resized[i]``, of which the ``out_size`` from ``starts[i]`` are made -> float32 integers in 0..255.

    The output is made TILE pixels at a time from the window of input pixels those TILE read (as wide as
    the widest image's window), so a product spans about TILE * scale + taps inputs, not the whole line."""
    batch, channels, length = x.shape[0], x.shape[1], x.shape[axis]
    first, weights = [], []
    for n, full, code, offset in zip(sizes, resized, codes, starts):
        image_first, image_weights = coefficients(n, full, code)  # (a crop of the resize: its rows only)
        first.append(image_first[offset:offset + out_size])
        weights.append(image_weights[offset:offset + out_size])
    taps = max(w.shape[1] for w in weights)
    first = torch.stack(first)  # (B, out), on the host: every size below is decided there
    weights = torch.stack([torch.nn.functional.pad(w, (0, taps - w.shape[1])) for w in weights])  # (B, out, taps)
    bits, digits = _digit_plan(weights)
    device = x.device
    first_on_device, weights_on_device = first.to(device, non_blocking=True), weights.to(device, non_blocking=True)
    shape = list(x.shape)
    shape[axis] = out_size
    out = torch.empty(shape, dtype=torch.float32, device=device)
    for start in range(0, out_size, TILE):
        stop = min(start + TILE, out_size)
        span = min(int((first[:, stop - 1] - first[:, start]).max()) + taps, length)
        lo = first[:, start].clamp(max=length - span).to(device, non_blocking=True)  # windows [lo, lo + span)
        # the tile's coefficients on the window; padded taps (weight 0) may point past it: clamped
        position = (first_on_device[:, start:stop, None] + torch.arange(taps, device=device)
                    - lo[:, None, None]).clamp_(0, span - 1)
        tile_weights = torch.zeros(batch, stop - start, span, dtype=torch.long, device=device)
        tile_weights.scatter_add_(2, position, weights_on_device[:, start:stop])  # (B, T, span)
        offsets = lo[:, None] + torch.arange(span, device=device)  # (B, span)
        if axis == 3:
            window = x.gather(3, offsets[:, None, None, :].expand(batch, channels, x.shape[2], span))
        else:
            window = x.gather(2, offsets[:, None, :, None].expand(batch, channels, span, x.shape[3]))
        if bits == 0:  # (a crop shrunk ~50x or more: float64 holds these sums)
            pixels = _to_pixels([_product(window.double(), tile_weights.double(), axis)], 0)
        else:
            pixels = _to_pixels([_product(window, part.float(), axis)
                                 for _, part in _split(tile_weights, bits, digits)], bits)
        if axis == 3:
            out[..., start:stop] = pixels.view(batch, channels, -1, stop - start)
        else:
            out[:, :, start:stop] = pixels.view(batch, channels, stop - start, -1)
    return out


def _product(window: torch.Tensor, weights: torch.Tensor, axis: int) -> torch.Tensor:
    """The tile's sums: ``window`` (B, C, H, span) with axis 3, (B, C, span, W) with axis 2, times
    ``weights`` (B, T, span) -> (B, C*H, T) or (B*C, T, W)."""
    if axis == 3:
        return torch.bmm(window.reshape(window.shape[0], -1, window.shape[3]), weights.transpose(1, 2))
    batch, channels = window.shape[:2]
    per_channel = weights[:, None].expand(-1, channels, -1, -1).reshape(batch * channels, *weights.shape[1:])
    return torch.bmm(per_channel, window.reshape(batch * channels, *window.shape[2:]))


def _to_pixels(parts: list[torch.Tensor], bits: int) -> torch.Tensor:
    """Pillow's ``clip8((2^21 + sum) >> 22)`` of a sum given as its digits' products (lowest first, each an
    exact float32 integer): carried up from the lowest with floors (floor((floor(a) + n) / m) is
    floor((a + n) / m) for integers n, m), so no value leaves the range float32 holds exactly."""
    carry = None
    for part in parts[:-1]:
        carry = (part if carry is None else part.add_(carry)).div_(1 << bits).floor_()
    total = parts[-1] if carry is None else parts[-1].add_(carry)
    shift = PRECISION_BITS - bits * (len(parts) - 1)  # the bits of the 22 left below the top digit
    return total.add_(1 << (shift - 1)).div_(1 << shift).floor_().clamp_(0, 255).float()


def horizontal_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Pillow's order of the two passes for (h, w) -> (h, w): horizontal first, but since Pillow 13 vertical
    first where the height shrinks by more than twice the pixels the width does (ImagingResampleInner)."""
    shrink_h, shrink_w = in_size[0] - out_size[0], in_size[1] - out_size[1]
    return PILLOW_MAJOR < 13 or not (shrink_h > 0 and shrink_h > shrink_w * 2)


def resize(images: list[torch.Tensor], size: tuple[int, int], codes: list[int],
           resized: list[tuple[int, int]] | None = None, offsets: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """Pillow's ``Image.resize`` of each (3, h_i, w_i) uint8 image with filter ``codes[i]``, all on one
    device -> (B, 3, h, w) uint8, a few padded batches at a time. Each image is resized to ``size`` (h, w),
    or to ``resized[i]`` and cropped to the ``size`` window at ``offsets[i]`` (top, left): only the window's
    pixels are computed, and they are those of the resize then the crop."""
    device = images[0].device
    out = torch.empty(len(images), 3, *size, dtype=torch.uint8, device=device)
    shapes = [tuple(im.shape[1:]) for im in images]
    resized = resized or [tuple(size)] * len(images)
    offsets = offsets or [(0, 0)] * len(images)
    for across_first in (True, False):
        chosen = [i for i, shape in enumerate(shapes) if horizontal_first(shape, resized[i]) == across_first]
        chosen.sort(key=lambda i: shapes[i][0] * shapes[i][1])  # (similar sizes share a padded batch)
        for group in _groups(chosen, shapes):
            heights, widths = [shapes[i][0] for i in group], [shapes[i][1] for i in group]
            padded = images[0].new_zeros(len(group), 3, max(heights), max(widths), dtype=torch.float32)
            for row, i in enumerate(group):
                padded[row, :, :heights[row], :widths[row]] = images[i]
            filters = [codes[i] for i in group]
            vertical = {"sizes": heights, "out_size": size[0], "codes": filters, "axis": 2,
                        "resized": [resized[i][0] for i in group], "starts": [offsets[i][0] for i in group]}
            horizontal = {"sizes": widths, "out_size": size[1], "codes": filters, "axis": 3,
                          "resized": [resized[i][1] for i in group], "starts": [offsets[i][1] for i in group]}
            with _ieee_float32():
                first, second = (horizontal, vertical) if across_first else (vertical, horizontal)
                x = _resample(_resample(padded, **first), **second)
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
