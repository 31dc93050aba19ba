"""Which number format a model runs in: one decision for train, eval, infer and attention.

``amp_level`` follows the seeds (MindSpore AMP levels): O0 = fp32; O1/O2 = autocast (weights stay fp32,
matmuls in 16 bits); O3 = the weights and inputs themselves in 16 bits. ``amp_dtype`` picks bf16 or fp16;
``auto`` = bf16 where the device has it, fp16 otherwise -- and on a CPU bf16 only when it has bf16 units
(AVX512-BF16 / AMX) *and* a training step of the model measures faster in bf16, fp32 otherwise. Units
alone do not decide: on an Intel Xeon with avx512_bf16 but no AMX a bf16 product ran at half the fp32
rate (oneDNN's avx512_core_bf16 kernel, 158 vs 286 GFLOP/s) and bf16-autocast training steps at 0.61x.

Inference (eval, infer, attention, bench; ``--precision auto|fp32|bf16|fp16|int8``) is
:func:`inference_precision`: ``auto`` = bf16 weights where the device has bf16 units and, on a CPU, a
forward of the model measures faster in bf16; fp32 otherwise. ``int8`` (CPU, asked for: it changes the
numbers more than bf16 does, so ``auto`` never picks it) runs the linear layers in oneDNN's int8 kernels
(:class:`vitzoo.runtime.packed.Int8Linear`). The choice is printed once with its reason.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vitzoo.runtime.bf16_timing import measure_bf16_speedup
from vitzoo.checkpoint.files import atomic_write_text
from vitzoo.errors import UserError
from vitzoo.runtime.int8 import int8_available
from vitzoo.runtime.packed import pack_linears, packing_available


@dataclass(frozen=True)
class Precision:
    """``autocast``: dtype of autocast regions (None = off); ``weights``: dtype the model and inputs are
    cast to (O3; None = fp32); ``name``: what to print; ``pack``: pre-pack the linear layers for oneDNN
    (CPU inference, :mod:`vitzoo.runtime.packed`); ``int8_weight_bits``: run the linear layers in int8 with
    weights of that many bits (8, or 7 on CPUs without VNNI; None = not int8)."""

    autocast: torch.dtype | None = None
    weights: torch.dtype | None = None
    name: str = "fp32"
    pack: bool = False
    int8_weight_bits: int | None = None

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
        model = model if self.weights is None else model.to(self.weights)
        if self.pack or self.int8_weight_bits:
            pack_linears(model, self.int8_weight_bits)
        return model


FP32 = Precision()


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with bf16 dot-product units
# bf16 asked for on such a CPU is obeyed, with its cost said: bf16 products run a scalar fallback there (a
# 512^3 product at 1.3 GFLOP/s, T2T's bf16 autocast forward 11-20x slower than fp32 on an AVX2-only EPYC,
# benchmarks/README.md)
NO_BF16_UNITS = "this CPU has no bf16 units, so it runs slower than fp32 here"


def resolve_precision(amp_level: str, amp_dtype: str, device: torch.device,
                      model: torch.nn.Module | None = None) -> Precision:
    """amp_level O0|O1|O2|O3 and amp_dtype auto|bf16|fp16 on ``device`` -> a :class:`Precision`.

    ``auto`` on a CPU with bf16 units and a ``model`` (the fp32 model about to train): bf16 only when a
    training step of it measures at least ``AUTO_MIN_SPEEDUP`` faster in bf16 (:func:`remembered_speedup`,
    ``train=True``); without a model, the units decide. ``int8`` is refused: it is for inference."""
    refuse_int8(amp_dtype, training=True)
    if amp_level == "O0":
        return FP32
    why = ""
    if device.type == "cpu" and amp_dtype == "auto":
        units = cpu_bf16_units()
        if not units:
            return Precision(name="fp32 (amp_dtype auto on a CPU without bf16 units: autocast is slower than "
                                  "fp32 there)")
        # measured: deit_tiny / deit_small train steps in bf16 autocast 1.51x / 1.72x timm's fp32 step on
        # an AMD EPYC with avx512_bf16, 1.61x / 2.14x on a Xeon with AMX, 0.61x / 0.63x on a Xeon with
        # avx512_bf16 and no AMX (benchmarks/README.md): measure where a model is at hand
        why = f"; amp_dtype auto: CPU has {'+'.join(units)}"
        if model is not None:
            fp32, measured = _measured_training_choice(model, device)
            if fp32 is not None:
                return fp32
            why += measured
    elif device.type == "cpu" and amp_dtype == "bf16" and not cpu_bf16_units():
        why = f"; {NO_BF16_UNITS}: amp_dtype auto picks fp32"
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    use_fp16 = amp_dtype == "fp16" or (amp_dtype == "auto" and not bf16_ok)
    dtype, short = (torch.float16, "fp16") if use_fp16 else (torch.bfloat16, "bf16")
    if amp_level == "O3":
        return Precision(weights=dtype, name=f"{short} weights and activations (O3{why})")
    return Precision(autocast=dtype, name=f"{short} autocast ({amp_level}{why})")


def _measured_training_choice(model: torch.nn.Module, device: torch.device) -> tuple[Precision | None, str]:
    """(fp32 with its reason, "") where bf16 autocast does not pay for training ``model`` here, else
    (None, the measured speed-up to print)."""
    flops = approx_flops(model)
    if flops < MIN_AUTO_FLOPS:
        return Precision(name=f"fp32 (amp_dtype auto: model too small for bf16 to pay, ~{flops / 1e6:.0f} "
                              f"MFLOP/image)"), ""
    speedup, cached = remembered_speedup(model, device, train=True)
    when = " (remembered from an earlier run)" if cached else ""
    if speedup < AUTO_MIN_SPEEDUP:
        units = "+".join(cpu_bf16_units())
        return Precision(name=f"fp32 (amp_dtype auto: CPU has {units} but a bf16-autocast training step "
                              f"measured {speedup:.2f}x fp32 for this model{when})"), ""
    return None, f", training step measured {speedup:.2f}x fp32{when}"


# --- inference: precision by capability -------------------------------------------------------------------
# Inference runs bf16/fp16 as *weights* (model.to(bf16)), not autocast: measured on an AMD EPYC with
# avx512_bf16 (deit_small, batch 16, 2 threads) fp32 4.8 img/s, bf16 autocast 6.9, bf16 weights 8.5:
# autocast pays a cast of every weight on every call, weights mode pays it once.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")
# int8 (asked for) runs the linear layers in oneDNN's int8 kernels. On a 2-core Intel Xeon with avx512_vnni
# and avx512_bf16 but no AMX, whose bf16 units run at half the fp32 rate, deit_small's int8 layers ran
# 2.1-2.9x their fp32 ones (activation quantization included) and the model 1.6-2.5x timm's fp32, 2.1-2.8x
# with calibrated ranges (benchmarks/README.md). Not measured on an AMX Xeon (amx_int8), where bf16 weights ran 2.6x timm and torch's
# older eager int8 only 35 img/s against bf16's 114. ONNX Runtime's int8 is the other route (vitzoo export).
INT8_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # u8 x s8 products summed in int32, no saturation
MIN_AUTO_FLOPS = 1e8  # below ~0.1 GFLOP per image the forward is too short to time, and fp32 is kept
AUTO_MIN_SPEEDUP = 1.1  # bf16 must measure this much faster than fp32 to be chosen

_decided: dict[tuple, Precision] = {}  # one measurement (and one printed line) per model and device


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_bf16_units() -> list[str]:
    """The bf16 units this CPU has (AMX-BF16, AVX512-BF16), by their /proc/cpuinfo flag; [] if none."""
    flags = cpu_flags()
    return [f for f in BF16_CPU_FLAGS if f in flags]


def packs_linears(device: torch.device | None, dtype: torch.dtype) -> bool:
    """Whether inference on ``device`` in ``dtype`` packs the linear layers for oneDNN: on a CPU, for bf16,
    and for fp32 where the CPU has bf16 units -- where it was measured. On a 2-core AMX Xeon
    (benchmarks/README.md): bf16 deit_small / deit_base 1.01-1.07x / 1.07-1.16x the unpacked forward; fp32
    t2t_vit_14 / t2t_vit_t_14 / deit_small 1.05x / 1.02x / 1.04x. On CPUs without bf16 units fp32 keeps
    timm's operator sequence, which the ">= 1.0x timm" promise there rests on. Never where this CPU lacks
    oneDNN's path for ``dtype`` (:func:`packing_available`)."""
    if device is None or device.type != "cpu" or not packing_available(dtype):
        return False
    return dtype == torch.bfloat16 or (dtype == torch.float32 and bool(cpu_bf16_units()))


def weights_precision(dtype: torch.dtype, why: str, device: torch.device | None = None) -> Precision:
    short = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    return Precision(weights=dtype, name=f"{short} weights ({why})", pack=packs_linears(device, dtype))


def fp32_precision(why: str, device: torch.device) -> Precision:
    return Precision(name=f"fp32 ({why})", pack=packs_linears(device, torch.float32))


def refuse_int8(choice: str, device: torch.device | None = None, *, training: bool = False) -> None:
    """``int8`` where it cannot run: one line, before the weights load. ``device`` None = not known yet."""
    if choice != "int8":
        return
    if training:
        raise UserError("int8 is for inference (vitzoo eval --amp_dtype int8, infer / attention / bench "
                        "--precision int8): training computes its gradients in fp32, bf16 or fp16")
    if device is not None and device.type != "cpu":
        raise UserError(f"int8 runs on a CPU (oneDNN's int8 kernels); on {device.type} use --precision auto "
                        f"(bf16 where supported)")
    if not int8_available():
        raise UserError("int8 needs torch with oneDNN on an x86 CPU; elsewhere ONNX Runtime's int8: vitzoo export "
                        "--precision int8, then vitzoo eval-onnx / infer-onnx")


def int8_units() -> list[str]:
    """This CPU's flags among :data:`INT8_VNNI_FLAGS` (units that sum int8 products in int32)."""
    return [f for f in INT8_VNNI_FLAGS if f in cpu_flags()]


def int8_precision(why: str) -> Precision:
    """int8 linear layers: 8-bit weights where this CPU sums int8 products in int32 (VNNI, AMX-int8), 7-bit
    elsewhere (VPMADDUBSW saturates the int16 sum of two 8-bit products: models/packed.Int8Linear)."""
    units = int8_units()
    bits = 8 if units else 7
    has = f"CPU has {'+'.join(units)}" if units else "7-bit weights: this CPU has no VNNI"
    return Precision(name=f"int8 ({why}; linear layers in int8, {has}; top-1 may move: eval it)",
                     int8_weight_bits=bits)


def inference_precision(choice: str, device: torch.device, model: torch.nn.Module | None = None,
                        *, announce: bool = True) -> Precision:
    """``--precision auto|fp32|bf16|fp16`` of the inference commands -> a :class:`Precision`.

    ``auto``: on CUDA bf16 where the GPU supports it, else fp32 (fp16 is never chosen silently: its range
    can overflow). On a CPU, bf16 only when the CPU has bf16 units *and* a forward of ``model`` measures
    at least ``AUTO_MIN_SPEEDUP`` faster in bf16 than in fp32 (two images, timed once per process);
    fp32 otherwise. What was chosen, and why, is printed once (stderr) when ``announce``.
    """
    if choice not in PRECISION_CHOICES:
        raise UserError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {choice!r}")
    refuse_int8(choice, device)
    key = (choice, str(device), _model_key(model))
    if key not in _decided:
        _decided[key] = _with_int8_hint(choice, device, model, _decide(choice, device, model))
        if announce:
            print(f"precision: {_decided[key].name}", file=sys.stderr, flush=True)
    return _decided[key]


def _with_int8_hint(choice: str, device: torch.device, model: torch.nn.Module | None,
                    precision: Precision) -> Precision:
    """``auto`` that kept fp32 for a model large enough to time, on an x86 CPU: say that int8 would run
    faster (never chosen silently: it moves the numbers more than bf16 does): deit_small 2.1-2.4x timm fp32
    on a Xeon with VNNI, 1.6x with 7-bit weights on an AVX2-only EPYC (benchmarks/README.md)."""
    if (choice != "auto" or device.type != "cpu" or precision.weights or not int8_available()
            or (model is not None and approx_flops(model) < MIN_AUTO_FLOPS)):
        return precision
    units = int8_units()
    uses = f"would use its {'+'.join(units)} units" if units else "would run faster (7-bit weights: this CPU has no VNNI)"
    return replace(precision, name=f"{precision.name}; int8, asked for by name, {uses}")


def _model_key(model: torch.nn.Module | None) -> tuple:
    if model is None:
        return ()
    return (type(model).__name__, getattr(model, "arch", None), str(getattr(model, "model_kwargs", None)),
            sum(p.numel() for p in model.parameters()))


def _decide(choice: str, device: torch.device, model: torch.nn.Module | None) -> Precision:
    if choice == "fp32":
        return fp32_precision("asked for", device)
    if choice == "bf16":
        if device.type == "cpu" and not cpu_bf16_units():
            return weights_precision(torch.bfloat16, f"asked for; {NO_BF16_UNITS}: --precision auto picks fp32", device)
        return weights_precision(torch.bfloat16, "asked for", device)
    if choice == "int8":
        return int8_precision("asked for")
    if choice == "fp16":
        if device.type == "cpu":  # fp16 weights have no fast CPU kernels; autocast keeps fp32 where needed
            return Precision(autocast=torch.float16, name="fp16 autocast (asked for; CPU)")
        return weights_precision(torch.float16, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return weights_precision(torch.bfloat16, "auto: the GPU supports bf16")
        return Precision(name="fp32 (auto: the GPU has no bf16)")
    if device.type != "cpu":
        return Precision(name=f"fp32 (auto on {device.type})")
    units = cpu_bf16_units()
    if not units:
        return Precision(name="fp32 (auto: this CPU has no bf16 units: no avx512_bf16 / amx_bf16)")
    if model is None:
        return weights_precision(torch.bfloat16, f"auto: CPU has {'+'.join(units)}", device)
    flops = approx_flops(model)
    if flops < MIN_AUTO_FLOPS:
        return fp32_precision(f"auto: model too small for bf16 to pay, ~{flops / 1e6:.0f} MFLOP/image", device)
    speedup, cached = remembered_speedup(model, device)
    when = " (remembered from an earlier run)" if cached else ""
    if speedup >= AUTO_MIN_SPEEDUP:
        return weights_precision(torch.bfloat16, f"auto: CPU has {'+'.join(units)}, forward measured "
                                                 f"{speedup:.2f}x fp32{when}", device)
    return fp32_precision(f"auto: CPU has {'+'.join(units)} but bf16 measured {speedup:.2f}x fp32 for this "
                          f"model{when}", device)


def cache_file() -> Path:
    """Where measured speed-ups are kept between runs: $VITZOO_CACHE_DIR or ~/.cache/vitzoo."""
    return Path(os.environ.get("VITZOO_CACHE_DIR") or Path.home() / ".cache" / "vitzoo") / "precision.json"


def remembered_speedup(model: torch.nn.Module, device: torch.device, train: bool = False) -> tuple[float, bool]:
    """(bf16 / fp32 speed-up of the model's forward -- or, ``train``, of its training step -- and whether
    it came from the cache). The measurement costs a few forwards (~0.7 s for deit_small on one core),
    paid by every short ``vitzoo infer``; it depends only on the CPU, torch and the model's shape, so it is
    kept per (CPU model and flags, torch version, model, infer/train) in :func:`cache_file`. A training
    step takes longer (3 s for deit_small, 13 s for BEiT-base pre-training on a 2-core Xeon): a line on
    stderr says what the pause is."""
    key = [torch.__version__, str(_model_key(model))] + (["train"] if train else [])

    def measure() -> float:
        if train:
            print("precision: timing a training step in bf16 autocast and in fp32 (amp_dtype auto; once per "
                  f"CPU and model, remembered in {cache_file().parent})", file=sys.stderr, flush=True)
        return measure_bf16_speedup(model, device, train=train)

    return remembered(key, measure)


def remembered(key: list[str], measure) -> tuple[float, bool]:
    """(``measure()``'s speed-up, whether it came from the cache) for ``key`` on this CPU (its model and
    bf16 units join the key). Shared by the torch policy and OpenVINO's (:mod:`vitzoo.deploy.openvino_runtime`).
    An unreadable or unwritable cache only means measuring again (an unwritable one is said, once per
    measurement)."""
    key = " | ".join([cpu_model(), " ".join(cpu_bf16_units()), *key])
    path = cache_file()
    try:
        known = json.loads(path.read_text())
        return float(known[key]), True
    except (OSError, ValueError, KeyError, TypeError):
        known = None
    speedup = float(measure())
    known = known if isinstance(known, dict) else {}
    try:  # atomic: a concurrent reader sees the old file or the new one
        atomic_write_text(path, json.dumps({**known, key: round(speedup, 4)}, indent=1) + "\n")
    except UserError as e:  # measured again next run: say so, and how to keep it
        print(f"note: the timing is not remembered ({e}); VITZOO_CACHE_DIR can name a writable folder",
              file=sys.stderr, flush=True)
    return speedup, False


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def approx_flops(model: torch.nn.Module) -> float:
    """~FLOPs of one image's forward: 2 x parameters x tokens (the matmuls of a ViT dominate)."""
    size = getattr(model, "data_config", {}).get("input_size", (3, 224, 224))
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", 16)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    tokens = (size[-2] // patch) * (size[-1] // patch) + 1
    return 2.0 * sum(p.numel() for p in model.parameters()) * tokens


def config_precision_choice(amp_level: str, amp_dtype: str) -> str:
    """A config's amp_level / amp_dtype as an inference ``--precision``: O0 = fp32, else amp_dtype; int8
    (eval only, asked for by name) whatever the level (a training config's O0 would otherwise hide it)."""
    return "fp32" if amp_level == "O0" and amp_dtype != "int8" else amp_dtype
