"""The device half of ``augment_on: device``: timm's auto-augment ops, normalisation and random erasing on a
batch, as :mod:`vitzoo.data.device.augment_plan` planned them per image.

Each op is Pillow's arithmetic (what timm's ops call) on (n, 3, H, W) uint8 tensors with one argument per
image, so a batch takes one call per op kind and layer rather than one per image, and every op gives
Pillow's integers (tests/test_data_augment_device.py compares each with timm's op):
- point ops as 256-entry tables per image and channel, as Pillow's ``ImageOps`` builds them: autocontrast,
  equalize, invert, posterize, solarize, solarize-add;
- ``ImageEnhance``'s blends in float32, truncated as Pillow's ``ImagingBlend`` does: colour (against
  Pillow's integer luma), contrast (against the rounded mean luma), brightness (against black), sharpness
  (against Pillow's SMOOTH filter, borders kept: its exact rounding, from integer sums in float32);
- rotate, shear and translate as Pillow's affine resampling (Geometry.c): the sample point of each output
  pixel centre, the fill where it falls outside the image, Pillow's bilinear / bicubic polynomials on
  edge-clamped taps in float64, truncated. (``grid_sample`` was 0.3-0.6 grey levels off on average: its
  bicubic has a = -0.75 and it blends the fill in at the border.)
On a GPU these are a few dozen kernels per batch; on a CPU they cost more than the workers save (the
trainer warns), so ``augment_on: device`` is for GPU runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Plan rows: [kind, p0 .. p6]; one row per auto-augment layer, NONE where the op was not applied.
NONE, AFFINE, AUTOCONTRAST, EQUALIZE, INVERT, POSTERIZE, SOLARIZE, SOLARIZE_ADD, COLOR, CONTRAST, \
    BRIGHTNESS, SHARPNESS = range(12)
PLAN_WIDTH = 8
# Pillow's resampling filter codes (Image.Resampling) an AFFINE row carries in p6
NEAREST, BILINEAR, BICUBIC = 0, 2, 3


def _levels(device: torch.device) -> torch.Tensor:
    return torch.arange(256, device=device, dtype=torch.float64)


def apply_tables(images: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) uint8 through per-image, per-channel tables (n, 3, 256) -> uint8."""
    n, c, h, w = images.shape
    flat = images.reshape(n, c, h * w).long()
    return tables.clamp(0, 255).to(torch.uint8).gather(2, flat).reshape(n, c, h, w)


def autocontrast_tables(images: torch.Tensor) -> torch.Tensor:
    """Pillow ``ImageOps.autocontrast`` (cutoff 0): each channel's [lo, hi] stretched to [0, 255],
    ``int(ix * scale - lo * scale)`` in double precision; a flat channel is left as it is."""
    lo = images.amin(dim=(2, 3)).double()[..., None]  # (n, 3, 1)
    hi = images.amax(dim=(2, 3)).double()[..., None]
    levels = _levels(images.device)
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1)  # (not 255.0 / t: a reciprocal times 255)
    stretched = (levels * scale + -lo * scale).clamp(0, 255).trunc()
    return torch.where(hi > lo, stretched, levels.expand_as(stretched))


def equalize_tables(images: torch.Tensor) -> torch.Tensor:
    """Pillow ``ImageOps.equalize``: per channel, step = (pixels - count of the top level) // 255, and
    level i -> (step // 2 + pixels below i) // step; identity where step is 0."""
    n, c = images.shape[:2]
    bins = (images.reshape(n, c, -1).long() + torch.arange(n * c, device=images.device).view(n, c, 1) * 256)
    # (scatter_add rather than bincount, which reads its input's maximum back to the host on a GPU)
    hist = torch.zeros(n * c * 256, dtype=torch.long, device=images.device)
    hist = hist.scatter_add_(0, bins.flatten(), torch.ones_like(bins).flatten()).view(n, c, 256)
    top = 255 - torch.flip(hist > 0, dims=[2]).long().argmax(dim=2)  # highest level present
    step = (hist.sum(dim=2) - hist.gather(2, top[..., None]).squeeze(2)) // 255  # (n, c)
    below = torch.cumsum(hist, dim=2) - hist  # pixels below each level
    safe = step.clamp(min=1)[..., None]
    tables = (safe // 2 + below) // safe
    return torch.where(step[..., None] > 0, tables, torch.arange(256, device=images.device)).double()


def point_tables(kind: int, arg: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Tables of the ops that depend on their argument only: (n,) -> (n, 1, 256)."""
    levels = _levels(device)[None, :]  # (1, 256)
    arg = arg[:, None]
    if kind == INVERT:
        table = 255 - levels.expand(arg.shape[0], 256)
    elif kind == POSTERIZE:  # keep the top `bits` bits; 0 bits: black (timm's op, vitzoo's _posterize)
        bits = arg.clamp(0, 8).trunc()
        table = torch.floor(levels / 2 ** (8 - bits)) * 2 ** (8 - bits)
    elif kind == SOLARIZE:  # invert the levels at or above the threshold
        table = torch.where(levels < arg, levels, 255 - levels)
    else:  # SOLARIZE_ADD: timm's solarize_add, threshold 128
        table = torch.where(levels < 128, (levels + arg).clamp(max=255), levels)
    return table[:, None, :]


def _luma(images: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L: (r 19595 + g 38470 + b 7471 + 2^15) >> 16, (n, 1, H, W) int32."""
    r, g, b = images.int().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16)[:, None]


def _smooth(images: torch.Tensor) -> torch.Tensor:
    """Pillow's ``ImageFilter.SMOOTH`` (3x3, centre 5, the rest 1, / 13, rounded), border pixels kept.

    Pillow sums in float32 with the kernel divided by 13, then adds 0.5 and truncates (Filter.c). That is
    the exact rounding of sum / 13: the sum of integers over 13 is never within 1/26 of a half, far beyond
    float32's error. So here the integer sum (at most 3315: exact in float32, and in TF32 products too),
    then floor((2 sum + 13) / 26)."""
    kernel = torch.ones(3, 1, 3, 3, device=images.device)
    kernel[:, :, 1, 1] = 5.0
    x = images.float()
    total = F.conv2d(x, kernel, groups=3)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = total.mul_(2).add_(13).div_(26).floor_()
    return out


def blend(images: torch.Tensor, kind: int, factor: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance`` ``kind`` with per-image ``factor``: degenerate + factor (image - degenerate) in
    float32, clipped and truncated (Pillow's ImagingBlend)."""
    x = images.float()
    if kind == COLOR:
        degenerate = _luma(images).float()
    elif kind == CONTRAST:
        mean = _luma(images).double().mean(dim=(1, 2, 3))
        degenerate = (mean + 0.5).floor().float().view(-1, 1, 1, 1)
    elif kind == BRIGHTNESS:
        degenerate = torch.zeros_like(x[:, :1])
    else:  # SHARPNESS
        degenerate = _smooth(images)
    alpha = factor.float().view(-1, 1, 1, 1)
    return (degenerate + alpha * (x - degenerate)).clamp_(0, 255).trunc_().to(torch.uint8)


def _cubic(v1, v2, v3, v4, d):
    """Pillow's BICUBIC macro (Geometry.c): the value at d in [0, 1) between v2 and v3."""
    return v2 + d * ((v3 - v1) + d * ((2 * (v1 - v2) + v3 - v4) + d * (-v1 + v2 - v3 + v4)))


def _taps(images: torch.Tensor, xin: torch.Tensor, yin: torch.Tensor, offsets: tuple[int, ...]):
    """Pillow's filter taps around pixel coordinates (xin, yin) (n, h, w): for each row offset, the
    (n, 3, h, w) float64 values at each column offset (both clamped to the image: XCLIP / YCLIP), and the
    fractions (dx, dy) (n, 1, h, w) past the tap at offset 0."""
    n, c, height, width = images.shape
    x0, y0 = torch.floor(xin - 0.5), torch.floor(yin - 0.5)
    flat = images.reshape(n, c, height * width).double()
    cols = [(x0 + k).clamp(0, width - 1).long() for k in offsets]
    rows = []
    for k in offsets:
        row = (y0 + k).clamp(0, height - 1).long() * width
        rows.append([flat.gather(2, (row + col).reshape(n, 1, -1).expand(-1, c, -1)).view(n, c, *xin.shape[1:])
                     for col in cols])
    return rows, (xin - 0.5 - x0)[:, None], (yin - 0.5 - y0)[:, None]


def _bilinear(images: torch.Tensor, xin: torch.Tensor, yin: torch.Tensor) -> torch.Tensor:
    """Pillow's bilinear sample (BILINEAR macro of Geometry.c) at pixel coordinates: (n, 3, h, w) float64."""
    rows, dx, dy = _taps(images, xin, yin, (0, 1))
    top, bottom = (v0 + (v1 - v0) * dx for v0, v1 in rows)
    return top + (bottom - top) * dy


def _bicubic(images: torch.Tensor, xin: torch.Tensor, yin: torch.Tensor) -> torch.Tensor:
    """Pillow's bicubic sample (BICUBIC macro) at pixel coordinates: (n, 3, h, w) float64."""
    rows, dx, dy = _taps(images, xin, yin, (-1, 0, 1, 2))
    return _cubic(*(_cubic(*taps, dx) for taps in rows), dy)


def affine(images: torch.Tensor, coeffs: torch.Tensor, resample: int, fill: torch.Tensor) -> torch.Tensor:
    """Pillow's ``Image.transform(AFFINE, (a, b, c, d, e, f))`` per image: output pixel centre (x, y) samples
    the input at (a x + b y + c, d x + e y + f); outside the image, ``fill`` (3,)."""
    n, _, h, w = images.shape
    a, b, c, d, e, f = (v.view(n, 1, 1) for v in coeffs.double().unbind(1))
    ys = torch.arange(h, device=images.device, dtype=torch.float64).view(1, h, 1) + 0.5
    xs = torch.arange(w, device=images.device, dtype=torch.float64).view(1, 1, w) + 0.5
    xin, yin = a * xs + b * ys + c, d * xs + e * ys + f  # (n, h, w) input pixel coordinates
    # Pillow: a sample point outside the image takes the fill; inside, the filter's taps beyond the edge
    # repeat the edge pixel (its XCLIP / YCLIP)
    inside = ((xin >= 0) & (xin < w) & (yin >= 0) & (yin < h))[:, None]
    if resample == BICUBIC:
        out = _bicubic(images, xin, yin)
    elif resample == BILINEAR:
        out = _bilinear(images, xin, yin)
    else:  # Pillow's NEAREST: the pixel the point falls in
        rows, _, _ = _taps(images, xin + 0.5, yin + 0.5, (0,))
        out = rows[0][0]
    out = torch.where(inside, out, fill.view(1, 3, 1, 1).to(out.dtype))
    # Pillow clips and truncates the filtered value (a cast)
    return out.clamp_(0, 255).trunc_().to(torch.uint8)


def _groups(rows: torch.Tensor):
    """One layer's plan rows (B, PLAN_WIDTH), on the host -> (kind, filter, indices of the images that drew
    it) for each op and filter present; the filter is -1 but for AFFINE."""
    kinds = rows[:, 0].long()
    filters = torch.where(kinds == AFFINE, rows[:, 7].long(), -1)
    for kind, resample in sorted(set(zip(kinds.tolist(), filters.tolist()))):
        if kind != NONE:
            yield kind, resample, ((kinds == kind) & (filters == resample)).nonzero().flatten()


def apply_plan(images: torch.Tensor, plan: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Run each image's planned ops, layer by layer: (B, 3, H, W) uint8 on the device, (B, rows,
    PLAN_WIDTH) on the host -> uint8. One call per op kind (and filter) present in a layer, on the images
    that drew it (each image draws at most one op a layer, so their order does not matter).

    Every choice is read from the plan on the host, and only index and argument tensors cross to the
    device: on a GPU the stage queues its kernels without once waiting for the device, so it overlaps the
    previous training step still running there (tests/test_data_augment_device.py runs it on the meta
    device, where any read-back fails)."""
    plan = plan.cpu()  # (a no-op for the trainer's plans: they stay on the host)
    device = images.device
    for layer in range(plan.shape[1]):
        rows = plan[:, layer]
        for kind, resample, chosen in _groups(rows):
            picked = chosen.to(device, non_blocking=True)
            args = rows[chosen].to(device, non_blocking=True)
            subset = images.index_select(0, picked)
            if kind == AFFINE:
                result = affine(subset, args[:, 1:7], resample, fill)
            elif kind in (COLOR, CONTRAST, BRIGHTNESS, SHARPNESS):
                result = blend(subset, kind, args[:, 1])
            elif kind == AUTOCONTRAST:
                result = apply_tables(subset, autocontrast_tables(subset))
            elif kind == EQUALIZE:
                result = apply_tables(subset, equalize_tables(subset))
            else:
                result = apply_tables(subset, point_tables(kind, args[:, 1], device).expand(-1, 3, -1))
            images.index_copy_(0, picked, result)
    return images


def erase(x: torch.Tensor, boxes: torch.Tensor, seeds: torch.Tensor, mode: str) -> torch.Tensor:
    """timm's RandomErasing at the planned boxes (B, count, 4: top, left, h, w; h = 0: none; on the host) on
    the normalised batch: per-pixel normal noise (``pixel``), a normal colour per box (``rand``) or zeros
    (``const``), from a generator seeded by the batch's first seed (so a resumed run erases with the same
    noise)."""
    boxes, seeds = boxes.cpu(), seeds.cpu()
    if boxes.numel() == 0 or not bool((boxes[..., 2] > 0).any()):
        return x
    n, c, h, w = x.shape
    gen = torch.Generator(device=x.device).manual_seed(int(seeds[0])) if mode != "const" else None
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    on_device = boxes.to(x.device, non_blocking=True)
    for j in range(boxes.shape[1]):  # later boxes over earlier ones, as timm writes them in turn
        top, left, bh, bw = (on_device[:, j, k].view(n, 1, 1) for k in range(4))
        inside = ((ys >= top) & (ys < top + bh) & (xs >= left) & (xs < left + bw))[:, None]  # (n, 1, h, w)
        if mode == "pixel":
            values = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        elif mode == "rand":
            values = torch.randn(n, c, 1, 1, generator=gen, device=x.device, dtype=x.dtype).expand_as(x)
        else:
            values = torch.zeros((), device=x.device, dtype=x.dtype)
        x = torch.where(inside, values, x)
    return x


class DeviceAugment:
    """The device stage: a worker batch (uint8 (B, H, W, 3), plans, boxes, seeds) -> the normalised,
    augmented, erased (B, 3, H, W) float32 batch on ``device``, as timm's CPU chain would give it."""

    def __init__(self, mean: tuple, std: tuple, fill: tuple, erase_mode: str = "pixel") -> None:
        self.mean, self.std, self.fill = tuple(mean), tuple(std), tuple(float(v) for v in fill)
        self.erase_mode = erase_mode
        self._constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(255 mean, 1 / (255 std), fill) on ``device``, made once per device."""
        if device not in self._constants:
            shift = torch.tensor([255.0 * m for m in self.mean], device=device).view(1, 3, 1, 1)
            scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], device=device).view(1, 3, 1, 1)
            self._constants[device] = shift, scale, torch.tensor(self.fill, device=device)
        return self._constants[device]

    def __call__(self, batch, labels: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """A worker batch (uint8 (B, H, W, 3) crops, plans, boxes, seeds) and its labels -> on ``device``."""
        device = torch.device(device)
        pixels, plan, boxes, seeds = batch  # (the plans stay on the host: apply_plan reads them there)
        images = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W) uint8
        return self.apply(images, plan, boxes, seeds), labels.to(device, non_blocking=True)

    def apply(self, images: torch.Tensor, plan: torch.Tensor, boxes: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 crops on the device, their plans, boxes and seeds on the host -> the augmented,
        normalised float32 batch."""
        shift, scale, fill = self.constants(images.device)
        if plan.shape[1]:
            images = apply_plan(images, plan, fill)
        x = images.float().sub_(shift).mul_(scale)  # as ToNormalizedTensor
        return erase(x, boxes, seeds, self.erase_mode)

    def __repr__(self) -> str:
        return f"DeviceAugment(fill={list(self.fill)}, erase_mode={self.erase_mode!r})"
