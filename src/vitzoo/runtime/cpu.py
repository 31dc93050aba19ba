"""What this CPU can do, read from /proc/cpuinfo: its model name, its feature flags, and from them the units
the precision policy (:mod:`vitzoo.runtime.precision`) and the int8 kernels care about.

Empty answers where there is no /proc/cpuinfo (e.g. macOS): the policy then keeps fp32 on the CPU.
Tests mock :func:`cpu_flags`; every other answer here is derived from it.
"""
from __future__ import annotations

import functools
from pathlib import Path

# bf16 dot-product units. Units alone do not make bf16 fast: on an Intel Xeon with avx512_bf16 but no AMX
# a bf16 product ran at half the fp32 rate (oneDNN's avx512_core_bf16 kernel, 158 vs 286 GFLOP/s), so the
# policy times the model where these exist (benchmarks/README.md).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# units that sum u8 x s8 products in int32 without saturating; without them oneDNN uses VPMADDUBSW, whose
# int16 pair sums saturate, and the int8 layers get 7-bit weights (runtime/packed.py, Int8Linear)
INT8_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_bf16_units() -> tuple[str, ...]:
    """This CPU's bf16 units (AMX-BF16, AVX512-BF16) by their flag; () if none."""
    flags = cpu_flags()
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def int8_units() -> tuple[str, ...]:
    """This CPU's flags among :data:`INT8_VNNI_FLAGS` (units that sum int8 products in int32); () if none."""
    flags = cpu_flags()
    return tuple(f for f in INT8_VNNI_FLAGS if f in flags)


def int8_weight_bits() -> int:
    """8-bit int8 weights where the CPU sums int8 products in int32, 7 elsewhere (2 x 255 x 64 < 2^15: the
    saturating int16 pair sums cannot overflow)."""
    return 8 if int8_units() else 7
