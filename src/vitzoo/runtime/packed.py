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
instead of twice, within one bf16 step of the unfused model. Beside the library paths
(benchmarks/bench_kernels.py, deit_small batch 32, a 2-core AMD EPYC with avx512_bf16 / avx512_vnni, paired
medians of 3 rounds on a quiet host): fp32 packed 1.13x eager and 1.14x ``torch.compile`` with freezing;
bf16 packed 1.13x bf16 eager but 1.00x compiled bf16; int8 0.99x / calibrated 0.95x PT2E
(X86InductorQuantizer + compile) dynamic / static -- the library int8 is as fast here, after a compile
of 12-70 s per input shape. With oneDNN held to AVX2 (an AVX2-only CPU's kernels): fp32 packed 0.99x
eager (the policy does not pack fp32 there), int8 per call 1.44x PT2E dynamic, calibrated 1.03x static.

:class:`Int8Linear` is the int8 variant (``--precision int8``): int8 weights and per-call uint8 activations
through oneDNN's int8 product (``onednn.qlinear_pointwise``), with the same fusions. On a 2-core Xeon with
avx512_vnni (and bf16 units at half the fp32 rate) deit_small's int8 layers ran 2.1-2.9x the fp32 ones.

:func:`calibrate_int8` fixes the int8 layers' input ranges on calibration images (the same scales for
every batch), and then the MLP's hidden layer passes between its two layers as uint8. BEiT's q / k / v
biases and layer scales are folded into its packed layers (:meth:`PackedLinear.fold`), so its blocks take
the same fused path as DeiT's.

Inference only: a packed layer computes with the weight as it was when packed, and falls back to plain
``F.linear`` whenever autograd records (training), the input is not on the CPU, or its dtype differs.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.models.beit import BEiTAttention, BEiTBlock
from vitzoo.models.layers import Attention, Block, Mlp
from vitzoo.runtime.int8 import activation_range, int8_available, to_uint8, uint8_qparams


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
    bias_override: torch.Tensor | None = None  # the bias where it is not ``self.bias`` (BEiT's q / k / v biases)
    gain: torch.Tensor | None = None  # multiplies the output per channel (a LayerScale folded in)
    packed_bias: torch.Tensor | None = None  # folded (:meth:`fold`): gain * (bias_override or bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, gelu: str | None = None) -> PackedLinear:
        linear.__class__ = cls  # in place: the parameters, hooks and their names stay the module's own
        linear.gelu = gelu
        with torch.no_grad():
            linear.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        return linear

    @property
    def op_bias(self) -> torch.Tensor | None:
        """The bias the packed op adds."""
        return self.packed_bias if self.packed_bias is not None else self.bias

    def fold(self, bias: torch.Tensor | None = None, gain: torch.Tensor | None = None) -> None:
        """Compute ``(x W^T + bias) * gain`` (per output channel) in the packed op: ``bias`` in place of
        ``self.bias``, ``gain`` multiplied into the packed weight (:class:`Int8Linear`: into its per-channel
        scales, exactly) and the bias. BEiT's q / k / v biases and layer scales (gamma_1 / gamma_2) fold so.
        The fallback path applies both as they are (``gain`` kept by reference: a LayerScale parameter trains)."""
        self.bias_override = bias
        object.__setattr__(self, "gain", gain)  # a reference, not a parameter of this layer (state dict unchanged)
        source = bias if bias is not None else self.bias
        with torch.no_grad():
            if source is not None:
                self.packed_bias = (source * gain if gain is not None else source).detach().clone()
            if gain is not None:
                self._scale_packed_weight(gain.detach())

    def _scale_packed_weight(self, gain: torch.Tensor) -> None:
        weight = self.weight.detach() * gain[:, None]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._runs_packed(x):
            return self._unpacked(x)
        if self.gelu is None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.op_bias, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.op_bias, "gelu", [], self.gelu)

    def add_to(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)``, the add fused into the product (oneDNN's binary post-op: one pass over
        the output fewer); ``residual`` is read, not written."""
        if self.gelu is not None or not self._runs_packed(x):
            return residual + self(x)
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.op_bias, "add")

    def _unpacked(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias_override if self.bias_override is not None else self.bias)
        y = y if self.gelu is None else F.gelu(y, approximate=self.gelu)
        return y if self.gain is None else y * self.gain

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
        copy.bias_override = None if self.bias_override is None else self.bias_override.detach().clone()
        copy.gain = None if self.gain is None else self.gain.detach().clone()
        return copy

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", packed, gelu={self.gelu}" if self.gelu else ", packed")


class Int8Linear(PackedLinear):
    """A :class:`PackedLinear` computing in int8: weights per output channel (symmetric, ``weight_bits``
    8, or 7 where the CPU lacks VNNI, below), activations quantized on every call over the whole input
    (uint8, its range from the input's min and max: :mod:`vitzoo.runtime.int8`), the products in
    oneDNN's int8 kernels accumulating in int32, and the scales, bias, GELU or residual add applied to the
    fp32 output inside the same op (``onednn.qlinear_pointwise``, the op torch's x86 int8 path lowers to).

    Why 7 bits without VNNI: there oneDNN multiplies uint8 by int8 with VPMADDUBSW, which adds pairs of
    products into int16 and saturates (2 x 255 x 127 > 2^15), as ONNX Runtime does (deploy/quantize.py):
    with oneDNN held to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) a 384 -> 1152 layer's relative error was 8.6%
    with 8-bit weights and 1.3% with 7-bit ones, as with VNNI (tests/test_models_packed.py).
    As with ONNX Runtime's dynamic int8, an image's logits depend slightly on the batch it is in (the
    activation range is the batch's), unless the ranges are calibrated (:func:`calibrate_int8`). The fp32
    weight stays the module's parameter (state dict, training, copies); the int8 copy is what the forward
    reads."""

    weight_scale: torch.Tensor | None = None
    weight_zero_point: torch.Tensor | None = None
    input_qparams: tuple[float, int] | None = None  # calibrated (scale, zero point); None = from each input
    observed: tuple[float, float] | None = None  # while calibrating: the inputs' (min, max) so far

    @classmethod
    def from_linear(cls, linear: nn.Linear, gelu: str | None = None, weight_bits: int = 8) -> Int8Linear:
        linear.__class__ = cls
        linear.gelu = gelu
        with torch.no_grad():
            weight = linear.weight.detach().float()
            qmax = 2 ** (weight_bits - 1) - 1
            scale = weight.abs().amax(1).clamp_min(1e-12) / qmax
            qweight = torch.round(weight / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
            linear.weight_scale = scale
            linear.weight_zero_point = torch.zeros(len(scale), dtype=torch.long)
            linear.packed = torch.ops.onednn.qlinear_prepack(qweight, None)
        return linear

    def _scale_packed_weight(self, gain: torch.Tensor) -> None:
        self.weight_scale = self.weight_scale * gain.float()  # per output channel: the int8 weights stay

    @torch.compiler.disable  # a graph break: inductor takes oneDNN's int8 op only with its own quantization
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._runs_packed(x):
            return self._unpacked(x)
        act = ("gelu", [], self.gelu) if self.gelu is not None else ("none", [], "")
        return torch.ops.onednn.qlinear_pointwise(*self.operands(x), self.op_bias, 1.0, 0, torch.float32, *act)

    @torch.compiler.disable  # a graph break: inductor takes oneDNN's int8 op only with its own quantization
    def add_to(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        if self.gelu is not None or not self._runs_packed(x):
            return residual + self(x)
        return torch.ops.onednn.qlinear_pointwise.binary(
            *self.operands(x), residual, self.op_bias, 1.0, 0, torch.float32, 1.0, 0, "add", 1.0, "none", [], "")

    @torch.compiler.disable  # a graph break: inductor takes oneDNN's int8 op only with its own quantization
    def quantized_for(self, x: torch.Tensor, consumer: Int8Linear) -> torch.Tensor:
        """``self(x)`` (bias and GELU included) as ``consumer``'s uint8 input codes, quantized by the op itself
        to ``consumer``'s calibrated range: the MLP's hidden layer, 4x as wide as its input, is then never
        written in fp32 nor read again to quantize it (deit_small's MLP at batch 16: 1.3x)."""
        act = ("gelu", [], self.gelu) if self.gelu is not None else ("none", [], "")
        scale, zero_point = consumer.input_qparams
        return torch.ops.onednn.qlinear_pointwise(*self.operands(x), self.op_bias, scale, zero_point, None, *act)

    def operands(self, x: torch.Tensor) -> tuple:
        """The int8 op's first six arguments for input ``x``: its uint8 values, scale and zero point, then the
        weight's. Calibrated (:func:`calibrate_int8`): the same scale for every input, values beyond the
        calibrated range saturating; else the input's own range. A uint8 ``x`` is already this layer's codes
        (:meth:`quantized_for`)."""
        if x.dtype == torch.uint8:
            return (x, *self.input_qparams, self.packed, self.weight_scale, self.weight_zero_point)
        if self.input_qparams is not None:
            scale, zero_point = self.input_qparams
        else:
            lo, hi = activation_range(x)
            if self.observed is not None:
                self.observed = (min(self.observed[0], lo), max(self.observed[1], hi))
            scale, zero_point = uint8_qparams(lo, hi)
        return to_uint8(x, scale, zero_point), scale, zero_point, self.packed, self.weight_scale, self.weight_zero_point

    def _runs_packed(self, x: torch.Tensor) -> bool:
        return (self.packed is not None and not torch.is_grad_enabled() and x.device.type == "cpu"
                and (x.dtype == torch.float32 or x.dtype == torch.uint8 and self.input_qparams is not None))

    def extra_repr(self) -> str:
        calibrated = ", calibrated" if self.input_qparams is not None else ""
        return nn.Linear.extra_repr(self) + ", int8" + calibrated + (f", gelu={self.gelu}" if self.gelu else "")


def calibrate_int8(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Fix the input range of every :class:`Int8Linear` of ``model``: the min and max its inputs reach when
    ``model`` runs ``batches`` (images, preprocessed). Then every batch is quantized with the same scales,
    so an image's logits no longer depend on the images beside it, and the min / max pass is saved. Inputs
    beyond the calibrated range saturate: calibrate on images like those the model will see (ONNX
    Runtime's static int8 calibrates the same way, MinMax). Returns the number of layers calibrated."""
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    for layer in layers:
        layer.input_qparams, layer.observed = None, (math.inf, -math.inf)
    try:
        with torch.inference_mode():
            for x in batches:
                model(x)
    finally:
        ranges = [layer.observed for layer in layers]
        for layer in layers:
            layer.observed = None
    for layer, (lo, hi) in zip(layers, ranges, strict=True):
        layer.input_qparams = uint8_qparams(lo, hi) if lo <= hi else None  # a layer no batch reached stays per-call
    return sum(layer.input_qparams is not None for layer in layers)


class ResidualFusedBlock(Block):
    """A :class:`Block` without LayerScale whose two residual adds run inside the packed output layers
    (``attn.proj``, ``mlp.fc2``): in deit_small's bf16 forward the adds took 8.4 of 123 ms (batch 16,
    2-core AMX Xeon, measured by removing them). With calibrated int8 layers the MLP's hidden layer passes
    from ``fc1`` to ``fc2`` as uint8 (:meth:`Int8Linear.quantized_for`). Training, or any forward autograd
    records, runs the plain block."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            return Block.forward(self, x, bias)  # Block's, not the next class's: a BEiT block's gains are folded
        x = self.attn.proj.add_to(self.attn.mix(self.norm1(x), bias), x)
        mlp = self.mlp
        if (type(mlp.fc1) is Int8Linear and type(mlp.fc2) is Int8Linear and mlp.fc2.input_qparams is not None
                and isinstance(mlp.act, nn.Identity)):  # calibrated int8: the hidden layer passed as uint8
            return mlp.fc2.add_to(mlp.fc1.quantized_for(self.norm2(x), mlp.fc2), x)
        return mlp.fc2.add_to(mlp.act(mlp.fc1(self.norm2(x))), x)


class ResidualFusedBEiTBlock(ResidualFusedBlock, BEiTBlock):
    """A :class:`BEiTBlock` whose layer scales are folded into ``attn.proj`` and ``mlp.fc2`` (their outputs'
    gains, :meth:`PackedLinear.fold`), so that it runs as a :class:`ResidualFusedBlock`: the two products
    per residual (scale, add) are gone, and with calibrated int8 the MLP's hidden layer passes as uint8.
    ``gamma_1`` / ``gamma_2`` stay its parameters (state dict, and training, through the layers' fallback)."""


class PackedBEiTAttention(BEiTAttention):
    """BEiT's attention with its q / k / v biases folded into the packed ``qkv`` layer: BEiT's own
    :meth:`~BEiTAttention.qkv_proj` hands them to ``F.linear`` with the fp32 weight, past the packed (or
    int8) layer, a quarter of the block's products. Autograd recording: BEiT's own, the biases live."""

    def qkv_proj(self, x: torch.Tensor) -> torch.Tensor:
        return super().qkv_proj(x) if torch.is_grad_enabled() else self.qkv(x)


def _fold_beit(model: nn.Module) -> None:
    """BEiT's q / k / v biases into its packed qkv layers and its layer scales into the output layers (then
    its blocks fuse their residual adds), where those layers were packed."""
    for module in list(model.modules()):
        if (type(module) is BEiTAttention and module.q_bias is not None
                and isinstance(module.qkv, PackedLinear) and module.qkv.bias is None):
            module.qkv.fold(bias=torch.cat((module.q_bias, module.k_bias, module.v_bias)))
            module.__class__ = PackedBEiTAttention
        elif (type(module) is BEiTBlock and type(module.mlp) is Mlp
              and isinstance(module.attn.proj, PackedLinear) and isinstance(module.mlp.fc2, PackedLinear)
              and isinstance(module.ls1, nn.Identity) and isinstance(module.ls2, nn.Identity)):
            if module.gamma_1 is not None:
                module.attn.proj.fold(gain=module.gamma_1)
                module.mlp.fc2.fold(gain=module.gamma_2)
            module.__class__ = ResidualFusedBEiTBlock


def pack_linears(model: nn.Module, int8_weight_bits: int | None = None) -> nn.Module:
    """Pack every ``nn.Linear`` of ``model`` (in place), fusing a GELU that directly follows one: the first
    layer of each :class:`Mlp`, and a Linear then GELU in an ``nn.Sequential`` (the Token Performer's MLP).
    With ``int8_weight_bits`` (8, or 7: :class:`Int8Linear`) the layers compute in int8, all but the
    classifier heads (``head``, ``head_dist``: one small product whose error would reach the logits
    directly), which stay plain fp32 layers (so that ``torch.compile`` can take the model: the int8 layers
    are graph breaks, a packed fp32 layer it cannot lower). A no-op where torch lacks oneDNN's ops, or this CPU oneDNN's path
    for the weights' dtype (or for int8). Returns ``model``."""
    weight = next(model.parameters(), None)
    if weight is None or not packing_available(weight.dtype):
        return model
    if int8_weight_bits and not (int8_available() and weight.dtype == torch.float32):
        return model
    heads = {id(m) for name, m in model.named_modules() if name.split(".")[0].startswith("head")}

    def pack(linear: nn.Linear, gelu: str | None = None) -> None:
        if not int8_weight_bits:
            PackedLinear.from_linear(linear, gelu)
        elif id(linear) not in heads:
            Int8Linear.from_linear(linear, gelu, weight_bits=int8_weight_bits)

    for module in list(model.modules()):
        if isinstance(module, Mlp):
            _fuse_gelu(module, "fc1", "act", pack)
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for linear, act in itertools.pairwise(names):
                _fuse_gelu(module, linear, act, pack)
    for module in list(model.modules()):
        if type(module) is nn.Linear:
            pack(module)
    _fold_beit(model)
    for module in list(model.modules()):
        if (type(module) is Block and type(module.attn) is Attention and type(module.mlp) is Mlp
                and isinstance(module.ls1, nn.Identity) and isinstance(module.ls2, nn.Identity)):
            module.__class__ = ResidualFusedBlock
    return model


def _fuse_gelu(parent: nn.Module, linear: str, act: str, pack) -> None:
    """``parent.<linear>`` then ``parent.<act>`` = GELU -> one packed layer with the GELU fused; the GELU
    becomes an Identity (it is inside the layer, on the fallback path too)."""
    if type(getattr(parent, linear)) is nn.Linear and isinstance(getattr(parent, act), nn.GELU):
        pack(getattr(parent, linear), gelu=getattr(parent, act).approximate)
        setattr(parent, act, nn.Identity())
