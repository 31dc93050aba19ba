"""int8 arithmetic for oneDNN's int8 product (:class:`vitzoo.runtime.packed.Int8Linear`): activation ranges,
scales and zero points, the uint8 codes, and whether this torch and CPU have the ops.

Activations are asymmetric uint8 (oneDNN's fast int8 kernels take uint8 inputs and int8 weights; a signed
int8 input ran a reference kernel, minutes per model), one scale and zero point per tensor, zero exact.
"""
from __future__ import annotations

import functools
import math
import platform
import warnings

import torch

from vitzoo.errors import UserError


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """``x`` (fp32) as uint8 with one scale and zero point from its min and max (:func:`uint8_qparams`), zero
    kept exact (padding and a GELU's zeros stay zero). Two passes over ``x``: its min and max, then
    :func:`to_uint8`."""
    scale, zero_point = uint8_qparams(*activation_range(x))
    return to_uint8(x, scale, zero_point), scale, zero_point


def activation_range(x: torch.Tensor) -> tuple[float, float]:
    """min and max of ``x``; UserError where they are not finite."""
    lo, hi = (v.item() for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):  # fp32 would carry NaN / inf to the logits; int8 has no code
        raise UserError("int8: a linear layer's input holds NaN or inf values (the weights or the input are "
                        "not finite); fp32 (--precision fp32) shows where")
    return lo, hi


def uint8_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point mapping [min(lo, 0), max(hi, 0)] onto uint8, zero exact. The range is divided
    into 254 steps, not 255: the rounded zero point can move the top by half a step, and the rounding by
    another half, so the largest value lands on 255 at most."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 254
    return scale, round(-lo / scale)


def to_uint8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``round(x / scale) + zero_point`` as uint8, saturating at 0 and 255 (a calibrated range can be
    exceeded). Through ``torch.quantize_per_tensor`` (one vectorised pass; its quint8 result read as the
    plain uint8 tensor it stores, no copy), else (torch deprecates quantized tensors) :func:`_to_uint8_by_float`."""
    if _quantize_per_tensor_works():
        return _bytes_of(torch.quantize_per_tensor(x, scale, zero_point, torch.quint8))
    return _to_uint8_by_float(x, scale, zero_point)


_ROUNDER = 1.5 * 2 ** 23  # a float32 in [2^23, 2^24) is an integer: adding this rounds a value within 2^22 of
# zero to an integer (half to even: the constant is even) and leaves it in the low mantissa bits, which the
# int32 view reads; the float -> uint8 cast, whose ATen kernel is slow, is never taken


def _to_uint8_by_float(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """:func:`to_uint8` in float arithmetic, the codes ``torch.quantize_per_tensor`` gives: ``x / scale``
    rounded half to even, then the zero point added, saturating at 0 and 255. A 3,152 x 1,536 input on a
    2-core AVX2 EPYC: 3.9 ms, against 6.4 for ``+ 0.5``, clamp and the uint8 cast, and 0.9 for
    ``quantize_per_tensor``."""
    y = torch.add(torch.tensor(_ROUNDER), x, alpha=1 / scale).clamp_(_ROUNDER - zero_point, _ROUNDER + 255 - zero_point)
    # the int32 bits are 0x4B400000 + the rounded value: its low byte, modulo 256; the zero point added there
    return y.view(torch.int32).to(torch.uint8).add_(zero_point)


def _bytes_of(q: torch.Tensor) -> torch.Tensor:
    """A quint8 tensor's codes as a plain uint8 tensor on the same storage (no copy)."""
    return torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())


@functools.cache
def _quantize_per_tensor_works() -> bool:
    """torch still has quantized tensors and their bytes read back as uint8 (checked once; the deprecation
    warning torch gives once per process is taken here, where it would say nothing to a user)."""
    x = torch.linspace(-1, 1, 64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _bytes_of(torch.quantize_per_tensor(x, 2 / 254, 127, torch.quint8))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(got.long(), torch.round(x * 127 + 127).long()))


@functools.cache
def int8_available() -> bool:
    """torch has oneDNN's int8 linear ops and this is an x86 CPU (they are its x86 int8 path)."""
    return (torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")
            and all(hasattr(torch.ops.onednn, op) for op in ("qlinear_prepack", "qlinear_pointwise")))
