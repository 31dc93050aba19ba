"""The training step loop and the evaluation loop (DeiT engine.py's shape, written afresh).

One optimiser update = ``update_freq`` micro-batches (gradient accumulation, BEiT's recipe). Each
micro-batch: to device -> mixup -> forward under the precision's autocast -> fp32 loss -> (scaled)
backward. At the update boundary: agree across processes whether any loss was non-finite (skip the
update or stop), unscale + clip by global norm, step, EMA, scheduler.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.engine import dist
from vitzoo.errors import UserError
from vitzoo.runtime.precision import FP32, Precision


class NonFiniteLossError(UserError):
    """Raised (policy 'stop') when a loss or gradient norm is NaN/inf; the run names the last good checkpoint."""

    def __init__(self, msg: str, global_step: int, epoch: int) -> None:
        super().__init__(msg)
        self.global_step, self.epoch = global_step, epoch


@dataclass
class TrainStep:
    """Everything an optimiser update touches, built once per run (the trainer) or per test."""

    model: nn.Module
    criterion: Callable[[Any, Any, Any], torch.Tensor]  # DistillationLoss(inputs, out, y)
    optimizer: torch.optim.Optimizer
    device: torch.device
    precision: Precision = FP32
    scheduler: Any = None
    scaler: Any = None  # GradScaler / FixedLossScaler when fp16 is in play
    mixup: Callable | None = None
    clip_grad: float | None = None
    update_freq: int = 1
    ema: Any = None
    nonfinite_policy: str = "skip"
    channels_last: bool = False
    # outputs = forward(model, x, y); None = model(x). Pre-training passes the mask and computes targets
    forward: Callable[[nn.Module, Any, Any], Any] | None = None
    # augment_on: device -- (loader batch, labels, device) -> the augmented, normalised images and their
    # labels on the device
    device_augment: Callable[[Any, torch.Tensor, torch.device], tuple[torch.Tensor, torch.Tensor]] | None = None


@dataclass
class UpdateInfo:
    """What ``on_update`` sees after every optimiser update."""

    epoch: int
    batch: int  # micro-batches of this epoch consumed so far (the sampler position)
    global_step: int  # optimiser updates so far, this one included
    loss: float  # mean loss of this update's micro-batches (nan if skipped)
    losses: int  # how many micro-batch losses that mean holds (0 if skipped)
    lr: float
    skipped: bool
    samples: int  # samples this process has seen this epoch
    data_seconds: float = 0.0  # of this epoch so far, how long this process waited for the loader


def train_one_epoch(step: TrainStep, loader: Iterable, *, epoch: int = 0, start_batch: int = 0,
                    num_batches: int | None = None, global_step: int = 0,
                    on_update: Callable[[UpdateInfo], None] | None = None) -> dict[str, float]:
    """Train over ``loader`` (already positioned at micro-batch ``start_batch``) up to ``num_batches``.

    Returns ``{"loss", "updates", "skipped", "samples", "global_step"}`` for this process.
    """
    loss_sum, loss_n, skipped, updates, samples = 0.0, 0, 0, 0, 0
    for info in iter_updates(step, loader, epoch=epoch, start_batch=start_batch, num_batches=num_batches,
                             global_step=global_step):
        loss_sum += info.loss * info.losses if info.losses else 0.0
        loss_n, skipped, updates = loss_n + info.losses, skipped + info.skipped, updates + 1
        samples, global_step = info.samples, info.global_step
        if on_update is not None:
            on_update(info)
    return {"loss": loss_sum / loss_n if loss_n else float("nan"), "updates": updates, "skipped": skipped,
            "samples": samples, "global_step": global_step}


def iter_updates(step: TrainStep, loader: Iterable, *, epoch: int = 0, start_batch: int = 0,
                 num_batches: int | None = None, global_step: int = 0) -> Iterator[UpdateInfo]:
    """The epoch as a stream of optimiser updates: forward, loss, backward (x update_freq), then clip,
    step, EMA, schedule; yields after each update so the caller can log and checkpoint between them."""
    step.model.train()
    step.optimizer.zero_grad(set_to_none=True)
    window: list[float] = []  # losses of this update's micro-batches (nan included)
    samples, waited = 0, [0.0]
    for i, (x, y) in enumerate(_timed(loader, waited), start=start_batch):
        if num_batches is not None and i >= num_batches:
            break
        x, y = _prepare(step, x, y)
        boundary = (i + 1) % step.update_freq == 0
        window.append(_forward_backward(step, x, y, sync_grads=boundary))
        samples += y.shape[0]
        if not boundary:
            continue
        skipped = _update(step, any(not math.isfinite(v) for v in window), epoch, global_step)
        lr = step.scheduler.get_lr() if step.scheduler is not None else step.optimizer.param_groups[0]["lr"]
        if step.scheduler is not None:
            step.scheduler.step()
        global_step += 1
        good = [] if skipped else window
        mean = sum(good) / len(good) if good else float("nan")
        window = []
        yield UpdateInfo(epoch, i + 1, global_step, mean, len(good), lr, skipped, samples, waited[0])


def _timed(loader: Iterable, waited: list[float]) -> Iterator[Any]:
    """The loader's batches, adding the seconds spent waiting for each (worker start-up included) to
    ``waited[0]``: the share of an epoch spent there says whether the loader or the step sets the pace
    (the host blocks on every step's loss, so a step does not run ahead of it)."""
    batches = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - start
        yield batch


def _prepare(step: TrainStep, x: Any, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
    if step.device_augment is not None:  # crops (or JPEG bytes) + their augmentation plans -> images
        x, y = step.device_augment(x, y, step.device)
    y = y.to(step.device, non_blocking=True)
    if not isinstance(x, torch.Tensor):  # a sample of several parts (pre-training: images, view, mask)
        first, *rest = (t.to(step.device, non_blocking=True) for t in x)
        return (step.precision.cast_input(first), *rest), y
    x = x.to(step.device, non_blocking=True)  # (a no-op after device_augment)
    if step.mixup is not None:
        x, y = step.mixup(x, y)
    if step.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return step.precision.cast_input(x), y


def _forward_backward(step: TrainStep, x: torch.Tensor, y: torch.Tensor, sync_grads: bool) -> float:
    """Forward, loss, (scaled) backward of one micro-batch; returns the loss value (maybe non-finite)."""
    model = step.model
    # DDP: all-reduce gradients only on the last micro-batch of an update
    sync = nullcontext() if sync_grads or not hasattr(model, "no_sync") else model.no_sync()
    with sync:
        with step.precision.context(step.device):
            outputs = step.forward(model, x, y) if step.forward is not None else model(x)
            loss = step.criterion(x, outputs, y)  # fp32: the losses upcast the logits
        value = loss.item()  # host sync: the non-finite guard needs it (DeiT engine.py does too)
        scaled = loss / step.update_freq
        (step.scaler.scale(scaled) if step.scaler is not None else scaled).backward()
    return value


def _update(step: TrainStep, bad: bool, epoch: int, global_step: int) -> bool:
    """Clip, step and EMA -- or skip the update (or stop) when a loss or the grad norm is non-finite.

    Returns whether the update was skipped.
    """
    if dist.is_dist():  # every process must skip (or stop) together, or DDP deadlocks
        flag = torch.tensor([1.0 if bad else 0.0], device=step.device)
        bad = bool(dist.all_reduce_sum(flag).item() > 0)  # host sync (DDP only)
    what = "loss"
    if not bad and step.clip_grad:
        if step.scaler is not None:
            step.scaler.unscale_(step.optimizer)
        params = [p for g in step.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, float(step.clip_grad), foreach=True)
        # fp16: GradScaler already skips inf grads itself; otherwise a NaN norm would poison weights
        if step.scaler is None and not math.isfinite(norm.item()):  # host sync
            bad, what = True, "gradient norm"
    if bad:
        step.optimizer.zero_grad(set_to_none=True)
        if step.nonfinite_policy == "stop":
            raise NonFiniteLossError(f"non-finite {what} at epoch {epoch}, update {global_step + 1}",
                                     global_step + 1, epoch)
        return True
    if step.scaler is not None:
        step.scaler.step(step.optimizer)
        step.scaler.update()
    else:
        step.optimizer.step()
    step.optimizer.zero_grad(set_to_none=True)
    if step.ema is not None:
        step.ema.update(step.model)
    return False


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str, *, precision: Precision = FP32,
             num_classes: int | None = None, confusion: bool = False,
             channels_last: bool = False) -> dict[str, Any]:
    """Mean CE loss (per sample), top-1 and top-5 accuracy as fractions, as the seeds print them.

    Sums are all-reduced over processes, so a distributed evaluation (without padded duplicates)
    gives exactly the single-process numbers. Distilled models' two heads are averaged (DeiT eval).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, count
    conf = None
    try:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with precision.context(device):
                out = model(precision.cast_input(x))
            if isinstance(out, (tuple, list)):
                out = (out[0] + out[1]) / 2
            out = out.float()
            c = num_classes or out.shape[1]
            topk = out.topk(min(5, out.shape[1]), dim=1).indices
            hit = topk.eq(y.view(-1, 1))
            stats += torch.stack([
                F.cross_entropy(out, y, reduction="sum").double(),
                hit[:, 0].sum().double(), hit.any(dim=1).sum().double(),
                torch.tensor(float(y.numel()), dtype=torch.float64, device=device)])
            if confusion:
                if conf is None:
                    conf = torch.zeros(c * c, dtype=torch.int64, device=device)
                conf += torch.bincount(y * c + topk[:, 0], minlength=c * c)
    finally:
        model.train(was_training)
    return _reduce_metrics(stats, conf, num_classes, confusion, device)


def _reduce_metrics(stats: torch.Tensor, conf: torch.Tensor | None, num_classes: int | None, confusion: bool,
                    device: torch.device) -> dict[str, Any]:
    dist.all_reduce_sum(stats)
    loss_sum, top1, top5, n = stats.tolist()  # host sync
    if n == 0:
        raise UserError("the validation set is empty: nothing to evaluate")
    result: dict[str, Any] = {"Loss": loss_sum / n, "Top1-Acc": top1 / n, "Top5-Acc": top5 / n}
    if confusion:
        c = num_classes or (math.isqrt(conf.numel()) if conf is not None else 0)
        if conf is None:
            conf = torch.zeros(c * c, dtype=torch.int64, device=device)
        dist.all_reduce_sum(conf)
        result["confusion"] = conf.view(c, c).cpu()
    return result


def format_eval(metrics: dict[str, Any]) -> str:
    """The seeds' line: ``eval results: {'Loss': 1.4204, 'Top1-Acc': 0.731066, 'Top5-Acc': 0.90621}``."""
    shown = {"Loss": round(float(metrics["Loss"]), 4), "Top1-Acc": round(float(metrics["Top1-Acc"]), 6),
             "Top5-Acc": round(float(metrics["Top5-Acc"]), 6)}
    return f"eval results: {shown}"
