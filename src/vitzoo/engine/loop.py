"""The training step loop and the evaluation loop (DeiT engine.py's shape, written afresh).

One optimiser update = ``update_freq`` micro-batches (gradient accumulation, BEiT's recipe). Each
micro-batch: move to device -> mixup -> forward under autocast -> fp32 loss -> non-finite check ->
(scaled) backward. At the update boundary: agree across processes whether any loss was non-finite
(skip the update or stop), unscale + clip by global norm, step, EMA, scheduler.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.engine import dist
from vitzoo.errors import UserError


class NonFiniteLossError(UserError):
    """Raised (policy 'stop') when a loss or gradient norm is NaN/inf; the run names the last good checkpoint."""

    def __init__(self, msg: str, global_step: int, epoch: int) -> None:
        super().__init__(msg)
        self.global_step, self.epoch = global_step, epoch


@dataclass
class UpdateInfo:
    """What ``on_update`` sees after every optimiser update."""

    epoch: int
    batch: int  # micro-batches of this epoch consumed so far (the sampler position)
    global_step: int  # optimiser updates so far, this one included
    loss: float  # mean loss of this update's micro-batches (nan if skipped)
    lr: float
    skipped: bool
    samples: int  # samples this process has seen this epoch


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _clip(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def train_one_epoch(
    model: nn.Module,
    criterion: Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor],
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    epoch: int = 0,
    scheduler: Any = None,
    scaler: Any = None,
    amp_dtype: torch.dtype | None = None,
    input_dtype: torch.dtype | None = None,
    mixup_fn: Callable | None = None,
    clip_grad: float | None = None,
    update_freq: int = 1,
    model_ema: Any = None,
    nonfinite_policy: str = "skip",
    start_batch: int = 0,
    num_batches: int | None = None,
    global_step: int = 0,
    channels_last: bool = False,
    on_update: Callable[[UpdateInfo], None] | None = None,
) -> dict[str, float]:
    """Train over ``loader`` (already positioned at micro-batch ``start_batch``) up to ``num_batches``.

    ``criterion(inputs, outputs, targets)`` is a :class:`~vitzoo.engine.losses.DistillationLoss`.
    Returns ``{"loss", "updates", "skipped", "samples", "global_step"}`` for this process.
    """
    model.train()
    update_freq = max(1, int(update_freq))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    loss_sum, loss_n, skipped, updates, samples = 0.0, 0, 0, 0, 0
    window_loss, window_n, window_bad = 0.0, 0, False
    optimizer.zero_grad(set_to_none=True)
    i = start_batch - 1
    for i, (x, y) in enumerate(loader, start=start_batch):
        if num_batches is not None and i >= num_batches:
            break
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if mixup_fn is not None:
            x, y = mixup_fn(x, y)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if input_dtype is not None:
            x = x.to(input_dtype)
        boundary = (i + 1) % update_freq == 0
        # DDP: all-reduce gradients only on the last micro-batch of an update
        sync = model.no_sync() if (not boundary and hasattr(model, "no_sync")) else nullcontext()
        with sync:
            with autocast(device, amp_dtype):
                outputs = model(x)
                loss = criterion(x, outputs, y)  # fp32: the losses upcast the logits
            loss_value = loss.item()  # host sync: the non-finite guard needs it (DeiT engine.py does too)
            if not math.isfinite(loss_value):
                window_bad = True
            else:
                window_loss += loss_value
                window_n += 1
            scaled = loss / update_freq
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        samples += x.shape[0]
        if not boundary:
            continue

        # ---------------------------------------------------------------- the optimiser update
        bad = window_bad
        if dist.is_dist():  # every process must skip (or stop) together, or DDP deadlocks
            flag = torch.tensor([1.0 if bad else 0.0], device=device)
            bad = bool(dist.all_reduce_sum(flag).item() > 0)  # host sync (DDP only)
        what = "loss"
        if not bad and clip_grad:
            if scaler is not None:
                scaler.unscale_(optimizer)
            norm = _clip(params, float(clip_grad))
            # fp16: GradScaler already skips inf grads itself; otherwise a NaN norm would poison weights
            if scaler is None and not math.isfinite(norm.item()):  # host sync
                bad, what = True, "gradient norm"
        if bad:
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            if nonfinite_policy == "stop":
                raise NonFiniteLossError(
                    f"non-finite {what} at epoch {epoch}, update {global_step + 1}", global_step + 1, epoch)
        else:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if model_ema is not None:
                model_ema.update(model)
        lr = scheduler.get_lr() if scheduler is not None else optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        global_step += 1
        updates += 1
        mean = window_loss / window_n if (window_n and not bad) else float("nan")
        if not bad:
            loss_sum += window_loss
            loss_n += window_n
        window_loss, window_n, window_bad = 0.0, 0, False
        if on_update is not None:
            on_update(UpdateInfo(epoch, i + 1, global_step, mean, lr, bad, samples))
    return {"loss": loss_sum / loss_n if loss_n else float("nan"), "updates": updates, "skipped": skipped,
            "samples": samples, "global_step": global_step}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    *,
    amp_dtype: torch.dtype | None = None,
    num_classes: int | None = None,
    confusion: bool = False,
    channels_last: bool = False,
    input_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
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
            if input_dtype is not None:
                x = x.to(input_dtype)
            with autocast(device, amp_dtype):
                out = model(x)
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


class FixedLossScaler:
    """fp16 loss scaling by a constant (``is_dynamic_loss_scale: false``, ``loss_scale: 1024``).

    torch's GradScaler only scales dynamically; this keeps its interface (scale / unscale_ / step /
    update / state_dict) with a fixed factor, and still skips an update whose gradients overflowed.
    It also works for pure-fp16 weights (amp_level O3), which GradScaler refuses to unscale.
    """

    def __init__(self, scale: float = 1024.0) -> None:
        self.scale_value = float(scale)
        self._unscaled = False
        self.skipped = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_value

    @staticmethod
    def _grads(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        return [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._unscaled:
            grads = self._grads(optimizer)
            if grads:
                torch._foreach_mul_(grads, 1.0 / self.scale_value)
            self._unscaled = True

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.unscale_(optimizer)
        grads = self._grads(optimizer)
        finite = not grads or bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())  # host sync
        if finite:
            optimizer.step()
        else:
            self.skipped += 1
        self._unscaled = False

    def update(self) -> None:
        pass

    def get_scale(self) -> float:
        return self.scale_value

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale_value, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale_value = float(state.get("scale", self.scale_value))
        self.skipped = int(state.get("skipped", 0))
