"""fp16 loss scaling: torch's dynamic GradScaler, or a fixed factor as the seeds' ``loss_scale`` asks.

bf16 and fp32 need none (bf16 has fp32's exponent range); fp16 gradients underflow without it.
"""
from __future__ import annotations

from typing import Any

import torch

from vitzoo.runtime.precision import Precision


def build_scaler(precision: Precision, device: torch.device, dynamic: bool, loss_scale: float) -> Any:
    """None unless fp16 is in play; a fixed scaler for O3 (GradScaler refuses fp16 weights) or when asked."""
    if not precision.fp16:
        return None
    if precision.weights is not None or not dynamic:
        return FixedLossScaler(loss_scale)
    return torch.amp.GradScaler(device.type, init_scale=loss_scale, growth_interval=2000)


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
