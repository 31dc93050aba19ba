"""Training losses: soft-target CE (mixup), label-smoothing CE, BCE, and DeiT's distillation loss.

All losses are computed in float32 whatever the autocast dtype (logits are upcast first): a bf16/fp16
log-softmax over 1000 classes is where DeiT/T2T-ViT users report their NaNs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.config import RunConfig
from vitzoo.errors import UserError


class SoftTargetCrossEntropy(nn.Module):
    """CE against a probability vector per sample (mixup/cutmix targets, smoothing already folded in)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target.float() * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class LabelSmoothingCrossEntropy(nn.Module):
    """CE with label smoothing ``s``: (1 - s) * NLL + s * mean over classes of -log p (timm's definition)."""

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == logits.ndim:  # soft targets (e.g. mixup switched off mid-run still yields them)
            return SoftTargetCrossEntropy()(logits, target)
        return F.cross_entropy(logits.float(), target, label_smoothing=self.smoothing)


class BinaryCrossEntropy(nn.Module):
    """Per-class sigmoid BCE (DeiT III's ``--bce-loss``); integer labels become smoothed one-hot.

    Soft targets (mixup) are used as given, as timm's BinaryCrossEntropy does by default.
    """

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if target.ndim != logits.ndim:
            n = logits.shape[-1]
            off = self.smoothing / n
            target = torch.full_like(logits, off).scatter_(1, target.view(-1, 1), 1.0 - self.smoothing + off)
        return F.binary_cross_entropy_with_logits(logits, target.float())


class DistillationLoss(nn.Module):
    """DeiT's knowledge distillation (arXiv:2012.12877 sec. 4; facebookresearch/deit losses.py).

    ``outputs`` is the student's ``(cls_logits, dist_logits)`` pair (or one tensor when distillation is off).
    The class head learns from the labels through ``base``; the dist head from the frozen teacher:

    * soft: ``KL(log_softmax(dist / tau) || log_softmax(teacher / tau))`` summed, times ``tau**2``, divided by
      ``dist.numel()`` (DeiT keeps this legacy normalisation, see their issue #61);
    * hard: CE of the dist head against the teacher's argmax.

    Total: ``(1 - alpha) * base + alpha * distillation``.
    """

    def __init__(self, base: nn.Module, teacher: nn.Module | None, distillation_type: str = "none",
                 alpha: float = 0.5, tau: float = 1.0) -> None:
        super().__init__()
        if distillation_type not in ("none", "soft", "hard"):
            raise UserError(f"distillation_type: expected none, soft or hard, got {distillation_type!r}")
        if distillation_type != "none" and teacher is None:
            raise UserError(f"distillation_type={distillation_type} needs a teacher (teacher_model / teacher_path)")
        self.base = base
        self.teacher = teacher
        self.distillation_type = distillation_type
        self.alpha, self.tau = float(alpha), float(tau)

    def forward(self, inputs: torch.Tensor, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        outputs_kd = None
        if not isinstance(outputs, torch.Tensor):
            outputs, outputs_kd = outputs
        base_loss = self.base(outputs, labels)
        if self.distillation_type == "none":
            return base_loss
        if outputs_kd is None:
            raise UserError("distillation needs a distilled student (a *_distilled_* model) returning two heads")
        with torch.no_grad():
            teacher_out = self.teacher(inputs)
            if isinstance(teacher_out, (tuple, list)):
                teacher_out = teacher_out[0]
            teacher_out = teacher_out.float()
        outputs_kd = outputs_kd.float()
        if self.distillation_type == "soft":
            T = self.tau
            kd = F.kl_div(F.log_softmax(outputs_kd / T, dim=1), F.log_softmax(teacher_out / T, dim=1),
                          reduction="sum", log_target=True) * (T * T) / outputs_kd.numel()
        else:
            kd = F.cross_entropy(outputs_kd, teacher_out.argmax(dim=1))
        return base_loss * (1 - self.alpha) + kd * self.alpha


def build_criterion(cfg: RunConfig, mixup_active: bool, teacher: nn.Module | None = None) -> DistillationLoss:
    """DeiT main.py's choice: soft-target CE under mixup (smoothing lives in the targets), else
    label-smoothing CE, or BCE when ``bce_loss``; always wrapped in :class:`DistillationLoss`."""
    if cfg.bce_loss:
        base: nn.Module = BinaryCrossEntropy(0.0 if mixup_active else cfg.smoothing)
    elif mixup_active:
        base = SoftTargetCrossEntropy()
    else:
        base = LabelSmoothingCrossEntropy(cfg.smoothing)
    return DistillationLoss(base, teacher, cfg.distillation_type, cfg.distillation_alpha, cfg.distillation_tau)
