"""Which number format a model runs in: one decision for train, eval, infer and attention.

``amp_level`` follows the seeds (MindSpore AMP levels): O0 = fp32; O1/O2 = autocast (weights stay fp32,
matmuls in 16 bits); O3 = the weights and inputs themselves in 16 bits. ``amp_dtype`` picks bf16 or fp16;
``auto`` = bf16 where the device has it, fp16 otherwise -- and fp32 on a CPU, where autocast measured
slower than fp32 on CPUs without bf16 units.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """``autocast``: dtype of autocast regions (None = off); ``weights``: dtype the model and inputs are
    cast to (O3; None = fp32); ``name``: what to print."""

    autocast: torch.dtype | None = None
    weights: torch.dtype | None = None
    name: str = "fp32"

    @property
    def fp16(self) -> bool:
        """fp16 anywhere means gradients need loss scaling."""
        return torch.float16 in (self.autocast, self.weights)

    def context(self, device: torch.device):
        """The autocast region for a forward pass (a no-op context when off)."""
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.weights is None else x.to(self.weights)

    def cast_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model if self.weights is None else model.to(self.weights)


FP32 = Precision()


def resolve_precision(amp_level: str, amp_dtype: str, device: torch.device) -> Precision:
    """amp_level O0|O1|O2|O3 and amp_dtype auto|bf16|fp16 on ``device`` -> a :class:`Precision`."""
    if amp_level == "O0":
        return FP32
    if device.type == "cpu" and amp_dtype == "auto":
        return Precision(name="fp32 (amp_dtype auto on CPU: autocast is slower than fp32 there)")
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    use_fp16 = amp_dtype == "fp16" or (amp_dtype == "auto" and not bf16_ok)
    dtype, short = (torch.float16, "fp16") if use_fp16 else (torch.bfloat16, "bf16")
    if amp_level == "O3":
        return Precision(weights=dtype, name=f"{short} weights and activations (O3)")
    return Precision(autocast=dtype, name=f"{short} autocast ({amp_level})")
