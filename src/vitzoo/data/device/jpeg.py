"""JPEG decoding and eval preprocessing on the model's device (``vitzoo infer / eval --decode device``).

On a GPU the model outruns PIL: decoding and resizing a 400 px JPEG costs a CPU core a few milliseconds,
so a handful of loader workers cap inference at a few hundred images per second while an H100 runs
deit_small at over 20,000. Here the workers only read file bytes; the JPEGs of a batch are decoded in one
``torchvision.io.decode_jpeg`` call on the device (nvJPEG on CUDA, libjpeg-turbo on a CPU), then resized,
centre-cropped and normalised there, as timm's eval transform does on the CPU (``transforms_imagenet_eval``:
shorter side to ``floor(size / crop_pct)``, centre crop ``size``). The resize is Pillow's arithmetic, batched
(:mod:`vitzoo.data.device.pillow_resize`), computing the crop's pixels only, and the normalisation torchvision's, so
on a CPU (libjpeg-turbo decoding, as PIL's) the two paths give the same tensors (tests/test_gpu_jpeg.py);
on a GPU, nvJPEG's decoding differs (1.5 grey levels on average, 22 at most, over 64 photos on an H100).

Files that are not JPEGs (PNG, WebP, ...) are decoded by PIL in the workers and join the batch as pixels.
A JPEG that the device decoder refuses is retried on the CPU, then by PIL; one that nothing can decode is
reported with its reason, as on the CPU path: one bad file never stops the run (``eval`` leaves it out of
the metrics, where its CPU loader substitutes the next sample).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from vitzoo.data.datasets import load_image
from vitzoo.data.device.pillow_resize import FILTER_NAMES, resize
from vitzoo.data.workers import worker_init
from vitzoo.errors import UserError

JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker + the first byte of the next marker

Item = tuple[str, torch.Tensor | None, str | None]  # (path, image or None, why it could not be read)
# JPEG bytes per decode call: an ImageNet batch of 256 (~28 MB) in one call, 12 MP photos (~4 MB each,
# 36 MB decoded) eight at a time
DECODE_BYTES = 32 << 20

DECODE_CHOICES = ("auto", "cpu", "device")
DECODE_HELP = ("where JPEGs are decoded: cpu = PIL in the loader workers; device = the workers only read the "
               "files, each batch's JPEGs are decoded by torchvision.io.decode_jpeg on the model's device (nvJPEG "
               "on CUDA) and resized there (other formats still decode in the workers), for GPUs that outrun the "
               "CPU's decoding (on a CPU it runs too, slower than cpu); auto = device on CUDA, else cpu")


def choose_preprocess(choice: str, data_config: dict, device: torch.device, *, reads_files: bool = True,
                      announce: bool = True) -> DevicePreprocess | None:
    """``--decode``: the on-device preprocessing, or None for PIL in the workers. ``auto`` falls back to
    the workers (saying why) where the device path cannot serve: data that are not files, a non-square
    input; ``device`` then fails with one line instead."""
    if choice == "cpu" or (choice == "auto" and device.type != "cuda"):
        return None
    try:
        if not reads_files:
            raise UserError("--decode device reads image files and this dataset has none: use --decode cpu")
        preprocess = DevicePreprocess(data_config, device)
    except UserError as e:
        if choice == "device":
            raise
        if announce:
            print(f"decode: in the loader workers ({e})", file=sys.stderr, flush=True)
        return None
    if announce:
        print(f"decode: JPEGs on {device} (torchvision.io.decode_jpeg); loader workers read the files",
              file=sys.stderr, flush=True)
    return preprocess


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


def pack_encoded(items: list) -> tuple[list, torch.Tensor, list[int]]:
    """``--decode device``, run in the loader worker (``collate_fn``): the batch's still-encoded JPEGs (1-D uint8) joined
    into one tensor, so the batch crosses to the main process as one tensor in shared memory rather than
    one per file, as ``vitzoo.inference.predict`` does for pixels. The transport alone, measured on the 2-core
    CI box (2 workers, 256 files of 100 KB per batch): ~9,000 img/s joined vs ~2,000 as a list, a ceiling
    near what nvJPEG decodes. Returns (the items with their JPEG bytes taken out, the joined bytes, each
    item's byte count: 0 for an item that is not a JPEG)."""
    sizes = [x.numel() if x is not None and x.dim() == 1 else 0 for _, x, _ in items]
    jpegs = [x for (_, x, _), n in zip(items, sizes) if n]
    joined = torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8)
    return [(name, None if n else x, why) for (name, x, why), n in zip(items, sizes)], joined, sizes


def unpack_encoded(batch: tuple[list, torch.Tensor, list[int]]) -> list:
    """:func:`pack_encoded` undone in the main process: each JPEG is a view of the joined bytes."""
    items, joined, sizes = batch
    views = iter(joined.split([n for n in sizes if n]))
    return [(name, next(views) if n else x, why) for (name, x, why), n in zip(items, sizes)]


class LabelledFiles(torch.utils.data.Dataset):
    """:class:`EncodedFiles` with each file's class index, for ``vitzoo eval --decode device``."""

    def __init__(self, paths: list[Path], labels: list[int]):
        self.files, self.labels = EncodedFiles(paths), labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Item, int]:
        return self.files[i], self.labels[i]


def pack_labelled(batch: list[tuple[Item, int]]) -> tuple[tuple, torch.Tensor]:
    items, labels = zip(*batch)
    return pack_encoded(list(items)), torch.tensor(labels, dtype=torch.int64)


def eval_batches(files: list[tuple[str, int]], preprocess: DevicePreprocess, batch_size: int, num_workers: int,
                 sampler: torch.utils.data.Sampler, bad: list[tuple[str, str]]):
    """(images, labels) on the device for :func:`vitzoo.engine.loop.evaluate`, from ``files`` =
    [(path, label)]: the workers read, :class:`DevicePreprocess` decodes. A file nothing can decode is left
    out of its batch, with its label, and listed in ``bad`` (the CPU loader replaces it by the next sample
    instead: a device batch has no next sample to draw)."""
    dataset = LabelledFiles([Path(p) for p, _ in files], [label for _, label in files])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                         collate_fn=pack_labelled, worker_init_fn=worker_init(),
                                         prefetch_factor=2 if num_workers else None)
    for packed, labels in loader:
        items = preprocess(unpack_encoded(packed))
        keep = [i for i, (_, x, _) in enumerate(items) if x is not None]
        bad.extend((name, why) for name, x, why in items if x is None)
        if keep:
            yield torch.stack([items[i][1] for i in keep]), labels[keep].to(preprocess.device)


def decode_in_chunks(encoded: list[tuple[str, torch.Tensor]], device: torch.device):
    """``encoded`` (path, bytes) decoded a run of at most DECODE_BYTES of JPEG at a time, so a batch of 12 MP
    photos (9 GB decoded for 256 of them) is never held decoded at once: yields (the run's positions in
    ``encoded``, its images or why not), for the caller to reduce before the next run."""
    run, size = [], 0
    for position, (_, data) in enumerate(encoded):
        if run and size + data.numel() > DECODE_BYTES:
            yield run, decode_jpegs([encoded[i] for i in run], device)
            run, size = [], 0
        run.append(position)
        size += data.numel()
    if run:
        yield run, decode_jpegs([encoded[i] for i in run], device)


def decode_jpegs(encoded: list[tuple[str, torch.Tensor]], device: torch.device) -> list[torch.Tensor | str]:
    """Decoded CHW uint8 RGB images (or why not) of (path, bytes), in one device call when every JPEG decodes."""
    if not encoded:
        return []
    if device.type == "cuda":
        # host-device sync: torchvision's nvJPEG decode writes its outputs on a private stream that does
        # not wait for the caller's, so it can overwrite freed memory that queued kernels still read
        # (pytorch/vision#9606, reproduced on H100s); an idle caller's stream makes that impossible
        torch.cuda.current_stream(device).synchronize()
    try:
        return list(decode_jpeg([data for _, data in encoded], mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the whole call: find it
        return [decode_one(path, data, device) for path, data in encoded]


def decode_one(path: str, data: torch.Tensor, device: torch.device) -> torch.Tensor | str:
    """One JPEG: the device, then the CPU's libjpeg (CMYK, unusual sampling), then PIL from the file,
    whose reason for refusing it is then the one the CPU path reports."""
    for where in dict.fromkeys([device, torch.device("cpu")]):
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=where)
        except RuntimeError:
            pass
    if not path:  # (bytes from a shard: no file to ask PIL about)
        return "not a JPEG that libjpeg can decode"
    try:
        return pil_to_chw(load_image(path))
    except UserError as e:
        return str(e).removeprefix(f"{path}: ")


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
        if interpolation not in FILTER_NAMES:
            raise UserError(f"--decode device supports {', '.join(FILTER_NAMES)} resizing, not {interpolation!r} "
                            "(use --decode cpu)")
        self.device = device
        self.crop = int(size[0])
        self.scale = math.floor(self.crop / float(data_config.get("crop_pct") or 0.875))  # timm's arithmetic
        self.filter = FILTER_NAMES[interpolation]  # (Pillow's code)
        self.mean = torch.tensor(data_config["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(data_config["std"], device=device).view(1, 3, 1, 1)

    def __call__(self, items: list[Item]) -> list[Item]:
        jpegs = [i for i, (_, data, _) in enumerate(items) if data is not None and data.dim() == 1]
        done: dict[int, torch.Tensor | str] = {}  # item -> preprocessed image, or why not
        for run, decoded in decode_in_chunks([items[i][:2] for i in jpegs], self.device):
            self._preprocess_into(done, {jpegs[p]: image for p, image in zip(run, decoded)})
        self._preprocess_into(done, {i: data for i, (_, data, _) in enumerate(items)  # (decoded by PIL in a worker)
                                     if data is not None and data.dim() == 3})
        return [(name, done[i], None) if isinstance(done.get(i), torch.Tensor) else (name, None, done.get(i, why))
                for i, (name, _, why) in enumerate(items)]

    def _preprocess_into(self, done: dict, images: dict[int, torch.Tensor | str]) -> None:
        ready = {i: image.to(self.device, non_blocking=True) for i, image in images.items()
                 if isinstance(image, torch.Tensor)}
        done.update((i, why) for i, why in images.items() if isinstance(why, str))
        if ready:
            done.update(zip(ready, self.preprocess(list(ready.values()))))

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 CHW images -> (B, 3, crop, crop) normalised float: timm's eval transform -- the shorter side
        resized to ``scale`` (torchvision's sizes), the centre crop (its offsets) -- in Pillow's integers,
        computed for the crop only, then ToTensor and Normalize's arithmetic."""
        resized, offsets = [], []
        for image in images:
            height, width = image.shape[1:]
            if width <= height:  # (torchvision's _compute_resized_output_size, as its Resize(int))
                resized.append((int(self.scale * height / width), self.scale))
            else:
                resized.append((self.scale, int(self.scale * width / height)))
            offsets.append(tuple(round((side - self.crop) / 2.0) for side in resized[-1]))  # center_crop
        x = resize(images, (self.crop, self.crop), [self.filter] * len(images), resized, offsets)
        return x.float().div_(255).sub_(self.mean).div_(self.std)
