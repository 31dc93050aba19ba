"""The loader-worker half of ``augment_on: device``: crop and flip the image, and *draw* the rest of the recipe.

Why: on a GPU the DeiT recipe's per-image work in PIL sets the pace. On the lent H100 machine 8 loader
workers fed 881 img/s to a deit_small step that takes 5,148 (docs/performance.md); of a worker's time on
an ImageNet-sized JPEG, RandAugment's two ops, the normalisation and random erasing take about half
(timm's affine ops alone 1.4-2.1 ms each in Pillow). With ``augment_on: device`` a worker decodes, crops
and flips as before and hands over the 224 px crop as uint8, plus a *plan*: every random choice the rest
of the recipe would make -- which auto-augment ops, their magnitudes and filters, the erasing boxes -- drawn
by timm's own code in timm's order from the sample's seeded generators. The training device then applies
the plan to the whole batch (:mod:`vitzoo.data.device.augment_ops`). For the same seed an image gets the same ops,
magnitudes and boxes as on the CPU path; only the erasing noise comes from another generator.

How the draws stay timm's: :class:`AugmentPlanner` runs a copy of timm's ``RandAugment`` / ``AutoAugment``
whose ops' pixel functions are swapped for recorders (``AugmentOp.__call__``, which draws whether to apply
and the magnitude, is timm's), and a copy of timm's ``RandomErasing`` in constant mode on a stand-in image
that records where it would write (its ``_erase`` draws the boxes; constant mode skips the noise).
"""
from __future__ import annotations

import copy
import math
import random
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitzoo.data.device.augment_ops import (
    AFFINE,
    AUTOCONTRAST,
    BICUBIC,
    BRIGHTNESS,
    COLOR,
    CONTRAST,
    EQUALIZE,
    INVERT,
    PLAN_WIDTH,
    POSTERIZE,
    SHARPNESS,
    SOLARIZE,
    SOLARIZE_ADD,
    DeviceAugment,
)
from vitzoo.errors import UserError

_POINT_OPS = {  # timm op name -> plan row kind (the argument, if any, in p0)
    "AutoContrast": AUTOCONTRAST, "Equalize": EQUALIZE, "Invert": INVERT,
    "Posterize": POSTERIZE, "PosterizeIncreasing": POSTERIZE, "PosterizeOriginal": POSTERIZE,
    "Solarize": SOLARIZE, "SolarizeIncreasing": SOLARIZE, "SolarizeAdd": SOLARIZE_ADD,
    "Color": COLOR, "ColorIncreasing": COLOR, "Contrast": CONTRAST, "ContrastIncreasing": CONTRAST,
    "Brightness": BRIGHTNESS, "BrightnessIncreasing": BRIGHTNESS,
    "Sharpness": SHARPNESS, "SharpnessIncreasing": SHARPNESS,
}
_GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "TranslateXRel", "TranslateYRel")
SUPPORTED_OPS = (*_POINT_OPS, *_GEOMETRIC_OPS)


def pil_affine(name: str, arg: float, size: tuple[int, int]) -> tuple[float, ...]:
    """The (a, b, c, d, e, f) that timm's op hands Pillow's ``Image.transform(AFFINE)``: output pixel (x, y)
    samples the input at (a x + b y + c, d x + e y + f) (timm ``auto_augment.py``; ``Image.rotate`` for
    Rotate, which turns about the centre and counter-clockwise for positive degrees)."""
    w, h = size
    if name == "ShearX":
        return 1.0, arg, 0.0, 0.0, 1.0, 0.0
    if name == "ShearY":
        return 1.0, 0.0, 0.0, arg, 1.0, 0.0
    if name in ("TranslateX", "TranslateXRel"):
        return 1.0, 0.0, arg * w if name.endswith("Rel") else arg, 0.0, 1.0, 0.0
    if name in ("TranslateY", "TranslateYRel"):
        return 1.0, 0.0, 0.0, 0.0, 1.0, arg * h if name.endswith("Rel") else arg
    # Pillow's Image.rotate(angle, expand=False): the inverse rotation about (w / 2, h / 2)
    angle = -math.radians(arg % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = -b, a
    cx, cy = w / 2.0, h / 2.0
    return a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy


class _Recorder:
    """Stands in for one timm op's pixel function: records the plan row instead of changing the image."""

    def __init__(self, name: str, rows: list) -> None:
        self.name, self.rows = name, rows

    def __call__(self, img, *level_args, **kwargs):
        arg = float(level_args[0]) if level_args else 0.0
        if self.name in _POINT_OPS:
            self.rows.append([_POINT_OPS[self.name], arg])
            return img
        resample = kwargs.get("resample", BICUBIC)
        if isinstance(resample, (list, tuple)):  # timm's _interpolation draws the filter here
            resample = random.choice(resample)
        self.rows.append([AFFINE, *pil_affine(self.name, arg, img.size), int(resample)])
        return img


class _BoxRecorder:
    """Stands in for the image timm's ``RandomErasing._erase`` writes into: keeps (top, left, h, w)."""

    def __init__(self) -> None:
        self.boxes: list[tuple[int, int, int, int]] = []

    def __setitem__(self, key, value) -> None:
        _, rows, cols = key
        self.boxes.append((rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start))


def _ops_of(augment: Any) -> list:
    """The AugmentOps of timm's RandAugment (``ops``) or AutoAugment (``policy``: lists of ops)."""
    if hasattr(augment, "ops"):
        return list(augment.ops)
    return [op for sub_policy in augment.policy for op in sub_policy]


def plan_rows(augment: Any) -> int:
    """How many ops one image may get: RandAugment's layers, an AutoAugment sub-policy's length."""
    if augment is None:
        return 0
    if hasattr(augment, "num_layers"):
        return int(augment.num_layers)
    return max(len(sub_policy) for sub_policy in augment.policy)


def check_device_recipe(augment: Any) -> None:
    """Raise a UserError naming what ``augment_on: device`` cannot apply (AugMix, blur, colour jitter)."""
    if augment is None:
        return
    if not (hasattr(augment, "ops") and hasattr(augment, "num_layers")) and not hasattr(augment, "policy"):
        raise UserError(f"augment_on: device applies timm's RandAugment ('rand-...') and AutoAugment policies, "
                        f"not {type(augment).__name__}; use augment_on: cpu")
    bad = sorted({op.name for op in _ops_of(augment) if op.name not in SUPPORTED_OPS})
    if bad:
        raise UserError(f"augment_on: device has no device version of the auto-augment op(s) {', '.join(bad)}; "
                        "use augment_on: cpu")


class AugmentPlanner:
    """The last step of a worker's chain under ``augment_on: device``: RGB PIL crop -> (uint8 (H, W, 3)
    pixels, float64 (rows, PLAN_WIDTH) auto-augment plan, int64 (erase_count, 4) erasing boxes, int64 seed
    of the erasing noise). ``augment`` is timm's RandAugment / AutoAugment (or None), ``erasing`` timm's
    RandomErasing (or None); neither is changed. ``mean`` / ``std`` are the normalisation's, which the
    device stage (:meth:`device_stage`) applies."""

    def __init__(self, augment: Any, erasing: Any, mean: tuple, std: tuple) -> None:
        check_device_recipe(augment)
        self.mean, self.std = tuple(mean), tuple(std)
        self.rows = plan_rows(augment)
        # the fill of the geometric ops: timm's hparams img_mean (the op's kwargs)
        self.fill = tuple(_ops_of(augment)[0].kwargs["fillcolor"]) if augment is not None else (0, 0, 0)
        self._drawn: list = []
        self.augment = None
        if augment is not None:
            self.augment = copy.copy(augment)
            if hasattr(augment, "ops"):
                self.augment.ops = [self._recording(op) for op in augment.ops]
            else:
                self.augment.policy = [[self._recording(op) for op in sub] for sub in augment.policy]
        self.erasing = None
        self.erase_count = 0
        if erasing is not None and erasing.probability > 0:
            self.erasing = copy.copy(erasing)
            self.erasing.per_pixel = self.erasing.rand_color = False  # boxes only: no noise drawn here
            self.erase_count = int(erasing.max_count)
        self.erase_mode = erasing.mode if erasing is not None else "const"

    def _recording(self, op: Any) -> Any:
        op = copy.copy(op)
        op.aug_fn = _Recorder(op.name, self._drawn)
        return op

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return (torch.from_numpy(np.array(img, np.uint8)), *self.draw(img))

    def draw(self, img: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The plan for an image of ``img.size`` (only the size is read): the auto-augment rows, the erasing
        boxes, the erasing noise's seed."""
        plan = torch.zeros(self.rows, PLAN_WIDTH, dtype=torch.float64)
        if self.augment is not None:
            self._drawn.clear()
            self.augment(img)
            for i, row in enumerate(self._drawn):
                plan[i, : len(row)] = torch.tensor(row, dtype=torch.float64)
        boxes = torch.zeros(self.erase_count, 4, dtype=torch.int64)
        if self.erasing is not None:
            stand_in = _BoxRecorder()
            self.erasing._erase(stand_in, 3, img.size[1], img.size[0], torch.float32)
            for i, box in enumerate(stand_in.boxes):
                boxes[i] = torch.tensor(box)
        seed = torch.tensor(random.getrandbits(62))  # drawn last: the draws above stay timm's
        return plan, boxes, seed

    def device_stage(self):
        """The :class:`~vitzoo.data.device.augment_ops.DeviceAugment` that applies this planner's plans."""
        return DeviceAugment(self.mean, self.std, self.fill, self.erase_mode)

    def __repr__(self) -> str:
        return f"AugmentPlanner(rows={self.rows}, erase_count={self.erase_count})"
