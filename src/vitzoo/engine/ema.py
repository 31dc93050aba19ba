"""Exponential moving average of model weights (timm's ModelEmaV2 idea, written for foreach kernels).

``ema = decay * ema + (1 - decay) * model`` for floating-point parameters and buffers after every
optimiser update; integer buffers are copied. DeiT uses decay 0.99996. The average can live on the CPU
(``device='cpu'``) to save accelerator memory, at the cost of a copy per update.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from vitzoo.engine.dist import unwrap


class ModelEma(nn.Module):
    def __init__(self, model: nn.Module, decay: float = 0.9999, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.device = torch.device(device) if device else None
        if self.device is not None:
            self.module.to(self.device)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = unwrap(model).state_dict()
        ema_f, src_f = [], []
        for k, e in self.module.state_dict().items():
            s = src[k]
            if e.is_floating_point():
                ema_f.append(e)
                src_f.append(s if s.device == e.device else s.to(e.device, non_blocking=True))
            else:
                e.copy_(s)
        if ema_f:
            torch._foreach_lerp_(ema_f, [s.to(e.dtype) for s, e in zip(src_f, ema_f)], 1.0 - self.decay)

    def forward(self, x: torch.Tensor):
        return self.module(x)

    def state_dict(self, *args, **kwargs):  # the averaged weights, keyed like the model's
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True):
        return self.module.load_state_dict(state, strict=strict)
