"""What a run tells its user: console progress, a log file, TensorBoard scalars, metrics JSONL/CSV.

Only rank 0 reports. On a terminal each epoch gets a tqdm bar (rate, ETA, loss, lr); otherwise (a log
file, a CI job, ``nohup``) a plain line every ``print_loss_every`` updates. ``metrics.jsonl`` holds one
JSON object per epoch (keys in :data:`METRIC_KEYS`; ``vitzoo plot`` reads it) and ``metrics.csv`` the
same table; both are rewritten atomically each epoch, so a killed run never leaves half a line.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vitzoo.checkpoint import atomic_write_text, make_folder
from vitzoo.engine import dist

METRIC_KEYS = ("epoch", "step", "train_loss", "lr", "val_loss", "val_top1", "val_top5", "val_mim_acc",
               "img_per_sec", "time", "skipped_steps", "data_wait")
# val_mim_acc: masked-token accuracy (pretrain); data_wait: the share of the epoch spent waiting for the loader
# metrics.jsonl only (a list does not fit a CSV cell): [[global step, lr], ...] sampled over the epoch, so
# `vitzoo plot` draws warmup and the schedule's shape, not one lr per epoch
LOADER_BOUND_ABOVE = 0.25  # an epoch that waited longer than this share of its time for data was loader-bound
LR_TRACE_KEY = "lr_steps"
LR_TRACE_POINTS = 32  # per epoch, at most
LOGGER = "vitzoo.train"


def setup_logger(log_file: Path | None, main: bool) -> logging.Logger:
    """Console (stdout, message only) + ``log_file`` (timestamped) on rank 0; warnings only elsewhere."""
    log = logging.getLogger(LOGGER)
    close_logger(log)
    log.setLevel(logging.INFO)
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.INFO if main else logging.WARNING)
    log.addHandler(console)
    if main and log_file is not None:
        make_folder(log_file.parent)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(fh)
    return log


def close_logger(log: logging.Logger) -> None:
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


class Tensorboard:
    """A SummaryWriter on rank 0, or nothing (other ranks; tensorboard not installed)."""

    def __init__(self, folder: Path, enabled: bool, log: logging.Logger) -> None:
        self.writer = None
        self._window: list[float] = []  # finite update losses since the last loss scalar
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(folder))
            except ImportError as e:  # pragma: no cover - tensorboard is a dependency
                log.warning("TensorBoard disabled: %s", e)

    def scalars(self, step: int, **values: float | None) -> None:
        if self.writer is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(v):
                    self.writer.add_scalar(k, v, step)

    def loss_window(self, step: int, loss: float, lr: float, every: int) -> None:
        """train/loss as the mean over the last ``every`` updates (summary_loss_collect_freq), and train/lr."""
        if not math.isnan(loss):
            self._window.append(loss)
        if step % every == 0 and self._window:
            self.scalars(step, **{"train/loss": sum(self._window) / len(self._window), "train/lr": lr})
            self._window = []

    def epoch(self, step: int, stats: EpochStats, metrics: dict[str, Any]) -> None:
        self.scalars(step, **{"train/img_per_sec": stats.img_per_sec, "train/epoch_loss": stats.loss,
                              "train/data_wait": stats.data_wait,
                              "val/loss": metrics.get("Loss"), "val/top1": metrics.get("Top1-Acc"),
                              "val/top5": metrics.get("Top5-Acc")})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class EpochStats:
    """One epoch's training numbers: mean loss, updates skipped, throughput (summed over processes)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.loss_sum, self.losses, self.samples, self.skipped = 0.0, 0, 0, 0
        self.seconds, self.img_per_sec = 0.0, 0.0
        self.data_seconds, self.data_wait = 0.0, 0.0  # waited for the loader: seconds, share of the epoch
        self.lr_trace: list[list[float]] = []  # [global step, lr] of every update

    def add(self, info: Any) -> None:
        """One :class:`~vitzoo.engine.loop.UpdateInfo`."""
        self.loss_sum += info.loss * info.losses if info.losses else 0.0
        self.losses += info.losses
        self.samples, self.skipped = info.samples, self.skipped + info.skipped
        self.data_seconds = info.data_seconds
        self.lr_trace.append([info.global_step, info.lr])

    @property
    def loss(self) -> float:
        return self.loss_sum / self.losses if self.losses else float("nan")

    def finish(self, device: torch.device, world: int) -> None:
        """Stop the clock; throughput and skipped updates over all processes (an all-reduce)."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        totals = dist.all_reduce_sum(torch.tensor([float(self.samples), float(self.skipped), self.data_seconds],
                                                  device=device, dtype=torch.float64))
        samples, skipped, data_seconds = totals.tolist()  # host sync
        self.img_per_sec = samples / self.seconds if self.seconds > 0 else 0.0
        self.skipped = int(skipped / world)  # every process skipped the same updates
        self.data_wait = data_seconds / world / self.seconds if self.seconds > 0 else 0.0  # the processes' mean

    def data_wait_note(self, workers: int, cpus: int, remedy: str = "") -> str:
        """'waited for data 12%' -- and, where that is more than LOADER_BOUND_ABOVE of the epoch, that the
        loader set the pace (as on an H100 fed by 8 workers: 881 img/s of the 5,148 the step takes), with
        ``workers`` (loader processes per training process) against the ``cpus`` this process may use, and
        ``remedy`` (another setting that would help) where every CPU already has a worker."""
        note = f"waited for data {100 * self.data_wait:.0f}%"
        if self.data_wait > LOADER_BOUND_ABOVE:
            room = "raise num_workers" if workers < cpus else (remedy or "each CPU already has one")
            note += f" (the loader set the pace: {workers} loader worker(s) per process, {cpus} CPU(s); {room})"
        return note

    def row(self, epoch: int, step: int, lr: float, metrics: dict[str, Any]) -> dict[str, Any]:
        """This epoch's line of metrics.jsonl (keys: METRIC_KEYS)."""
        return {"epoch": epoch, "step": step, "train_loss": self.loss, "lr": lr, "val_loss": metrics.get("Loss"),
                "val_top1": metrics.get("Top1-Acc"), "val_top5": metrics.get("Top5-Acc"),
                "val_mim_acc": metrics.get("MIM-Acc"),
                "img_per_sec": self.img_per_sec, "time": self.seconds, "skipped_steps": self.skipped,
                "data_wait": self.data_wait, LR_TRACE_KEY: evenly_spaced(self.lr_trace, LR_TRACE_POINTS)}


def evenly_spaced(points: list, n: int) -> list:
    """About ``n`` of ``points`` at an even stride, the first and the last always among them."""
    kept = points[::max(1, math.ceil(len(points) / n))]
    return kept + points[-1:] if points and kept[-1] is not points[-1] else kept


class MetricsFile:
    """Per-epoch rows in ``metrics.jsonl`` + ``metrics.csv`` (rows after a resume point are dropped)."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.jsonl, self.csv = folder / "metrics.jsonl", folder / "metrics.csv"
        self.enabled = enabled
        self.rows: list[dict[str, Any]] = []

    def load(self, upto_epoch: int) -> None:
        """Keep the rows of a previous run up to ``upto_epoch`` (resume)."""
        if not self.jsonl.is_file():
            return
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and int(row.get("epoch", 0)) <= upto_epoch:
                self.rows.append(row)

    def add(self, row: dict[str, Any]) -> None:
        """``row``: the METRIC_KEYS (missing ones null), then any keys a task adds (train-tokenizer's recon_mse,
        perplexity, ...), which the CSV gets as further columns (all but the lr trace: one value per cell)."""
        self.rows.append({k: row.get(k) for k in METRIC_KEYS} | {k: v for k, v in row.items() if k not in METRIC_KEYS})
        if not self.enabled:
            return
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))
        task_keys = dict.fromkeys(k for r in self.rows for k in r if k not in METRIC_KEYS and k != LR_TRACE_KEY)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*METRIC_KEYS, *task_keys], lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.csv, buf.getvalue())


class Progress:
    """One epoch's progress: a tqdm bar on a terminal, else a plain line every ``every`` updates."""

    def __init__(self, epoch: int, epochs: int, total: int, initial: int, every: int, enabled: bool,
                 log: logging.Logger, batch_size: int) -> None:
        self.epoch, self.epochs, self.total, self.every = epoch, epochs, total, max(1, every)
        self.log, self.enabled, self.batch_size = log, enabled, batch_size
        self.start, self.done0 = time.perf_counter(), initial
        self.bar = None
        if enabled and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                            dynamic_ncols=True, leave=True)

    def update(self, done: int, global_step: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)
            return
        if done % self.every and done != self.total:
            return
        elapsed = time.perf_counter() - self.start
        rate = (done - self.done0) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        self.log.info("epoch %d/%d step %d/%d (global %d) loss %.4f lr %.4g %.1f img/s eta %s",
                      self.epoch + 1, self.epochs, done, self.total, global_step, loss, lr,
                      rate * self.batch_size, time.strftime("%H:%M:%S", time.gmtime(eta)))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
