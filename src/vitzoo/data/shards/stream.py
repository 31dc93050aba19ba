"""Streamed WebDataset shards (URLs: ``http(s)://``, ``pipe:CMD``, ``gs://``...), read with ``webdataset``.

A URL cannot be read at random, so the map-style machinery (seeded sampler, subsets) does not apply;
this iterable dataset reproduces what it can:

- Split: each loader worker of each rank is a *slot* (``rank * workers + worker``); in every round the
  shards, shuffled by (seed, epoch, round), are dealt ``order[slot::slots]`` (what ``wds.split_by_node``
  + ``wds.split_by_worker`` do), and a slot re-reads further rounds until its quota is met. With fewer
  shards than slots, slots share shards (``order[slot % n]``; each still shuffles with its own seed)
  rather than sit idle: DDP ranks must take the same number of steps or the all-reduce waits forever.
- Epoch length: ``train_num_samples`` images in all, cut to whole batches per rank and dealt to the
  workers in whole batches, so ``len(loader)`` is exact and the same on every rank.
- Shuffle: a buffer of ``shard_shuffle_buffer`` samples per slot (``wds.shuffle``), seeded by
  (seed, epoch, slot); augmentation seeded by (seed, epoch, slot, position) as :class:`SeededSampler` does.

Exactness: for a fixed (seed, world size, num_workers, batch_size) the batches of an epoch are the same
on every run, and a mid-epoch resume (``skip_batches``) re-reads and decodes the skipped samples without
transforming them, so it continues with the same batches. Unlike local shards, the batches change with
the number of workers, and an epoch is a sample of the stream, not a permutation of the data set.
Validation reads each shard once (``order[slot::slots]``, no shuffle).
"""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Callable, Iterator, Sequence

import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from vitzoo.data.datasets import BadFileLog, _BadImage, open_image, seeded_augmentation
from vitzoo.data.loader import mix_seed
from vitzoo.errors import UserError

# member extensions read as the image (first found wins), the image formats timm / torchvision read
_SHUFFLE = 0x5348  # seed-domain tag of the shuffle buffers
SHARD_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "pgm", "tif", "tiff")


def _read_error(exn: Exception) -> bool:
    raise UserError(f"reading a streamed shard failed: {exn}") from exn


def _counted(samples: Iterator[dict], seen: list[int]) -> Iterator[dict]:
    for sample in samples:
        seen[0] += 1
        yield sample


class StreamedShardDataset(BadFileLog, IterableDataset):
    """Streamed shards yielding ``(transform(image), label)``; ``set_epoch`` / ``plan`` come from the loader."""

    def __init__(self, urls: Sequence[str], num_samples: int, *, train: bool, labeled: bool,
                 classes: Sequence[str], seed: int, buffer: int, bad_image_policy: str = "skip",
                 transform: Callable | None = None):
        self.urls, self.num_samples, self.train, self.labeled = list(urls), int(num_samples), train, labeled
        self.classes, self.seed, self.buffer = list(classes), seed, buffer
        self.bad_image_policy, self.transform = bad_image_policy, transform
        self.bad_files: dict[str, str] = {}
        self._pending_bad: list[tuple[str, str]] = []
        self.epoch, self.skip_batches = 0, 0
        self.batch_size, self.world, self.rank = 1, 1, 0

    # -- what the loader tells it ----------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self, batch_size: int, world: int, rank: int) -> None:
        self.batch_size, self.world, self.rank = batch_size, world, rank

    def __len__(self) -> int:
        """Samples this rank yields: whole batches for train; about num_samples / world for val."""
        per_rank = self.num_samples // self.world
        return per_rank // self.batch_size * self.batch_size if self.train else per_rank

    # -- reading -----------------------------------------------------------------------------------
    def _stream(self, slot: int, slots: int) -> Iterator[dict]:
        """This slot's raw samples, round after round (train) or one pass (val). Each round is shuffled
        on its own and drained before the next starts, so when the quota is one pass, the epoch is one
        pass over the slot's shards."""
        n, seen, before = len(self.urls), [0], -1
        for rnd in itertools.count() if self.train else [0]:
            if seen[0] == before:  # a whole round gave no sample: repeating would loop forever
                raise UserError(f"the shards {self.urls[0]}... hold no samples")
            before = seen[0]
            order = list(self.urls)
            if self.train:
                random.Random(mix_seed(self.seed, self.epoch, rnd)).shuffle(order)
            mine = order[slot::slots] if n >= slots or not self.train else [order[slot % n]]
            raw = _counted(wds.tarfile_to_samples(handler=_read_error)({"url": u} for u in mine), seen)
            if self.train:  # (_SHUFFLE: a seed domain apart from the augmentation seeds below)
                rng = random.Random(mix_seed(self.seed, self.epoch, slot, rnd, _SHUFFLE))
                raw = wds.shuffle(self.buffer, min(self.buffer, 100), rng=rng)(raw)
            yield from raw

    def _decode(self, sample: dict) -> tuple[Image.Image, int] | None:
        """The sample's image and label, or None (recorded) when it has no readable image / label."""
        name = f"{sample.get('__url__')}:{sample.get('__key__')}"
        ext = next((e for e in SHARD_IMAGE_EXTS if e in sample), None)
        try:
            if ext is None:
                raise _BadImage(f"no image member ({'/'.join(SHARD_IMAGE_EXTS)})")
            label = 0
            if self.labeled:
                text = sample.get("cls", b"").decode("utf-8", "replace").strip()
                if not text.isdigit():
                    raise _BadImage("no .cls member" if not text else ".cls is not an integer")
                label = int(text)
            # decoded here, not lazily: whether a sample counts as a position must not wait for its transform
            return open_image(io.BytesIO(sample[ext])), label
        except _BadImage as e:
            if self.bad_image_policy == "error":
                raise UserError(f"unreadable image {name}: {e} (set bad_image_policy: skip to skip such "
                                "files)") from None
            self._record_bad(name, str(e))
            return None

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # A resumed loader starts its round-robin at worker 0, but batch skip_batches belongs to worker
        # skip_batches % workers: so loader worker w plays the part of worker (w + skip) % workers.
        worker = (worker + self.skip_batches) % workers
        slot, slots = self.rank * workers + worker, self.world * workers
        if self.train:  # whole batches per worker: batch k of the rank comes from worker k % workers
            nb = len(self) // self.batch_size
            quota = (nb // workers + (worker < nb % workers)) * self.batch_size
            skip = (self.skip_batches // workers + (worker < self.skip_batches % workers)) * self.batch_size
        else:
            quota, skip = None, 0
        if quota == 0:
            return
        position, misses = 0, 0
        for sample in self._stream(slot, slots):
            item = self._decode(sample)
            if item is None:
                if self.train and position == 0 and (misses := misses + 1) > 1000:
                    raise UserError(f"no readable image in the first 1000 samples of {self.urls[0]}...")
                continue
            if position >= skip:
                img, label = item
                if self.transform is not None:
                    with seeded_augmentation(mix_seed(self.seed, self.epoch, slot, position)):
                        img = self.transform(img)
                yield img, label
            position += 1
            if quota is not None and position >= quota:
                return
