"""``decode_on: device`` (with ``augment_on: device``): training JPEGs decoded, cropped and resized on the GPU.

Why: with ``augment_on: device`` a loader worker still decodes each JPEG and resizes its random crop, about
3 ms of a 400 px JPEG on the AVX2 EPYC, so a 16-core host feeds a few thousand images per second to a GPU
that takes more. Here a worker reads the file's header only and *draws* the crop box, its filter and the
flips (timm's ``RandomResizedCropAndInterpolation.get_params`` and the flips' own draws, on the header's
size, in timm's order), then the auto-augment / erasing plan (:mod:`vitzoo.data.device.augment_plan`); the batch
crosses to the main process as its files' bytes. The device decodes the batch in one
``torchvision.io.decode_jpeg`` call (nvJPEG on CUDA), crops, resizes with Pillow's arithmetic in a few
batched matrix products (:mod:`vitzoo.data.device.pillow_resize`: the worker path's integers), flips, and hands
the crops to :class:`~vitzoo.data.device.augment_ops.DeviceAugment`. On a CPU the pixels are the worker path's
bit for bit (libjpeg-turbo decodes for both); on a GPU nvJPEG's decoding differs (1.5 grey levels on
average, 22 at most, over 64 photos on an H100).

Images that are not undecoded JPEGs (PNG, a decoded CIFAR image) take the worker path of
``augment_on: device`` and join the batch as crops. A JPEG that no decoder accepts (the device, the CPU's
libjpeg, then Pillow) is replaced in its batch by the batch's next good image and label, and named in a
warning: one bad file never stops a run, and no image trains under another's label.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vitzoo.data.datasets import is_undecoded_jpeg
from vitzoo.data.device.augment_ops import DeviceAugment
from vitzoo.data.device.augment_plan import AugmentPlanner
from vitzoo.data.device.jpeg import decode_in_chunks
from vitzoo.data.device.pillow_resize import FILTER_NAMES, resize
from vitzoo.errors import UserError

log = logging.getLogger("vitzoo")



def filter_code(interpolation: Any) -> int:
    """timm's crop filter (a torchvision InterpolationMode or a Pillow code) -> Pillow's code; UserError for
    one the device's resize lacks (lanczos, hamming: their sines would need libm's exact values)."""
    name = getattr(interpolation, "value", interpolation)
    if isinstance(name, int) and name in FILTER_NAMES.values():
        return name
    if name not in FILTER_NAMES:
        raise UserError(f"decode_on: device resizes with {', '.join(FILTER_NAMES)}, not {name}; use decode_on: cpu")
    return FILTER_NAMES[name]


@dataclass
class EncodedCrop:
    """A worker's sample: a JPEG's bytes and its crop (top, left, height, width, hflip, vflip, filter), or
    (``data`` empty) the crop already made, as uint8 (H, W, 3) ``pixels``; and its plan."""

    name: str
    data: bytes
    crop: torch.Tensor  # (7,) float64
    pixels: torch.Tensor | None
    plan: torch.Tensor
    boxes: torch.Tensor
    seed: torch.Tensor


@dataclass
class EncodedBatch:
    """A batch of :class:`EncodedCrop`: the JPEGs' bytes joined into one tensor (one shared-memory transfer
    rather than one per file, as ``--decode device`` of eval does), the made crops stacked."""

    names: list[str]
    joined: torch.Tensor  # uint8, every JPEG's bytes end to end
    sizes: list[int]  # each sample's byte count, 0 where ``made`` holds its crop
    crops: torch.Tensor  # (B, 7)
    made: torch.Tensor  # (K, H, W, 3) uint8, the samples with size 0, in order
    plan: torch.Tensor
    boxes: torch.Tensor
    seeds: torch.Tensor

    @classmethod
    def collate(cls, samples: list[EncodedCrop]) -> EncodedBatch:
        made = [s.pixels for s in samples if not s.data]
        # (torch.frombuffer refuses an empty buffer: a batch without JPEGs carries one unused byte)
        return cls([s.name for s in samples],
                   torch.frombuffer(bytearray(b"".join(s.data for s in samples)) or bytearray(1), dtype=torch.uint8),
                   [len(s.data) for s in samples], torch.stack([s.crop for s in samples]),
                   torch.stack(made) if made else torch.empty(0, 0, 0, 3, dtype=torch.uint8),
                   torch.stack([s.plan for s in samples]), torch.stack([s.boxes for s in samples]),
                   torch.stack([s.seed for s in samples]))

    def pin_memory(self) -> EncodedBatch:
        """(The DataLoader's pin-memory thread calls this.)"""
        for name in ("joined", "crops", "made", "plan", "boxes", "seeds"):
            setattr(self, name, getattr(self, name).pin_memory())
        return self


class CropPlanner:
    """The last step of a worker's chain under ``decode_on: device``: an undecoded JPEG -> its bytes and
    drawn crop; anything else through ``made`` (timm's crop and flips, then the plan) -> an
    :class:`EncodedCrop` either way. The draws are those of ``crop`` and ``flips``, in their order."""

    opens_lazily = True

    def __init__(self, crop: Any, flips: list, planner: AugmentPlanner, made: Any) -> None:
        for flip in flips:
            if type(flip).__name__ not in ("RandomHorizontalFlip", "RandomVerticalFlip"):
                raise UserError(f"decode_on: device has no device version of {type(flip).__name__}; "
                                "use decode_on: cpu")
        self.crop, self.flips, self.planner, self.made = crop, flips, planner, made
        self.size = tuple(crop.size)  # (h, w) of the output
        choices = crop.interpolation if isinstance(crop.interpolation, (list, tuple)) else [crop.interpolation]
        for interpolation in choices:
            filter_code(interpolation)  # (refuses one torch lacks now, not in a worker)

    def __call__(self, img: Any) -> EncodedCrop:
        name = str(getattr(img, "filename", "") or "")
        if not is_undecoded_jpeg(img):
            pixels, plan, boxes, seed = self.made(img)
            return EncodedCrop(name, b"", torch.zeros(7, dtype=torch.float64), pixels, plan, boxes, seed)
        top, left, height, width = self.crop.get_params(img, self.crop.scale, self.crop.ratio)
        interpolation = self.crop.interpolation
        if isinstance(interpolation, (list, tuple)):  # timm's 'random': drawn per image, as its crop does
            interpolation = random.choice(interpolation)
        flipped = {type(f).__name__: bool(torch.rand(1) < f.p) for f in self.flips}  # torchvision's draws
        crop = torch.tensor([top, left, height, width, flipped.get("RandomHorizontalFlip", False),
                             flipped.get("RandomVerticalFlip", False), filter_code(interpolation)],
                            dtype=torch.float64)
        img.fp.seek(0)
        data = img.fp.read()
        plan, boxes, seed = self.planner.draw(_Sized((self.size[1], self.size[0])))
        return EncodedCrop(name, data, crop, None, plan, boxes, seed)

    def __repr__(self) -> str:
        return f"CropPlanner(size={self.size}, then the plan: {self.planner!r})"


@dataclass
class _Sized:
    """What the plan's recorders read of an image: its (w, h)."""

    size: tuple[int, int]


class DeviceDecode:
    """The device stage under ``decode_on: device``: an :class:`EncodedBatch` and its labels -> decoded,
    cropped, resized, flipped, then :class:`DeviceAugment`-ed images and the labels, on ``device``."""

    def __init__(self, augment: DeviceAugment, size: tuple[int, int]) -> None:
        self.augment, self.size = augment, tuple(size)
        self.warned: set[str] = set()
        # the trainer's: where unreadable files are recorded (the dataset's bad-file report) and said
        self.report_bad: Callable[[list[tuple[str, str]]], None] | None = None
        self.log = log

    def __call__(self, batch: EncodedBatch, labels: torch.Tensor,
                 device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        views = iter(batch.joined.split([n for n in batch.sizes if n]) if any(batch.sizes) else [])
        jpegs = [(i, next(views)) for i, n in enumerate(batch.sizes) if n]
        crops = batch.crops.tolist()  # (host: a few numbers per image)
        images: list[torch.Tensor | None] = [None] * len(batch.sizes)
        for run, decoded in decode_in_chunks([(batch.names[i], data) for i, data in jpegs], device):
            good = []
            for (i, _), image in zip((jpegs[p] for p in run), decoded):
                if isinstance(image, str):
                    self._warn(batch.names[i], image)
                else:
                    good.append((i, image.to(device)))
            if good:
                made_here = self.resized_crops([image for _, image in good], [crops[i] for i, _ in good])
                for (i, _), crop in zip(good, made_here):
                    images[i] = crop
        made = iter(batch.made.to(device, non_blocking=True).permute(0, 3, 1, 2))
        for i, n in enumerate(batch.sizes):
            if not n:
                images[i] = next(made)
        keep = _replacements(images)
        labels = labels[keep]
        x = torch.stack([images[i] for i in keep])  # (B, 3, H, W) uint8
        plan, boxes, seeds = (t[keep] for t in (batch.plan, batch.boxes, batch.seeds))  # (on the host)
        return self.augment.apply(x, plan, boxes, seeds), labels.to(device, non_blocking=True)

    def resized_crops(self, images: list[torch.Tensor], crops: list[list[float]]) -> torch.Tensor:
        """timm's crops of decoded (3, H, W) uint8 images: each box resized to the output as Pillow resizes
        it, then the flips -> (n, 3, h, w) uint8."""
        boxes = [image[:, int(top):int(top + height), int(left):int(left + width)]
                 for image, (top, left, height, width, *_) in zip(images, crops)]
        out = resize(boxes, self.size, [int(crop[6]) for crop in crops])
        for dim, column in ((-1, 4), (-2, 5)):  # horizontal, vertical flips
            flipped = [j for j, crop in enumerate(crops) if crop[column]]
            if flipped:
                index = torch.tensor(flipped).to(out.device, non_blocking=True)
                out.index_copy_(0, index, out.index_select(0, index).flip(dim))
        return out

    def _warn(self, name: str, why: str) -> None:
        if name not in self.warned:
            self.warned.add(name)
            if self.report_bad is not None:
                self.report_bad([(name, why)])
            self.log.warning("%s: %s; replaced in its batch by the next image (decode_on: device)",
                             name or "a JPEG of a shard", why)


def _replacements(images: list) -> list[int]:
    """For each position, itself, or where its image is missing the next position that has one."""
    good = [i for i, x in enumerate(images) if x is not None]
    if not good:
        raise UserError("a whole training batch was unreadable: is the dataset corrupt?")
    return [i if images[i] is not None else next((j for j in good if j > i), good[0]) for i in range(len(images))]
