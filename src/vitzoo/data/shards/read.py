"""WebDataset tar shards (``dataset: webdataset``): labeled for ``vitzoo train``, unlabeled for pre-training.

A shard is a plain tar whose members are grouped into samples by key, the WebDataset convention
(https://github.com/webdataset/webdataset#the-webdataset-format): ``n01440764_10026.jpg`` and
``n01440764_10026.cls`` are the image and the class index (text int) of sample ``n01440764_10026``.
Class names come from ``classes.txt`` (one per line) or ``classes.json`` (a list, or ``{name: index}``)
beside the shards or one folder up; else they are "0".."C-1".

``data_path`` (and ``val_data_path``) may be a folder of ``*.tar`` (its ``train_dir`` / ``val_dir``
sub-folder when present), one ``.tar``, a brace pattern (``/data/train-{000000..000099}.tar``), several of
these joined by ``::`` (WebDataset's list separator), or URLs (``http(s)://``, ``pipe:CMD``, ``gs://``...).

Why two readers. Local shards are indexed once (tar headers only: each member's byte range; a tar member
is stored uncompressed and contiguous, so an image is one ``pread``). That gives a map-style dataset,
and the seeded shuffle, SeededSampler (per-sample augmentation seeds), exact mid-epoch resume,
``train_num_samples`` subsets and the distributed samplers work exactly as for image folders. URLs cannot
be read at random, so they are streamed (:mod:`vitzoo.data.shards.stream`) with a shuffle buffer and an
epoch length of ``train_num_samples``.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import braceexpand

from vitzoo.config import RunConfig
from vitzoo.data.datasets import BaseDataset, _BadImage, open_image, opens_lazily
from vitzoo.data.shards.stream import SHARD_IMAGE_EXTS, StreamedShardDataset
from vitzoo.errors import UserError

URL_PREFIXES = ("http://", "https://", "pipe:", "gs://", "s3://", "ais://", "hf://")
CLASS_FILES = ("classes.txt", "classes.json")
_MAX_OPEN_SHARDS = 64  # file descriptors kept open per process (ulimit -n is often 1024)


def split_key(name: str) -> tuple[str, str]:
    """``dir/abc.seg.png`` -> (``dir/abc``, ``seg.png``): WebDataset's key = path up to the first dot of the
    basename (webdataset.tariterators.base_plus_ext)."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2).lower()) if m else (name, "")


def read_class_names(dirs: Sequence[Path]) -> list[str] | None:
    """``classes.txt`` / ``classes.json`` in the first of ``dirs`` that holds one, else None."""
    for d in dirs:
        txt, js = d / CLASS_FILES[0], d / CLASS_FILES[1]
        if txt.is_file():
            return [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
        if js.is_file():
            data = json.loads(js.read_text())
            if isinstance(data, dict):  # {name: index}
                return [name for name, _ in sorted(data.items(), key=lambda kv: int(kv[1]))]
            if isinstance(data, list):
                return [str(c) for c in data]
            raise UserError(f"{js}: expected a list of class names or {{name: index}}")
    return None


# ------------------------------------------------------------------------------------ where the shards are
def _expand(spec: str) -> list[str]:
    return [u for part in spec.split("::") if part.strip() for u in braceexpand.braceexpand(part.strip())]


def shard_sources(cfg: RunConfig, split: str) -> tuple[list[str], bool] | None:
    """(shard paths or URLs, streamed?) for ``split``; None when there is no validation split."""
    explicit = split == "val" and bool(cfg.val_data_path)
    if not explicit and not cfg.data_path:
        raise UserError("data_path is not set (a folder of .tar shards, a brace pattern or URLs)")
    spec = cfg.val_data_path if explicit else cfg.data_path
    items = [u.removeprefix("file://") for u in _expand(spec)]
    if any(u.startswith(URL_PREFIXES) for u in items):
        return items, True
    if len(items) == 1 and Path(items[0]).is_dir():
        root = Path(items[0])
        sub = root / ((cfg.train_dir if split == "train" else cfg.val_dir) or split)
        if sub.is_dir():
            root = sub
        elif split == "val" and not explicit:
            return None  # data_path/val_dir absent: no validation shards
        tars = sorted(str(p) for p in root.glob("*.tar"))
        if not tars:
            raise UserError(f"no .tar shards in {root} (WebDataset shards: <key>.jpg/.png + <key>.cls)")
        return tars, False
    if split == "val" and not explicit:
        return None  # data_path names the train shards only
    missing = [u for u in items if not Path(u).is_file()]
    if missing:
        raise UserError(f"shard not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                                                           else ""))
    return items, False


# ------------------------------------------------------------------------------------ local: map-style
def index_shard(path: str) -> tuple[list[tuple[str, int, int, int]], str | None]:
    """The samples of one tar: ``(key, image offset, image size, label)`` in tar order; size -1 = no image
    member, label -1 = no ``.cls``. Second value: why the index stopped early (a truncated tar), or None."""
    samples: dict[str, list] = {}
    problem = None
    try:
        with tarfile.open(path, "r:") as tf:  # "r:": uncompressed only (members must be byte ranges)
            try:
                for m in tf:  # reads headers, seeks over the data
                    if not m.isfile():
                        continue
                    key, ext = split_key(m.name)
                    entry = samples.setdefault(key, [key, 0, -1, -1])
                    if ext in SHARD_IMAGE_EXTS and entry[2] < 0:
                        entry[1], entry[2] = m.offset_data, m.size
                    elif ext == "cls":
                        text = tf.extractfile(m).read().decode("utf-8", "replace").strip()
                        entry[3] = int(text) if re.fullmatch(r"\d+", text) else -2
            except (tarfile.ReadError, EOFError, OSError) as e:
                problem = f"truncated or corrupt tar after {len(samples)} samples ({e})"
    except tarfile.ReadError as e:
        raise UserError(f"{path}: not an uncompressed tar shard ({e})") from None
    return [tuple(s) for s in samples.values()], problem


class ShardDataset(BaseDataset):
    """The images of local WebDataset shards, random access through a one-time index of the tars.

    ``labeled``: the label is the sample's ``.cls`` (a sample without one is a bad sample: skipped and
    reported); else 0 for every image. Bad samples are named ``shard.tar:key``.
    """

    def __init__(
        self,
        shards: Sequence[str],
        transform: Callable | None = None,
        *,
        labeled: bool = True,
        classes: Sequence[str] | None = None,
        bad_image_policy: str = "skip",
    ):
        self.shards = [str(s) for s in shards]
        refs, self.keys, labels, broken = [], [], [], []
        for si, path in enumerate(self.shards):
            samples, problem = index_shard(path)
            if problem:
                broken.append((path, problem))
            for key, offset, size, label in samples:
                refs.append((si, offset, size))
                self.keys.append(key)
                labels.append(label if labeled else 0)
        if not refs:
            raise UserError(f"no samples in the {len(self.shards)} shard(s) starting with {self.shards[0]}")
        self._refs = refs
        self.labeled = labeled
        known = [lb for lb in labels if lb >= 0]
        if labeled and not known:
            raise UserError(f"no .cls entries in {self.shards[0]}...: vitzoo train needs labels "
                            "(pretrain ignores them)")
        if classes is None:
            dirs = [Path(self.shards[0]).parent, Path(self.shards[0]).parent.parent]
            classes = (read_class_names(dirs) or [str(i) for i in range(max(known) + 1)]) if labeled else ["images"]
        if labeled and max(known) >= len(classes):
            raise UserError(f"{self.shards[0]}...: class index {max(known)} but {len(classes)} class names")
        super().__init__(list(classes), labels, transform, bad_image_policy)
        for path, problem in broken:  # (counted like an unreadable image; the samples before it are kept)
            self._record_bad(path, problem)
        self._fds: OrderedDict[int, int] = OrderedDict()

    def __getstate__(self) -> dict:  # file descriptors do not travel to spawned workers
        state = dict(self.__dict__)
        state["_fds"] = OrderedDict()
        return state

    def _name(self, record: int) -> str:
        return f"{self.shards[self._refs[record][0]]}:{self.keys[record]}"

    def _fd(self, shard: int) -> int:
        # pread on a shared descriptor has no file position, so forked workers may share it safely
        if shard not in self._fds:
            if len(self._fds) >= _MAX_OPEN_SHARDS:
                os.close(self._fds.popitem(last=False)[1])
            try:
                self._fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
            except FileNotFoundError:
                raise _BadImage("shard disappeared") from None
        self._fds.move_to_end(shard)
        return self._fds[shard]

    def _load(self, record: int):
        shard, offset, size = self._refs[record]
        if size < 0:
            raise _BadImage(f"no image member ({'/'.join(SHARD_IMAGE_EXTS)})")
        if self.labeled and self.labels[record] < 0:
            raise _BadImage("no .cls member" if self.labels[record] == -1 else ".cls is not an integer")
        data = os.pread(self._fd(shard), size, offset)
        if len(data) < size:
            raise _BadImage(f"truncated member ({len(data)} of {size} bytes)")
        return open_image(io.BytesIO(data), lazy=opens_lazily(self.transform))


# ------------------------------------------------------------------------------------ the config's dataset
def build_shard_dataset(
    cfg: RunConfig, split: str, *, labeled: bool = True, classes: Sequence[str] | None = None
) -> ShardDataset | StreamedShardDataset | None:
    """The ``split`` shards of ``cfg`` (no transform yet); None when there are no validation shards."""
    found = shard_sources(cfg, split)
    if found is None:
        return None
    shards, streamed = found
    if not streamed:
        return ShardDataset(shards, labeled=labeled, classes=classes, bad_image_policy=cfg.bad_image_policy)
    key = "train_num_samples" if split == "train" else "val_num_samples"
    num = cfg.train_num_samples if split == "train" else cfg.val_num_samples
    if num <= 0:
        raise UserError(f"streamed shards ({shards[0]}...) have no known length: set {key} (the number of "
                        "images an epoch reads in all)")
    if labeled and classes is None:
        classes = [str(i) for i in range(cfg.num_classes)]  # (a URL has no folder to hold classes.txt)
    return StreamedShardDataset(shards, num, train=split == "train", labeled=labeled,
                                classes=classes if labeled else ["images"], seed=cfg.seed,
                                buffer=cfg.shard_shuffle_buffer, bad_image_policy=cfg.bad_image_policy)
