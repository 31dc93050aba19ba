"""Linear layers pre-packed for oneDNN, for inference on a CPU.

An ``nn.Linear`` on a CPU re-lays its weight out for the matrix units on every call and, with a bias, runs
``addmm``, which first broadcasts the bias into the output (a pass over it), and the MLP's GELU is one more
pass. :func:`pack_linears` lays each weight out once (``mkldnn._reorder_linear_weight``) and runs it with
the bias, and the MLP's GELU, fused into oneDNN's matrix product (``mkldnn._linear_pointwise``): the ops
``torch.compile`` itself picks for a frozen CPU model (its max-autotune chose them over its own AMX
templates for all but one of deit_small's shapes), without the compile.

Measured on a 2-core Xeon with AMX (benchmarks/README.md): deit_small / deit_base bf16 forward 1.04-1.12x /
1.02-1.14x unpacked bf16. The results are oneDNN's, which the tests check against ``F.linear``: the same
numbers without an activation; with GELU fused, the activation of the fp32 accumulator is rounded once
instead of twice, within one bf16 step of the unfused model.

Inference only: a packed layer computes with the weight as it was when packed, and falls back to plain
``F.linear`` whenever autograd records (training), the input is not on the CPU, or its dtype differs.
"""
from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.models.layers import Attention, Block, Mlp


@functools.cache
def packing_available(dtype: torch.dtype = torch.float32) -> bool:
    """torch was built with oneDNN and has the fused linear ops (every PyPI x86/ARM wheel since 2.1), and
    for bf16 this CPU can run them: oneDNN's bf16 path needs AVX512-BW/VL/DQ or AVX-NE-CONVERT (on a
    2-core AVX2-only EPYC ``_reorder_linear_weight`` refuses a bf16 weight)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    return dtype != torch.bfloat16 or torch.ops.mkldnn._is_mkldnn_bf16_supported()


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters, same state dict) with a oneDNN-packed copy of its weight and an
    optional fused GELU (``gelu``: "none" for erf, "tanh"; None: no activation)."""

    packed: torch.Tensor | None = None
    gelu: str | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, gelu: str | None = None) -> PackedLinear:
        linear.__class__ = cls  # in place: the parameters, hooks and their names stay the module's own
        linear.gelu = gelu
        with torch.no_grad():
            linear.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._runs_packed(x):
            y = F.linear(x, self.weight, self.bias)
            return y if self.gelu is None else F.gelu(y, approximate=self.gelu)
        if self.gelu is None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "gelu", [], self.gelu)

    def add_to(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)``, the add fused into the product (oneDNN's binary post-op: one pass over
        the output fewer); ``residual`` is read, not written."""
        if self.gelu is not None or not self._runs_packed(x):
            return residual + self(x)
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias, "add")

    def _runs_packed(self, x: torch.Tensor) -> bool:
        return (self.packed is not None and not torch.is_grad_enabled() and x.device.type == "cpu"
                and x.dtype == self.packed.dtype)

    def __deepcopy__(self, memo):
        """An unpacked copy (a packed oneDNN tensor has no storage to copy): it computes through the
        fallback path, GELU included, and keeps the module's structure and state dict."""
        copy = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                         device=self.weight.device, dtype=self.weight.dtype)
        copy.load_state_dict(self.state_dict())
        copy.__class__ = PackedLinear
        copy.gelu = self.gelu
        return copy

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", packed, gelu={self.gelu}" if self.gelu else ", packed")


class ResidualFusedBlock(Block):
    """A :class:`Block` without LayerScale whose two residual adds run inside the packed output layers
    (``attn.proj``, ``mlp.fc2``): in deit_small's bf16 forward the adds took 8.4 of 123 ms (batch 16,
    2-core AMX Xeon, measured by removing them). Training, or any forward autograd records, runs the
    plain block."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return super().forward(x, bias)
        x = self.attn.proj.add_to(self.attn.mix(self.norm1(x), bias), x)
        mlp = self.mlp
        return mlp.fc2.add_to(mlp.act(mlp.fc1(self.norm2(x))), x)


def pack_linears(model: nn.Module) -> nn.Module:
    """Pack every ``nn.Linear`` of ``model`` (in place), fusing a GELU that directly follows one: the first
    layer of each :class:`Mlp`, and a Linear then GELU in an ``nn.Sequential`` (the Token Performer's MLP).
    A no-op where torch lacks oneDNN's ops, or this CPU oneDNN's path for the weights' dtype. Returns
    ``model``."""
    weight = next(model.parameters(), None)
    if weight is None or not packing_available(weight.dtype):
        return model
    for module in list(model.modules()):
        if isinstance(module, Mlp):
            _fuse_gelu(module, "fc1", "act")
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for linear, act in itertools.pairwise(names):
                _fuse_gelu(module, linear, act)
    for module in list(model.modules()):
        if type(module) is nn.Linear:
            PackedLinear.from_linear(module)
    for module in list(model.modules()):
        if (type(module) is Block and type(module.attn) is Attention and type(module.mlp) is Mlp
                and isinstance(module.ls1, nn.Identity) and isinstance(module.ls2, nn.Identity)):
            module.__class__ = ResidualFusedBlock
    return model


def _fuse_gelu(parent: nn.Module, linear: str, act: str) -> None:
    """``parent.<linear>`` then ``parent.<act>`` = GELU -> one packed layer with the GELU fused; the GELU
    becomes an Identity (it is inside the layer, on the fallback path too)."""
    if type(getattr(parent, linear)) is nn.Linear and isinstance(getattr(parent, act), nn.GELU):
        PackedLinear.from_linear(getattr(parent, linear), gelu=getattr(parent, act).approximate)
        setattr(parent, act, nn.Identity())
