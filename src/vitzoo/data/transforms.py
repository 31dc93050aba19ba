"""The DeiT / T2T-ViT / BEiT preprocessing recipe, built from timm's data module (not rewritten).

Train (DeiT ``datasets.build_transform``, arXiv:2012.12877 Table 9): RandomResizedCrop(scale=(min_crop, 1),
interpolation) -> horizontal flip -> RandAugment / AutoAugment / AugMix (``aa``; timm turns colour jitter
off when one is on, as the official recipes do) or ColorJitter -> to tensor -> normalise -> RandomErasing
(``reprob``, ``remode``, ``recount``). Mixup / CutMix act on whole batches: :func:`build_mixup`.
Eval: resize the short side to ``size / crop_pct``, centre crop ``size``, normalise. A 32x32 CIFAR image
is upsampled by these resizes to whatever input size the model takes.

Large JPEGs (phone photos) are decoded at libjpeg's reduced scales where the crop or the resize shrinks
them 4x or more (:class:`DraftResizedCrop` for training, :class:`DraftResize` for ``vitzoo infer``);
everything smaller takes timm's path to the pixel. ``eval`` keeps timm's path for every image.

``augment_on: device`` ends the workers' chain after the flips with an :class:`AugmentPlanner` (the rest of
the recipe drawn, applied by the device: :func:`device_stage`); ``decode_on: device`` makes the chain a
:class:`~vitzoo.data.device.decode.CropPlanner`, which only draws the crop and flips of a JPEG as well.

Means and stds: the model's ``data_config`` by default; ``imagenet_default_mean_and_std: true`` forces
ImageNet's, ``false`` forces 0.5/0.5 (BEiT's fine-tuning recipe, seed 002).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data import auto_augment as taa
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms
from torchvision.transforms import functional as TF

from vitzoo.config import RunConfig
from vitzoo.constants import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD
from vitzoo.data.datasets import decode_image, is_undecoded_jpeg
from vitzoo.data.device.augment_plan import AugmentPlanner
from vitzoo.data.device.decode import CropPlanner, DeviceDecode
from vitzoo.errors import UserError

DEFAULT_DATA_CONFIG = {
    "input_size": (3, 224, 224),
    "crop_pct": 0.875,
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "interpolation": "bicubic",
}
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming", "random")
# After a reduced-scale JPEG decode the crop is still >= this many times the output (Pillow's thumbnail
# default for its two-step resize). Measured on photo-like JPEGs, 40 crops each, against timm's full decode:
# 4000x3000 px 2.4x faster, 1600x1200 1.37x, pixels within 0.44 grey levels on average (0.35 / 0.44 max);
# a gap of 3 (Pillow: "indistinguishable from fair resampling in most cases") gave 1.97x / 1.0x.
REDUCING_GAP = 2.0


def _interp(name: Any, key: str) -> str:
    name = str(name or "bicubic").lower()
    if name not in INTERPOLATIONS:
        raise UserError(f"{key} must be one of {', '.join(INTERPOLATIONS)}, got {name!r}")
    return name


def _size3(size: Any) -> tuple[int, int, int]:
    if isinstance(size, (list, tuple)):
        size = tuple(int(s) for s in size)
        if len(size) == 3:
            return size  # type: ignore[return-value]
        if len(size) == 2:
            return (3, size[0], size[1])
        size = size[0]
    return (3, int(size), int(size))


PREPROCESSING_KEYS = ("input_size", "crop_pct", "interpolation", "imagenet_default_mean_and_std")


def resolve_data_config(cfg: RunConfig | None, model: Any = None,
                        keys: Collection[str] = PREPROCESSING_KEYS) -> dict:
    """The model's ``data_config`` (or a dict passed as ``model``) with the config's overrides applied.

    Overrides: those of :data:`PREPROCESSING_KEYS` in ``keys`` (all by default; ``vitzoo eval`` passes
    only the ones the user set, so a checkpoint's own preprocessing is kept otherwise).
    The result is JSON-friendly and goes into checkpoint ``meta["data_config"]``.
    """
    base = model if isinstance(model, dict) else getattr(model, "data_config", None)
    dc = {**DEFAULT_DATA_CONFIG, **(base or {})}
    if cfg is not None:
        if "input_size" in keys and cfg.input_size is not None:
            dc["input_size"] = _size3(cfg.input_size)
        if "crop_pct" in keys and cfg.crop_pct is not None:
            dc["crop_pct"] = cfg.crop_pct
        if "interpolation" in keys and cfg.interpolation != "random":
            # (random is a training draw between bilinear and bicubic, timm's train-interpolation; the
            # evaluation resize and the checkpoint's preprocessing keep the model's filter)
            dc["interpolation"] = cfg.interpolation
        if "imagenet_default_mean_and_std" in keys and cfg.imagenet_default_mean_and_std is not None:
            use_imagenet = cfg.imagenet_default_mean_and_std
            dc["mean"], dc["std"] = (IMAGENET_MEAN, IMAGENET_STD) if use_imagenet else (HALF_MEAN, HALF_STD)
    return {
        "input_size": _size3(dc["input_size"]),
        "crop_pct": float(dc["crop_pct"]),
        "mean": tuple(float(m) for m in dc["mean"]),
        "std": tuple(float(s) for s in dc["std"]),
        "interpolation": _interp(dc["interpolation"], "interpolation"),
    }


class ToRGB:
    """Convert any PIL image (L, P, RGBA, CMYK, I;16 ...) to RGB, so eval accepts whatever it is given."""

    def __call__(self, img):
        return img if getattr(img, "mode", "RGB") == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def _posterize(img, bits_to_keep, **_):
    """timm's posterize op, valid for Pillow >= 13 too.

    RandAugment's ``PosterizeIncreasing`` reaches 0 bits at magnitude 10 (``mstd0.5`` samples that), and
    Pillow 13 rejects ``ImageOps.posterize(img, 0)`` ("bits must be between or equal to 1 and 8") where
    older Pillow returned a black image; keep the old result so long runs do not crash in a worker.
    """
    bits = int(bits_to_keep)
    if bits >= 8:
        return img
    if bits <= 0:
        return Image.new(img.mode, img.size)  # every bit masked off: black, as Pillow < 13 gave
    return ImageOps.posterize(img, bits)


def patch_posterize(transform: Any) -> Any:
    """Swap timm's posterize for :func:`_posterize` in every AutoAugment / RandAugment / AugMix op."""
    for t in getattr(transform, "transforms", [transform]):
        ops = list(getattr(t, "ops", None) or [])
        ops += [op for sub in (getattr(t, "policy", None) or []) for op in sub]
        for op in ops:
            if getattr(op, "aug_fn", None) is taa.posterize:
                op.aug_fn = _posterize
    return transform


def decode_shrunk(img: Any, shrink: float):
    """An image a resize will shrink ``shrink`` times, decoded to RGB: a JPEG still undecoded (opened by a
    dataset for a :class:`LazyTransform`) at the smallest of libjpeg's 1/2, 1/4, 1/8 scales that keeps it
    >= ``REDUCING_GAP`` times the output, in full when no scale does; any other image as it is."""
    if not is_undecoded_jpeg(img):
        return ToRGB()(img)
    reduction = shrink / REDUCING_GAP
    if reduction < 2:
        return decode_image(img)
    width, height = img.size
    return decode_image(img, (math.ceil(width / reduction), math.ceil(height / reduction)))


def resized_crop(img: Any, full_size: tuple[int, int], box: tuple[int, int, int, int],
                 size: tuple[int, int], interpolation: Any):
    """torchvision's ``resized_crop`` of ``box`` = (top, left, height, width), drawn on an image of
    ``full_size`` (w, h), from ``img`` as :func:`decode_shrunk` left it: the same call when it was decoded
    in full; else the box scaled to the reduced image and resized from there in one step (Pillow's resize
    of a float box)."""
    top, left, height, width = box
    if img.size == tuple(full_size):
        return TF.resized_crop(img, top, left, height, width, list(size), interpolation)
    s = decoded_scale(img, full_size)
    scaled = (left * s, top * s, (left + width) * s, (top + height) * s)
    return img.resize((size[1], size[0]), TF.pil_modes_mapping[interpolation], box=scaled)


def decoded_scale(img: Any, full_size: tuple[int, int]) -> float:
    """The exact scale (1/2, 1/4, 1/8) libjpeg decoded ``img`` at. Not ``img.width / full_width``: libjpeg
    rounds the scaled size up (1603 px at 1/2 -> 802), and that ratio would shift the far edge by half a
    pixel, which on a 1603x1200 photo moved the infer crop by a pixel (4.3 grey levels on average)."""
    return 2.0 ** -round(math.log2(full_size[0] / img.width))


class DraftResizedCrop(RandomResizedCropAndInterpolation):
    """timm's RandomResizedCrop (the same random draws, the same pixels for a decoded image), which decodes
    a JPEG that the crop shrinks a lot at a reduced scale first.

    Why: a photo of 4000x3000 px costs ~30x the decode and resize work of an ImageNet image while the
    224 px output keeps a few percent of its pixels. libjpeg decodes at 1/2, 1/4 or 1/8 scale for a fraction
    of the work (Pillow's ``Image.draft``). The crop box is drawn on the header's size; the JPEG is
    decoded at the smallest scale that keeps the box >= ``REDUCING_GAP`` times the output
    (:func:`decode_shrunk`), and the box, rescaled, is resized to the output. That is Pillow's two-step
    resize (``reduce`` then resample, as in its ``thumbnail``); a crop shrunk less than ``2 * REDUCING_GAP``
    times decodes in full and takes timm's path unchanged, so ImageNet-sized images never take the other.
    """

    def __call__(self, img):
        box = self.get_params(img, self.scale, self.ratio)  # (top, left, height, width) on the header's size
        interpolation = (random.choice(self.interpolation) if isinstance(self.interpolation, (tuple, list))
                         else self.interpolation)
        full_size = img.size
        img = decode_shrunk(img, min(box[2] / self.size[0], box[3] / self.size[1]))
        return resized_crop(img, full_size, box, self.size, interpolation)


class DraftResize(transforms.Resize):
    """torchvision's Resize (the eval chain's, of the short side, or to (h, w)), which decodes a JPEG that it
    shrinks a lot at a reduced scale first (:func:`decode_shrunk`), for ``vitzoo infer`` of photos."""

    def forward(self, img):
        full_w, full_h = img.size
        if self.max_size is not None:  # (not in the eval chain) torchvision's own path, decoded in full
            return super().forward(decode_shrunk(img, 1.0))
        out_w, out_h = self.output_size(full_w, full_h)
        img = decode_shrunk(img, min(full_w / out_w, full_h / out_h))
        if img.size == (full_w, full_h):
            return super().forward(img)
        s = decoded_scale(img, (full_w, full_h))  # the output size and extent are the full image's
        return img.resize((out_w, out_h), TF.pil_modes_mapping[self.interpolation], box=(0, 0, full_w * s, full_h * s))

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) torchvision's resize gives an image of this size: the short side to ``size`` (the long
        one truncated), or (h, w) ``size`` as it is."""
        if isinstance(self.size, int) or len(self.size) == 1:
            short = self.size if isinstance(self.size, int) else self.size[0]
            return (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
        return self.size[1], self.size[0]


class ToNormalizedTensor:
    """timm's ``MaybeToTensor`` then ``Normalize`` in one pass: RGB PIL (H, W, 3) uint8 -> (3, H, W) float32
    ``(x - 255 mean) / (255 std)``. The three passes of the pair (to float, / 255, normalise) took 0.38 ms
    for a 224 px image on the AVX2 EPYC, this 0.16 ms (a training worker's recipe: about 4 ms); the values
    differ from the pair's in the last bit (<= 5e-7). Training only: eval keeps timm's pair to the bit."""

    def __init__(self, to_tensor: Callable, normalize: transforms.Normalize):
        self.pair = transforms.Compose([to_tensor, normalize])  # for anything but an RGB PIL image
        self.shift = torch.tensor([255.0 * m for m in normalize.mean]).view(3, 1, 1)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in normalize.std]).view(3, 1, 1)

    def __call__(self, img):
        if not isinstance(img, Image.Image) or img.mode != "RGB":
            return self.pair(img)
        pixels = torch.from_numpy(np.array(img, np.uint8)).permute(2, 0, 1)  # (3, H, W) view of a copy
        out = torch.empty(pixels.shape, dtype=torch.float32)
        return out.copy_(pixels).sub_(self.shift).mul_(self.scale)

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(mean={(self.shift.flatten() / 255).tolist()})"


def fuse_to_tensor_normalize(steps: list) -> list:
    """timm's final steps with its (MaybeToTensor, Normalize) pair as one :class:`ToNormalizedTensor`."""
    if len(steps) >= 2 and type(steps[0]).__name__ == "MaybeToTensor" and isinstance(steps[1], transforms.Normalize):
        return [ToNormalizedTensor(steps[0], steps[1]), *steps[2:]]
    return list(steps)


class LazyTransform(transforms.Compose):
    """A chain whose first step decodes JPEGs itself (:class:`DraftResizedCrop`, :class:`DraftResize`):
    ``opens_lazily`` tells a dataset of files to hand it JPEGs opened but undecoded."""

    opens_lazily = True


def build_train_transform(cfg: RunConfig, data_config: dict) -> Callable:
    """The training augmentation chain (timm ``create_transform(is_training=True)``) for ``data_config``."""
    interp = "random" if cfg.interpolation == "random" else _interp(data_config["interpolation"], "interpolation")
    aa = None if cfg.aa == "none" else cfg.aa
    kwargs = {
        "input_size": data_config["input_size"],
        "is_training": True,
        "scale": (cfg.min_crop, 1.0),
        "hflip": cfg.hflip,
        "color_jitter": cfg.color_jitter or None,
        "auto_augment": aa,
        "mean": data_config["mean"],
        "std": data_config["std"],
        "re_prob": cfg.reprob,
        "re_mode": cfg.remode,
        "re_count": cfg.recount,
        # timm splits random erasing across augmentation splits (train.py: num_aug_splits); vitzoo trains
        # without aug splits (no AugMix-JSD), so there are none to split over.
        "re_num_splits": 0,
        "separate": True,
    }
    try:
        primary, secondary, final = create_transform(interpolation=interp, **kwargs)
        aa_interp = cfg.aa_interpolation or interp
        if aa and aa_interp != interp:  # seed 001 rotates/shears in RandAugment with a different filter
            _, secondary, _ = create_transform(interpolation=aa_interp, **kwargs)
    except (AssertionError, KeyError, ValueError, IndexError) as e:
        raise UserError(f"cannot build the training transform (aa={aa!r}): {e or type(e).__name__}") from None
    crop, *flips = primary.transforms  # timm's RandomResizedCropAndInterpolation, then the flips
    if cfg.augment_on == "device":  # the workers crop and flip, and draw the rest for the device
        secondary, final = [_device_plan(secondary.transforms, final.transforms, data_config)], []
    else:
        secondary, final = secondary.transforms, fuse_to_tensor_normalize(final.transforms)
    if not isinstance(crop, RandomResizedCropAndInterpolation):  # (another timm crop mode: decoded images)
        if cfg.decode_on == "device":
            raise UserError(f"decode_on: device draws timm's random resized crop, not {type(crop).__name__}; "
                            "use decode_on: cpu")
        return patch_posterize(transforms.Compose([ToRGB(), *primary.transforms, *secondary, *final]))
    draft_crop = DraftResizedCrop(crop.size, scale=crop.scale, ratio=crop.ratio)
    draft_crop.interpolation = crop.interpolation  # (timm's own parsed form: a mode, or the random pair)
    if cfg.decode_on == "device":  # the workers only draw the crop and flips too (JPEGs; others as above)
        return CropPlanner(crop, flips, secondary[0], transforms.Compose([draft_crop, *flips, secondary[0]]))
    return patch_posterize(LazyTransform([draft_crop, *flips, *secondary, *final]))


def _device_plan(secondary: list, final: list, data_config: dict) -> AugmentPlanner:
    """``augment_on: device``: timm's auto-augment step and random erasing, drawn in the worker by an
    :class:`AugmentPlanner` and applied on the device (:func:`device_stage`)."""
    if len(secondary) > 1:
        raise UserError("augment_on: device applies one auto-augment policy; use augment_on: cpu")
    augment = secondary[0] if secondary else None
    if augment is not None and type(augment).__name__ == "ColorJitter":
        raise UserError("augment_on: device has no device colour jitter (aa: none turns it on); set "
                        "color_jitter: 0, choose an aa policy, or use augment_on: cpu")
    erasing = next((t for t in final if type(t).__name__ == "RandomErasing"), None)
    return AugmentPlanner(augment, erasing, data_config["mean"], data_config["std"])


def device_stage(transform: Any) -> Callable | None:
    """The device half of a training chain built with ``augment_on: device`` (its last step's
    :meth:`AugmentPlanner.device_stage`), None for any other chain."""
    if isinstance(transform, CropPlanner):
        return DeviceDecode(transform.planner.device_stage(), transform.size)
    last = (getattr(transform, "transforms", None) or [None])[-1]
    return last.device_stage() if isinstance(last, AugmentPlanner) else None


def build_eval_transform(data_config: dict, draft: bool = False) -> Callable:
    """Resize short side to ``size / crop_pct``, centre crop ``size``, normalise; takes any PIL image.

    ``draft``: large JPEGs decode at a reduced scale (:class:`DraftResize`; ``infer``, not ``eval``, whose
    numbers must be timm's to the pixel)."""
    t = create_transform(
        input_size=data_config["input_size"],
        is_training=False,
        crop_pct=float(data_config["crop_pct"]),
        interpolation=_interp(data_config["interpolation"], "interpolation"),
        mean=data_config["mean"],
        std=data_config["std"],
    )
    resize, *rest = t.transforms
    if draft and type(resize) is transforms.Resize:
        return LazyTransform([DraftResize(resize.size, resize.interpolation, antialias=resize.antialias), *rest])
    return transforms.Compose([ToRGB(), *t.transforms])


def build_mixup(cfg: RunConfig, num_classes: int) -> Callable | None:
    """timm ``Mixup`` for the config (label smoothing folded into its soft targets), or None when off.

    Batch mode needs an even batch size (the train loader drops the last, partial batch).
    ``mixup_off_epoch`` is the trainer's: it sets ``mixup_fn.mixup_enabled = False`` from that epoch.
    """
    if not cfg.mixup_active:
        return None
    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        cutmix_minmax=cfg.cutmix_minmax,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        mode=cfg.mixup_mode,
        label_smoothing=cfg.smoothing,
        num_classes=int(num_classes),
    )
