"""Dataset readers: ImageNet-style folders and the CIFAR-10/100 binary format, with a bad-file policy.

Every dataset yields ``(image_tensor CHW float32, int label)`` once a transform is attached and carries
``.classes`` (the class names that travel into checkpoints) and ``.bad_files`` (``{path: reason}`` for
images that could not be decoded). Why a policy: one corrupt JPEG among 1.28M must not kill a 300-epoch
run, so by default a bad sample is replaced by the next readable one (deterministic), counted, and the
names are reported at epoch end (:func:`report_bad_files`); ``bad_image_policy: error`` makes it fatal.

DataLoader workers hold their own copy of the dataset, so a worker cannot update the main process's
``bad_files``. Each copy queues what it finds in ``_pending_bad``; the collate function of
:mod:`vitzoo.data.loader` (which runs in the worker) drains that queue into the batch, and the loader
merges it into the main-process dataset. CIFAR records are parsed with numpy (never pickle).
"""

from __future__ import annotations

import io
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from vitzoo.checkpoint import atomic_write_text
from vitzoo.errors import UserError

log = logging.getLogger(__name__)

# The extensions timm / torchvision treat as images (matched case-insensitively).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BAD_IMAGE_POLICIES = ("skip", "error")
_MAX_CONSECUTIVE_BAD = 32  # give up (UserError) if this many samples in a row are unreadable


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def list_images(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """A file -> ``[file]``; a folder -> its image files (by extension, any case), sorted by path."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"no such file or folder: {path}")
    if recursive:
        found = [
            Path(root) / f
            for root, dirs, files in os.walk(path, followlinks=True)
            for f in files
            if _is_image(f)
        ]
    else:
        found = [p for p in path.iterdir() if p.is_file() and _is_image(p.name)]
    return sorted(found)


class _BadImage(Exception):
    """Internal: a file that exists but cannot be decoded (carries a short reason)."""


def _bad_image_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def open_image(fileobj: Any, lazy: bool = False):
    """An image file object as an RGB PIL image, decoded now (so truncated data fails here, not inside a
    transform); ``_BadImage`` with a short reason when Pillow cannot read it.

    ``lazy``: a JPEG comes back opened (its header read) but not decoded, for a transform that decodes it
    with :func:`decode_image` at the scale it needs (``opens_lazily``: ``transforms.DraftResizedCrop``);
    other formats are decoded as usual.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(fileobj)
    except UnidentifiedImageError:  # (Pillow's text names the file object: <_io.BufferedReader ...>)
        raise _BadImage("not an image format Pillow can decode") from None
    except _bad_image_errors() as e:
        raise _BadImage(_reason(e)) from e
    return img if lazy and img.format == "JPEG" else decode_image(img)


def _open_rgb(path: Path, lazy: bool = False):
    """:func:`open_image` of the file at ``path`` (read whole first when ``lazy``, as the image outlives it)."""
    try:
        with open(path, "rb") as f:
            img = open_image(io.BytesIO(f.read()) if lazy else f, lazy)
        img.filename = str(path)  # (Pillow's record of the source, empty for bytes: decode_on: device names it)
        return img
    except _BadImage:
        if os.path.getsize(path) == 0:
            raise _BadImage("empty file (0 bytes)") from None
        raise


def _reason(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def opens_lazily(transform: Any) -> bool:
    """Whether ``transform`` decodes JPEGs itself (``transforms.LazyTransform``, ``MIMTransform``), so a
    dataset hands them over opened but undecoded (:func:`open_image` with ``lazy``)."""
    return bool(getattr(transform, "opens_lazily", False))


def is_undecoded_jpeg(img: Any) -> bool:
    """True for a JPEG opened lazily by :func:`_open_rgb` and not decoded yet (Pillow empties ``tile``, the
    list of what is left to decode, when it loads an image)."""
    return getattr(img, "format", None) == "JPEG" and bool(getattr(img, "tile", None))


def decode_image(img: Any, draft_size: tuple[int, int] | None = None):
    """Decode an opened image to RGB; a JPEG at the smallest of libjpeg's 1/2, 1/4, 1/8 scales that keeps it
    at least ``draft_size`` (Pillow's ``Image.draft``), when given. Unreadable data: ``_BadImage``, which the
    dataset records and replaces like a file it could not open."""
    try:
        if draft_size is not None:
            img.draft("RGB", draft_size)
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")  # (convert would copy an RGB image)
    except _bad_image_errors() as e:
        raise _BadImage(_reason(e)) from e


def load_image(path: str | os.PathLike, lazy: bool = False):
    """Open ``path`` as an RGB PIL image; UserError naming the file if it is missing or unreadable.
    ``lazy``: a JPEG is only opened, for a transform that decodes it (``opens_lazily``); call that transform
    under :func:`decoding_errors_named`."""
    path = Path(path)
    try:
        return _open_rgb(path, lazy)
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except _BadImage as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


@contextmanager
def decoding_errors_named(path: str | os.PathLike) -> Iterator[None]:
    """A JPEG opened by ``load_image(path, lazy=True)`` that turns out unreadable when a transform decodes
    it: the same UserError as :func:`load_image`'s."""
    try:
        yield
    except _BadImage as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


class SampleKey(NamedTuple):
    """What a seeded sampler hands the dataset: which sample, and the seed of its augmentation draws."""

    index: int
    seed: int


def _seed_cpu_rngs(seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextmanager
def seeded_augmentation(seed: int) -> Iterator[None]:
    """Run the block with python / numpy / torch (CPU) RNGs seeded by ``seed``.

    Why: augmentation randomness then belongs to the sample, not to whichever process draws it, so the
    batches do not depend on the number of loader workers, and a resumed run sees the same ones.
    timm's RandAugment draws from ``random`` and numpy, random erasing and RandomResizedCrop from torch,
    mixup (in the main process, outside this block) from numpy.

    In the main process (``num_workers: 0``) the RNG states are restored afterwards, so the training
    streams (dropout, mixup) do not depend on the data. A loader worker draws nothing else, so there the
    block only seeds: saving and restoring numpy's state, and ``torch.manual_seed`` (which also reaches
    every device's generator), cost 0.4 ms per sample, 10% of a worker's time on 400 px JPEGs.
    """
    if get_worker_info() is not None:
        _seed_cpu_rngs(seed)
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        _seed_cpu_rngs(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class BadFileLog:
    """The bad-file bookkeeping every dataset offers the loader (see the module docstring): ``bad_files``
    (all seen, merged from the workers) and ``_pending_bad`` (found by this process copy, not yet relayed)."""

    bad_files: dict[str, str]
    _pending_bad: list[tuple[str, str]]

    def _record_bad(self, name: str, reason: str) -> None:
        if name not in self.bad_files:
            self.bad_files[name] = reason
            self._pending_bad.append((name, reason))

    def merge_bad_files(self, items: Sequence[tuple[str, str]]) -> None:
        """Record bad files found by a worker's copy of this dataset (called by the loader)."""
        for name, reason in items:
            self.bad_files.setdefault(name, reason)

    def drain_pending_bad(self) -> list[tuple[str, str]]:
        out, self._pending_bad = self._pending_bad, []
        return out


class BaseDataset(BadFileLog, Dataset):
    """Shared behaviour: transform, seeded subset, bad-file bookkeeping."""

    def __init__(
        self,
        classes: list[str],
        labels: Sequence[int],
        transform: Callable | None,
        bad_image_policy: str = "skip",
    ):
        if bad_image_policy not in BAD_IMAGE_POLICIES:
            raise UserError(f"bad_image_policy must be one of {BAD_IMAGE_POLICIES}, got {bad_image_policy!r}")
        self.classes = list(classes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.bad_image_policy = bad_image_policy
        self.bad_files: dict[str, str] = {}  # path -> reason, merged from every worker
        self._pending_bad: list[tuple[str, str]] = []  # found by this process copy, not yet reported
        self._index = np.arange(len(self.labels))  # positions into the full record list (subsets)

    # -- subsets ------------------------------------------------------------------------------------
    def select_subset(self, num_samples: int, seed: int) -> None:
        """Keep a fixed random subset of ``num_samples`` (sorted, so order stays by class / file)."""
        n = len(self._index)
        if num_samples is None or num_samples < 0 or num_samples >= n:
            return
        if num_samples == 0:
            raise UserError("num_samples must be -1 (all) or > 0, got 0")
        rng = np.random.default_rng(seed)
        self._index = np.sort(rng.choice(self._index, size=num_samples, replace=False))

    def __len__(self) -> int:
        return len(self._index)

    @property
    def targets(self) -> list[int]:
        return self.labels[self._index].tolist()

    # -- loading ------------------------------------------------------------------------------------
    def _load(self, record: int):  # -> PIL image; raises _BadImage
        raise NotImplementedError

    def _name(self, record: int) -> str:
        return f"record {record}"

    def __getitem__(self, key: int | SampleKey):
        if isinstance(key, SampleKey):
            with seeded_augmentation(key.seed):
                return self._get(key.index)
        return self._get(key)

    def _get(self, i: int):
        n = len(self._index)
        for attempt in range(min(n, _MAX_CONSECUTIVE_BAD)):
            record = int(self._index[(i + attempt) % n])  # deterministic replacement: the next sample
            try:
                img = self._load(record)
                if self.transform is not None:  # (may decode a lazily opened JPEG: DraftResizedCrop)
                    img = self.transform(img)
            except _BadImage as e:
                name = self._name(record)
                if self.bad_image_policy == "error":
                    raise UserError(
                        f"unreadable image {name}: {e} (set bad_image_policy: skip to skip such files)"
                    ) from None
                self._record_bad(name, str(e))
                continue
            return img, int(self.labels[record])
        raise UserError(
            f"{min(n, _MAX_CONSECUTIVE_BAD)} unreadable images in a row starting at "
            f"{self._name(int(self._index[i % n]))}; is the dataset corrupt?"
        )


class ImageFiles(BaseDataset):
    """A dataset whose records are image files (``self.paths``): a file that vanished counts as bad."""

    paths: list[str]

    def _name(self, record: int) -> str:
        return self.paths[record]

    def files(self) -> list[tuple[str, int]]:
        """(path, class index) of each sample, in the dataset's order (after any subset)."""
        return [(self.paths[r], int(self.labels[r])) for r in self._index]

    def _load(self, record: int):
        try:
            return _open_rgb(Path(self.paths[record]), lazy=opens_lazily(self.transform))
        except FileNotFoundError:
            raise _BadImage("file disappeared") from None


class ImageFolderDataset(ImageFiles):
    """``root/<class>/**/*.{jpg,png,...}``; classes are the sorted sub-folder names.

    ``classes`` (e.g. the train split's list, or a checkpoint's) fixes the label order, so a validation
    folder that lacks some classes still maps names to the right indices.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        *,
        classes: Sequence[str] | None = None,
        bad_image_policy: str = "skip",
    ):
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"dataset folder not found: {root} (expected {root}/<class>/<images>)")
        found = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise UserError(f"no class folders in {root} (expected {root}/<class>/<images>)")
        if classes is None:
            classes = found
        else:
            classes = list(classes)
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise UserError(
                    f"{root} has class folders not among the {len(classes)} known classes: "
                    f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
                )
        to_idx = {c: i for i, c in enumerate(classes)}
        paths, labels = [], []
        for c in found:
            files = list_images(root / c, recursive=True)
            if not files:
                raise UserError(
                    f"class folder {root / c} holds no images (extensions: {' '.join(IMG_EXTENSIONS)})"
                )
            paths += [str(p) for p in files]
            labels += [to_idx[c]] * len(files)
        self.root = root
        self.paths = paths
        super().__init__(classes, labels, transform, bad_image_policy)



def base_dataset(dataset: Any) -> Any:
    """Unwrap ``torch.utils.data.Subset``-style wrappers down to the vitzoo dataset."""
    while not hasattr(dataset, "bad_files") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def report_bad_files(dataset: Any, output_dir: str | os.PathLike, epoch: int) -> list[str]:
    """Write the unreadable files seen so far to ``output_dir/bad_files.txt``; return their names.

    Called at the end of each epoch. The file is rewritten atomically (cumulative list). Under
    torch.distributed each rank reads different files, so ranks > 0 write ``bad_files.rank{r}.txt``.
    """
    ds = base_dataset(dataset)
    bad = dict(getattr(ds, "bad_files", {}) or {})
    if not bad:
        return []

    rank = 0
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
    name = "bad_files.txt" if rank == 0 else f"bad_files.rank{rank}.txt"
    lines = [f"# {len(bad)} unreadable image file(s) skipped (as of epoch {epoch})"]
    lines += [f"{p}\t{r}" for p, r in sorted(bad.items())]
    atomic_write_text(Path(output_dir) / name, "\n".join(lines) + "\n")
    log.warning(
        "epoch %s: %d unreadable image(s) skipped, listed in %s", epoch, len(bad), Path(output_dir) / name
    )
    return sorted(bad)
