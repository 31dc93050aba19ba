"""JPEG decoding and eval preprocessing on the model's device (``vitzoo infer --decode device``).

On a GPU the model outruns PIL: decoding and resizing a 400 px JPEG costs a CPU core a few milliseconds,
so a handful of loader workers cap inference at a few hundred images per second while an H100 runs
deit_small at over 20,000. Here the workers only read file bytes; the JPEGs of a batch are decoded in one
``torchvision.io.decode_jpeg`` call on the device (nvJPEG on CUDA, libjpeg-turbo on a CPU), then resized,
centre-cropped and normalised there, as timm's eval transform does on the CPU (``transforms_imagenet_eval``:
shorter side to ``floor(size / crop_pct)``, centre crop ``size``). The resize is torch's antialiased one,
whose filters follow PIL's; results are rounded to 8 bits as PIL's are, so the two paths agree to a few
grey levels (tests/test_gpu_jpeg.py measures it) and on the predicted class.

Files that are not JPEGs (PNG, WebP, ...) are decoded by PIL in the workers and join the batch as pixels.
A JPEG that the device decoder refuses is retried on the CPU, then by PIL; one that nothing can decode is
reported with its reason, as on the CPU path: one bad file never stops the run.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from vitzoo.data.datasets import load_image
from vitzoo.errors import UserError

JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker + the first byte of the next marker
INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                 "nearest": InterpolationMode.NEAREST}

Item = tuple[str, torch.Tensor | None, str | None]  # (path, image or None, why it could not be read)


class EncodedFiles(torch.utils.data.Dataset):
    """In loader workers: a JPEG's bytes (1-D uint8, still encoded), any other image decoded by PIL
    (3-D uint8 CHW RGB), or the reason the file cannot be read."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Item:
        path = self.paths[i]
        try:
            data = path.read_bytes()
        except OSError:  # load_image below fails too, with the reason the CPU path gives
            data = b""
        if data.startswith(JPEG_MAGIC):
            return str(path), torch.frombuffer(bytearray(data), dtype=torch.uint8), None
        try:
            return str(path), pil_to_chw(load_image(path)), None
        except UserError as e:
            return str(path), None, str(e).removeprefix(f"{path}: ")


def pil_to_chw(image) -> torch.Tensor:
    return TF.pil_to_tensor(image.convert("RGB"))


class DevicePreprocess:
    """Turns a batch of :class:`EncodedFiles` items into preprocessed images on ``device``."""

    def __init__(self, data_config: dict, device: torch.device):
        size = data_config["input_size"][-2:]
        if size[0] != size[1]:
            raise UserError(f"--decode device supports square inputs; this model takes {size[0]}x{size[1]} "
                            "(use --decode cpu)")
        interpolation = str(data_config.get("interpolation") or "bicubic").lower()
        if interpolation not in INTERPOLATION:
            raise UserError(f"--decode device supports {', '.join(INTERPOLATION)} resizing, not {interpolation!r} "
                            "(use --decode cpu)")
        self.device = device
        self.crop = int(size[0])
        self.scale = math.floor(self.crop / float(data_config.get("crop_pct") or 0.875))  # timm's arithmetic
        self.interpolation = INTERPOLATION[interpolation]
        self.mean = torch.tensor(data_config["mean"], device=device).view(3, 1, 1) * 255
        self.std = torch.tensor(data_config["std"], device=device).view(3, 1, 1) * 255

    def __call__(self, items: list[Item]) -> list[Item]:
        jpegs = [i for i, (_, data, _) in enumerate(items) if data is not None and data.dim() == 1]
        pixels = dict(zip(jpegs, self.decode([items[i][:2] for i in jpegs])))
        out: list[Item] = []
        for i, (name, data, why) in enumerate(items):
            image = pixels.get(i, data)
            if isinstance(image, str):
                out.append((name, None, image))
            elif image is None:
                out.append((name, None, why))
            else:
                out.append((name, self.preprocess(image.to(self.device, non_blocking=True)), None))
        return out

    def decode(self, encoded: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor | str]:
        """Decoded CHW uint8 images (or why not) of (path, bytes), in one device call when every JPEG decodes."""
        if not encoded:
            return []
        if self.device.type == "cuda":
            # host-device sync: torchvision's nvJPEG decode writes its outputs on a private stream that does
            # not wait for the caller's, so it can overwrite freed memory that queued kernels still read
            # (pytorch/vision#9606, reproduced on H100s); an idle caller's stream makes that impossible
            torch.cuda.current_stream(self.device).synchronize()
        try:
            return list(decode_jpeg([data for _, data in encoded], mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one bad file fails the whole call: find it
            return [self.decode_one(path, data) for path, data in encoded]

    def decode_one(self, path: str, data: torch.Tensor) -> torch.Tensor | str:
        """One JPEG: the device, then the CPU's libjpeg (CMYK, unusual sampling), then PIL from the file,
        whose reason for refusing it is then the one the CPU path reports."""
        for device in dict.fromkeys([self.device, torch.device("cpu")]):
            try:
                return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                pass
        try:
            return pil_to_chw(load_image(path))
        except UserError as e:
            return str(e).removeprefix(f"{path}: ")

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 CHW -> normalised float CHW: resize the shorter side, round to 8 bits as PIL, crop."""
        x = TF.resize(image.float(), [self.scale], interpolation=self.interpolation, antialias=True)
        x = TF.center_crop(x.clamp_(0, 255).round_(), [self.crop, self.crop])
        return (x - self.mean) / self.std
