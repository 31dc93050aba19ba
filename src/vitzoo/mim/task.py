"""Masked image modeling as a training task for the engine: the forward, the loss and the evaluation.

The engine's :class:`~vitzoo.engine.loop.TrainStep` calls ``forward(model, x, y)`` and then
``criterion(x, outputs, y)``; for pre-training ``x`` is the batch of ``(patches, tokenizer view, mask)``
and the labels ``y`` are unused (unlabeled images). The target is computed inside the forward, on the
device, from the frozen tokenizer (BEiT ``engine_for_pretraining.py`` does the same per step).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.engine import dist
from vitzoo.errors import UserError
from vitzoo.mim.targets import MIMTarget
from vitzoo.runtime.precision import FP32, Precision


class MIMForward:
    """``forward(model, (patches, view, mask), y) -> (predictions (M, dim), targets (M,) or (M, dim))``."""

    def __init__(self, target: MIMTarget):
        self.target = target

    def __call__(self, model: nn.Module, x: tuple[torch.Tensor, ...], y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        patches, view, mask = x
        mask = mask.flatten(1)  # (B, N) bool
        with torch.no_grad(), torch.autocast(patches.device.type, enabled=False):
            targets = self.target(patches, view, mask)
        return model(patches, mask), targets


def mim_criterion(kind: str):
    """``criterion(x, outputs, y)``: cross-entropy over the vocabulary (tokens) or MSE (pixels), in fp32."""
    def criterion(x: Any, outputs: tuple[torch.Tensor, torch.Tensor], y: Any) -> torch.Tensor:
        predictions, targets = outputs
        if kind == "tokens":
            return F.cross_entropy(predictions.float(), targets)
        return F.mse_loss(predictions.float(), targets)
    return criterion


@torch.no_grad()
def evaluate_mim(model: nn.Module, loader: Iterable, target: MIMTarget, device: torch.device, *,
                 precision: Precision = FP32) -> dict[str, float]:
    """Mean loss per masked patch and, for token targets, masked-token accuracy (``MIM-Acc``), all-reduced."""
    forward = MIMForward(target)
    was_training = model.training
    model.eval()
    stats = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, masked patches
    try:
        for x, _ in loader:
            patches, view, mask = (t.to(device, non_blocking=True) for t in x)
            with precision.context(device):
                predictions, targets = forward(model, (precision.cast_input(patches), view, mask), None)
            predictions = predictions.float()
            n = targets.shape[0]
            if target.kind == "tokens":
                loss = F.cross_entropy(predictions, targets, reduction="sum")
                correct = (predictions.argmax(-1) == targets).sum()
            else:
                loss = F.mse_loss(predictions, targets, reduction="sum") / predictions.shape[-1]
                correct = torch.zeros((), device=device)
            stats += torch.stack([loss.double(), correct.double(), torch.tensor(float(n), device=device).double()])
    finally:
        model.train(was_training)
    dist.all_reduce_sum(stats)
    loss_sum, correct, n = stats.tolist()
    if n == 0:
        raise UserError("pretrain: the evaluation images gave no masked patches (mask_ratio / min_mask_patches "
                        "for this grid of patches)")
    metrics = {"Loss": loss_sum / n}
    if target.kind == "tokens":
        metrics["MIM-Acc"] = correct / n
    return metrics


def format_mim_eval(metrics: dict[str, float]) -> str:
    shown = {k: round(float(v), 6) for k, v in metrics.items()}
    return f"eval results: {shown}"
