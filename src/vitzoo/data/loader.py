"""DataLoaders: samplers (shuffle / repeated augmentation / distributed), seeded workers, bad-file relay.

Train: a seeded shuffle that depends on (seed, epoch) only, so a resumed run sees the same order
(``loader.sampler.set_epoch(epoch)`` each epoch; :func:`set_epoch` does it); DeiT's repeated-augmentation
sampler (timm ``RepeatAugSampler``) when ``repeated_aug``; ``drop_last`` keeps batches full (Mixup needs an
even batch). Val: in order, and under torch.distributed each rank takes every world_size-th sample with
no padding, so sums all-reduced over ranks equal the one-process numbers exactly.

Workers keep their own dataset copies; :func:`relay_collate` (run inside the worker) appends the bad files
that copy found to the batch, and :class:`Loader` strips them off and records them in the main process.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DataLoader, IterableDataset, Sampler, default_collate, get_worker_info

from vitzoo.config import RunConfig
from vitzoo.data.datasets import SampleKey, base_dataset
from vitzoo.data.device.decode import EncodedBatch, EncodedCrop
from vitzoo.data.transforms import build_eval_transform, build_train_transform
from vitzoo.data.workers import worker_init
from vitzoo.errors import UserError

log = logging.getLogger("vitzoo")


class OrderedSplitSampler(Sampler[int]):
    """Rank ``r`` of ``w`` gets indices ``r, r + w, r + 2w, ...``: every sample exactly once, no padding.

    (torch's DistributedSampler and timm's OrderedDistributedSampler pad the last round with duplicates,
    which double-counts those samples in an all-reduced accuracy.)
    """

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0):
        self.n, self.num_replicas, self.rank = len(dataset), int(num_replicas), int(rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from small integers (splitmix64 finaliser over each part in turn)."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = (h ^ (part & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 29
    return h >> 1


class SeededSampler(Sampler[SampleKey]):
    """Wraps a train sampler: each position of an epoch gets its own augmentation seed.

    The seed is ``mix_seed(seed, epoch, rank, position)``: a function of where the sample falls in this
    rank's epoch, not of which worker loads it. Position rather than index because the repeated-
    augmentation sampler yields an index several times per epoch and each copy needs its own draws.
    """

    def __init__(self, sampler: Sampler[int], seed: int, rank: int = 0) -> None:
        self.sampler, self.seed, self.rank, self.epoch = sampler, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[SampleKey]:
        for position, index in enumerate(self.sampler):
            yield SampleKey(int(index), mix_seed(self.seed, self.epoch, self.rank, position))

    def __len__(self) -> int:
        return len(self.sampler)


def relay_collate(batch: list) -> tuple:
    """Default collate (or, for ``decode_on: device``, :meth:`EncodedBatch.collate`) + the bad files this
    worker's dataset copy found since the last batch."""
    if isinstance(batch[0][0], EncodedCrop):
        x, y = EncodedBatch.collate([s for s, _ in batch]), torch.tensor([label for _, label in batch])
    else:
        x, y = default_collate(batch)
    info = get_worker_info()
    bad = []
    if info is not None:  # in the main process the dataset records into .bad_files directly
        ds = base_dataset(info.dataset)
        if hasattr(ds, "drain_pending_bad"):
            bad = ds.drain_pending_bad()
    return x, y, bad


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which SLURM and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def _clean_worker_error(e: UserError) -> UserError:
    """torch re-raises a worker's exception with the worker traceback in its message; keep the last line."""
    msg = str(e)
    if "Original Traceback" in msg:
        last = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
        msg = last.split("UserError: ", 1)[-1]
    return UserError(msg)


class Loader(DataLoader):
    """A DataLoader yielding ``(images, labels)`` that relays bad-file records from worker processes."""

    _primed = False  # start_workers() made the iterator that the next pass uses as it is

    def start_workers(self) -> None:
        """Fork this loader's persistent workers now; the next pass reads the batches they fetch meanwhile.

        Why: a worker forked later, after a CPU training step has grown the heap (vitzoo keeps freed memory
        in the process: :mod:`vitzoo.runtime.host_allocator`), shares every page of it copy-on-write, and
        the next training epoch copies each page it writes once more. Measured on the 2-core AVX2 EPYC
        (benchmarks/bench_train_loop.py, deit_tiny 224 px, batch 32, 2 workers, fp32): the epoch after the
        first validation took 279-298k page faults in the main process against 2-12k for a plain timm loop,
        and ran 0.87x its img/s (rounds 0.73-1.10); forked first, 1.1-4.8k faults and 1.13x (1.09-1.25).
        Only for a loader whose order is fixed (validation): a train sampler is set per epoch.
        """
        if self.persistent_workers and self.num_workers > 0 and self._iterator is None:
            self._iterator = self._get_iterator()
            self._primed = True

    def __iter__(self):
        ds = base_dataset(self.dataset)
        if self._primed:  # (DataLoader.__iter__ would reset it, dropping the batches fetched already)
            self._primed = False
            it = self._iterator
        else:
            it = super().__iter__()
        while True:
            try:
                x, y, bad = next(it)
            except StopIteration:
                return
            except UserError as e:
                raise _clean_worker_error(e) from None
            if bad and hasattr(ds, "merge_bad_files"):
                ds.merge_bad_files(bad)
            yield x, y


def _dist_info(distributed: bool) -> tuple[int, int]:
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def build_loader(
    cfg: RunConfig, dataset: Any, split: str, *, data_config: dict | None = None, distributed: bool = False
) -> Loader:
    """The train or val DataLoader for ``dataset``.

    ``data_config`` (from :func:`resolve_data_config`), when given, (re)builds the dataset's transform
    for ``split``. ``distributed`` uses the initialised process group's rank / world size.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if data_config is not None:
        ds = base_dataset(dataset)
        ds.transform = (
            build_train_transform(cfg, data_config) if split == "train" else build_eval_transform(data_config)
        )
    world, rank = _dist_info(distributed)
    seed = cfg.seed
    train = split == "train"
    batch_size = cfg.batch_size if train else cfg.eval_batch
    if isinstance(dataset, IterableDataset):
        return _streamed_loader(cfg, dataset, train, batch_size, world, rank)
    if train and cfg.repeated_aug:
        # DeiT's RASampler: 3 augmented copies of each image per epoch, spread over ranks; the epoch is
        # cut back to len(dataset) / world samples per rank, so epochs keep their length.
        sampler: Sampler = RepeatAugSampler(dataset, num_replicas=world, rank=rank, shuffle=True)
    elif train:
        # (seed, epoch)-determined shuffle for one process too, so resuming reproduces the order
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
    else:
        sampler = OrderedSplitSampler(dataset, world, rank)
    if train:
        sampler = SeededSampler(sampler, seed, rank)
    workers = min(cfg.num_workers, usable_cpus())
    if workers < cfg.num_workers and train:
        log.info("num_workers %d -> %d: this process may use %d CPU(s); more workers only compete for them "
                 "(the batches do not depend on the number of workers)", cfg.num_workers, workers, workers)
    pin = cfg.pin_mem and torch.cuda.is_available()
    loader = Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=relay_collate,
        pin_memory=pin,
        drop_last=train,
        worker_init_fn=worker_init(),
        persistent_workers=workers > 0 and cfg.persistent_workers,
        generator=torch.Generator().manual_seed(seed * 1000 + rank),
        prefetch_factor=2 if workers > 0 else None,
    )
    if train and len(loader) == 0:
        raise UserError(
            f"the train set has {len(sampler)} samples per process, fewer than one batch of "
            f"{batch_size} (the last partial batch is dropped); lower batch_size"
        )
    return loader


def _streamed_loader(cfg: RunConfig, dataset: Any, train: bool, batch_size: int, world: int, rank: int) -> Loader:
    """The loader of a streamed (iterable) dataset, e.g. shards from URLs: it splits, shuffles and seeds
    itself (:mod:`vitzoo.data.shards.stream`), so no sampler. Workers are not persistent: each epoch's
    workers must take a fresh copy of the dataset, which carries the epoch."""
    dataset.plan(batch_size, world, rank)
    workers = min(cfg.num_workers, usable_cpus())
    loader = Loader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=relay_collate,
                    pin_memory=cfg.pin_mem and torch.cuda.is_available(), drop_last=train,
                    worker_init_fn=worker_init(), prefetch_factor=2 if workers > 0 else None)
    if train and len(loader) == 0:
        raise UserError(f"the streamed train set has {len(dataset)} samples per process, fewer than one "
                        f"batch of {batch_size}; raise train_num_samples or lower batch_size")
    return loader


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's sampler (or streamed dataset) which epoch it is (reshuffles deterministically)."""
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(getattr(loader, "dataset", None), "set_epoch"):
        loader.dataset.set_epoch(epoch)


class _SkipBatches:
    """A batch sampler that drops the first ``n`` batches of another (mid-epoch resume: no data is read)."""

    def __init__(self, batch_sampler: Any, n: int) -> None:
        self.batch_sampler, self.n = batch_sampler, n

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.n:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.n)


def loader_from_batch(loader: Any, n: int) -> Any:
    """The same loader (class, workers, collate, generator) starting at batch ``n`` of this epoch."""
    if n <= 0:
        return loader
    if isinstance(loader.dataset, IterableDataset):  # no batch sampler: the dataset skips (and re-reads)
        dataset = copy.copy(loader.dataset)  # (shallow: bad_files stays shared with the original)
        dataset.skip_batches = n
        kw = {"batch_size": loader.batch_size, "drop_last": loader.drop_last, "num_workers": loader.num_workers,
              "collate_fn": loader.collate_fn, "pin_memory": loader.pin_memory,
              "worker_init_fn": loader.worker_init_fn}
        if loader.num_workers > 0:
            kw["prefetch_factor"] = loader.prefetch_factor
        return type(loader)(dataset, **kw)
    kw = {"batch_sampler": _SkipBatches(loader.batch_sampler, n), "num_workers": loader.num_workers,
          "collate_fn": loader.collate_fn, "pin_memory": loader.pin_memory,
          "worker_init_fn": loader.worker_init_fn, "generator": loader.generator}
    if loader.num_workers > 0:
        kw["prefetch_factor"] = loader.prefetch_factor
    return type(loader)(loader.dataset, **kw)
