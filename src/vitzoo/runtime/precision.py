"""Which number format a model runs in: one decision for train, eval, infer and attention, as data.

The decision is a :class:`Precision`, a frozen dataclass: what to do (autocast / weights dtype, int8,
packing) and why (``reason`` and the facts it rests on: the CPU's units, a measured speed-up, the model's
size). :meth:`Precision.describe` renders it as the sentence the commands print; nothing parses that
sentence, consumers read the fields (DESIGN rule 14).

``amp_level`` follows the seeds (MindSpore AMP levels): O0 = fp32; O1/O2 = autocast (weights stay fp32,
matmuls in 16 bits); O3 = the weights and inputs themselves in 16 bits. ``amp_dtype`` picks bf16 or fp16;
``auto`` = bf16 where the device has it, fp16 otherwise -- and on a CPU bf16 only when it has bf16 units
(:mod:`vitzoo.runtime.cpu`) *and* a training step of the model measures faster in bf16, fp32 otherwise.

Inference (eval, infer, attention, bench; ``--precision auto|fp32|bf16|fp16|int8``) is
:func:`inference_precision`: ``auto`` = bf16 weights where the device has bf16 units and, on a CPU, a
forward of the model measures faster in bf16; fp32 otherwise. ``int8`` (CPU, asked for: it changes the
numbers more than bf16 does, so ``auto`` never picks it) runs the linear layers in oneDNN's int8 kernels
(:class:`vitzoo.runtime.packed.Int8Linear`). The choice is printed once with its reason.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch

from vitzoo.errors import UserError
from vitzoo.runtime import cpu
from vitzoo.runtime.bf16_timing import measure_bf16_speedup
from vitzoo.runtime.int8 import int8_available
from vitzoo.runtime.packed import pack_linears, packing_available
from vitzoo.runtime.timing_cache import cache_file, remembered

# Precision.reason: why the format was chosen
DEFAULT = "default"  # nothing to decide (a training config's O0)
ASKED = "asked"  # named by the user: --precision fp32|bf16|fp16|int8, amp_dtype bf16|fp16
NO_UNITS = "no_bf16_units"  # auto, on a CPU without bf16 units
UNITS = "bf16_units"  # auto, on a CPU with bf16 units and no model at hand to time
TOO_SMALL = "too_small"  # auto: the model's forward is too short to time (< MIN_AUTO_FLOPS)
MEASURED = "measured"  # auto: bf16 against fp32 timed for this model (``measured``, ``remembered``)
GPU = "gpu"  # auto on a GPU: bf16 where it supports it, else fp32 (inference) / fp16 (training)
OTHER_DEVICE = "other_device"  # auto on another device type (mps, ...): fp32
REASONS = (DEFAULT, ASKED, NO_UNITS, UNITS, TOO_SMALL, MEASURED, GPU, OTHER_DEVICE)

SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# bf16 asked for on a CPU without bf16 units is obeyed, with its cost said: bf16 products run a scalar
# fallback there (a 512^3 product at 1.3 GFLOP/s, T2T's bf16 autocast forward 11-20x slower than fp32 on an
# AVX2-only EPYC, benchmarks/README.md)
NO_BF16_UNITS = "this CPU has no bf16 units, so it runs slower than fp32 here"


@dataclass(frozen=True)
class Precision:
    """How a model runs, and why.

    What: ``autocast``: dtype of autocast regions (None = off); ``weights``: dtype the model and inputs are
    cast to (None = fp32); ``int8_weight_bits``: the linear layers in int8 with weights of that many bits
    (8, or 7 on CPUs without VNNI; None = not int8); ``calibrated``: int8 input ranges fixed beforehand;
    ``pack``: pre-pack the linear layers for oneDNN (:mod:`vitzoo.runtime.packed`).

    Why: ``reason`` (one of :data:`REASONS`); ``device`` its type; ``amp_level`` the training config's
    level (None: an inference decision); ``bf16_units`` / ``int8_units`` the CPU's units it rests on;
    ``measured`` the bf16 / fp32 speed-up timed for the model (``remembered``: from an earlier run);
    ``mflops`` the model's MFLOP per image where it was too small to time; ``int8_hint``: fp32 was kept
    where int8, asked for by name, would run faster."""

    autocast: torch.dtype | None = None
    weights: torch.dtype | None = None
    int8_weight_bits: int | None = None
    calibrated: bool = False
    pack: bool = False
    reason: str = DEFAULT
    device: str = "cpu"
    amp_level: str | None = None
    bf16_units: tuple[str, ...] = ()
    int8_units: tuple[str, ...] = ()
    measured: float | None = None
    remembered: bool = False
    mflops: float | None = None
    int8_hint: bool = False

    @property
    def fp16(self) -> bool:
        """fp16 anywhere means gradients need loss scaling."""
        return torch.float16 in (self.autocast, self.weights)

    @property
    def dtype(self) -> str:
        """The number format of the matrix products: fp32, bf16, fp16 or int8."""
        if self.int8_weight_bits:
            return "int8"
        return SHORT[self.weights or self.autocast or torch.float32]

    @property
    def label(self) -> str:
        """The short name a table shows: 'fp32', 'bf16 weights', 'fp16 autocast', 'int8 calibrated'."""
        if self.int8_weight_bits:
            return "int8 calibrated" if self.calibrated else "int8"
        if self.weights is not None:
            return f"{self.dtype} weights" + (" and activations" if self.amp_level else "")
        return f"{self.dtype} autocast" if self.autocast is not None else "fp32"

    def describe(self) -> str:
        """The decision as one sentence, e.g. 'bf16 weights (auto: CPU has amx_bf16, forward measured 1.80x
        fp32)': the only place a Precision becomes prose."""
        why = self._training_why() if self.amp_level else self._inference_why()
        return f"{self.label} ({why})" if why else self.label

    __str__ = describe

    def _training_why(self) -> str:
        units, when = "+".join(self.bf16_units), " (remembered from an earlier run)" if self.remembered else ""
        if self.dtype == "fp32":  # auto kept fp32 (O0 has nothing to say)
            if self.reason == NO_UNITS:
                return "amp_dtype auto on a CPU without bf16 units: autocast is slower than fp32 there"
            if self.reason == TOO_SMALL:
                return f"amp_dtype auto: model too small for bf16 to pay, ~{self.mflops:.0f} MFLOP/image"
            if self.reason == MEASURED:
                return (f"amp_dtype auto: CPU has {units} but a bf16-autocast training step measured "
                        f"{self.measured:.2f}x fp32 for this model{when}")
            return ""
        if self.reason == UNITS:
            return f"{self.amp_level}; amp_dtype auto: CPU has {units}"
        if self.reason == MEASURED:
            return f"{self.amp_level}; amp_dtype auto: CPU has {units}, training step measured {self.measured:.2f}x fp32{when}"
        if self.reason == ASKED and self._bf16_without_units():
            return f"{self.amp_level}; {NO_BF16_UNITS}: amp_dtype auto picks fp32"
        return self.amp_level

    def _inference_why(self) -> str:
        why = self._inference_reason()
        if self.int8_hint:
            uses = (f"would use its {'+'.join(self.int8_units)} units" if self.int8_units
                    else "would run faster (7-bit weights: this CPU has no VNNI)")
            why += f"; int8, asked for by name, {uses}"
        return why

    def _inference_reason(self) -> str:
        units, when = "+".join(self.bf16_units), " (remembered from an earlier run)" if self.remembered else ""
        if self.reason == ASKED:
            if self.int8_weight_bits:
                has = f"CPU has {'+'.join(self.int8_units)}" if self.int8_units else "7-bit weights: this CPU has no VNNI"
                return f"asked for; linear layers in int8, {has}; top-1 may move: eval it"
            if self._bf16_without_units():
                return f"asked for; {NO_BF16_UNITS}: --precision auto picks fp32"
            return "asked for; CPU" if self.autocast == torch.float16 and self.device == "cpu" else "asked for"
        if self.reason == MEASURED and self.dtype == "bf16":
            return f"auto: CPU has {units}, forward measured {self.measured:.2f}x fp32{when}"
        if self.reason == MEASURED:
            return f"auto: CPU has {units} but bf16 measured {self.measured:.2f}x fp32 for this model{when}"
        if self.reason == TOO_SMALL:
            return f"auto: model too small for bf16 to pay, ~{self.mflops:.0f} MFLOP/image"
        if self.reason == NO_UNITS:
            return "auto: this CPU has no bf16 units: no avx512_bf16 / amx_bf16"
        if self.reason == UNITS:
            return f"auto: CPU has {units}"
        if self.reason == GPU:
            return "auto: the GPU supports bf16" if self.dtype == "bf16" else "auto: the GPU has no bf16"
        return f"auto on {self.device}" if self.reason == OTHER_DEVICE else ""

    def _bf16_without_units(self) -> bool:
        return self.device == "cpu" and self.dtype == "bf16" and not self.bf16_units

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


def resolve_precision(amp_level: str, amp_dtype: str, device: torch.device,
                      model: torch.nn.Module | None = None) -> Precision:
    """amp_level O0|O1|O2|O3 and amp_dtype auto|bf16|fp16 on ``device`` -> a :class:`Precision`.

    ``auto`` on a CPU with bf16 units and a ``model`` (the fp32 model about to train): bf16 only when a
    training step of it measures at least ``AUTO_MIN_SPEEDUP`` faster in bf16 (:func:`remembered_speedup`,
    ``train=True``); without a model, the units decide. ``int8`` is refused: it is for inference."""
    refuse_int8(amp_dtype, training=True)
    if amp_level == "O0":
        return FP32
    fields = {"amp_level": amp_level, "device": device.type, "reason": ASKED if amp_dtype != "auto" else GPU}
    if device.type == "cpu":
        fields["bf16_units"] = units = cpu.cpu_bf16_units()
        if amp_dtype == "auto" and not units:
            return Precision(**{**fields, "reason": NO_UNITS})
        if amp_dtype == "auto":
            # measured: deit_tiny / deit_small train steps in bf16 autocast 1.51x / 1.72x timm's fp32 step on
            # an AMD EPYC with avx512_bf16, 1.61x / 2.14x on a Xeon with AMX, 0.61x / 0.63x on a Xeon with
            # avx512_bf16 and no AMX (benchmarks/README.md): measure where a model is at hand
            fields["reason"] = UNITS
            if model is not None:
                fields.update(_measured(model, device, train=True))
                if fields["reason"] == TOO_SMALL or fields["measured"] < AUTO_MIN_SPEEDUP:
                    return Precision(**fields)
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    use_fp16 = amp_dtype == "fp16" or (amp_dtype == "auto" and not bf16_ok)
    dtype = torch.float16 if use_fp16 else torch.bfloat16
    if amp_level == "O3":
        return Precision(weights=dtype, **fields)
    return Precision(autocast=dtype, **fields)


def _measured(model: torch.nn.Module, device: torch.device, train: bool = False) -> dict:
    """The fields of a decision by timing: too small to time, or the measured bf16 / fp32 speed-up."""
    flops = approx_flops(model)
    if flops < MIN_AUTO_FLOPS:
        return {"reason": TOO_SMALL, "mflops": flops / 1e6}
    speedup, cached = remembered_speedup(model, device, train=train)
    return {"reason": MEASURED, "measured": speedup, "remembered": cached}


# --- inference: precision by capability -------------------------------------------------------------------
# Inference runs bf16/fp16 as *weights* (model.to(bf16)), not autocast: measured on an AMD EPYC with
# avx512_bf16 (deit_small, batch 16, 2 threads) fp32 4.8 img/s, bf16 autocast 6.9, bf16 weights 8.5:
# autocast pays a cast of every weight on every call, weights mode pays it once.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")
# int8 (asked for) runs the linear layers in oneDNN's int8 kernels. On a 2-core Intel Xeon with avx512_vnni
# and avx512_bf16 but no AMX, whose bf16 units run at half the fp32 rate, deit_small's int8 layers ran
# 2.1-2.9x their fp32 ones (activation quantization included) and the model 1.6-2.5x timm's fp32, 2.1-2.8x
# with calibrated ranges (benchmarks/README.md). ONNX Runtime's int8 is the other route (vitzoo export).
MIN_AUTO_FLOPS = 1e8  # below ~0.1 GFLOP per image the forward is too short to time, and fp32 is kept
AUTO_MIN_SPEEDUP = 1.1  # bf16 must measure this much faster than fp32 to be chosen

_decided: dict[tuple, Precision] = {}  # one measurement (and one printed line) per model and device


def packs_linears(device: torch.device | None, dtype: torch.dtype) -> bool:
    """Whether inference on ``device`` in ``dtype`` packs the linear layers for oneDNN: on a CPU, for bf16,
    and for fp32 where the CPU has bf16 units -- where it was measured to win. On a 2-core AMX Xeon
    (benchmarks/README.md): bf16 deit_small / deit_base 1.01-1.07x / 1.07-1.16x the unpacked forward; fp32
    t2t_vit_14 / t2t_vit_t_14 / deit_small 1.05x / 1.02x / 1.04x. Against the library path
    (benchmarks/bench_kernels.py, deit_small batch 32, a 2-core AMD EPYC with avx512_bf16 / avx512_vnni):
    fp32 packed 20.4 img/s, eager 18.1, ``torch.compile`` with freezing 17.8; bf16 packed 33.0, bf16 eager
    29.3, compiled 33.0 (after its compile). On CPUs without bf16 units fp32 keeps timm's operator sequence:
    packed ran 0.92-0.96x unpacked on an AVX2-only EPYC, 0.99x with oneDNN held to AVX2. Never where this CPU lacks oneDNN's path for ``dtype``
    (:func:`packing_available`)."""
    if device is None or device.type != "cpu" or not packing_available(dtype):
        return False
    return dtype == torch.bfloat16 or (dtype == torch.float32 and bool(cpu.cpu_bf16_units()))


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


def int8_precision(reason: str = ASKED) -> Precision:
    """int8 linear layers: 8-bit weights where this CPU sums int8 products in int32 (VNNI, AMX-int8), 7-bit
    elsewhere (VPMADDUBSW saturates the int16 sum of two 8-bit products: runtime/packed.Int8Linear)."""
    return Precision(int8_weight_bits=cpu.int8_weight_bits(), int8_units=cpu.int8_units(), reason=reason)


def inference_precision(choice: str, device: torch.device, model: torch.nn.Module | None = None,
                        *, announce: bool = True) -> Precision:
    """``--precision auto|fp32|bf16|fp16|int8`` of the inference commands -> a :class:`Precision`.

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
        decided = _decide(choice, device, model)
        if decided.dtype in ("fp32", "bf16", "fp16"):
            decided = replace(decided, pack=packs_linears(device, decided.weights or torch.float32)
                              and decided.autocast is None)
        _decided[key] = _with_int8_hint(choice, device, model, decided)
        if announce:
            print(f"precision: {_decided[key].describe()}", file=sys.stderr, flush=True)
    return _decided[key]


def _with_int8_hint(choice: str, device: torch.device, model: torch.nn.Module | None,
                    precision: Precision) -> Precision:
    """``auto`` that kept fp32 for a model large enough to time, on an x86 CPU: say that int8 would run
    faster (never chosen silently: it moves the numbers more than bf16 does): deit_small 2.1-2.4x timm fp32
    on a Xeon with VNNI, 1.6x with 7-bit weights on an AVX2-only EPYC (benchmarks/README.md)."""
    if (choice != "auto" or device.type != "cpu" or precision.weights or not int8_available()
            or (model is not None and approx_flops(model) < MIN_AUTO_FLOPS)):
        return precision
    return replace(precision, int8_hint=True, int8_units=cpu.int8_units())


def _model_key(model: torch.nn.Module | None) -> tuple:
    if model is None:
        return ()
    return (type(model).__name__, getattr(model, "arch", None), str(getattr(model, "model_kwargs", None)),
            sum(p.numel() for p in model.parameters()))


def _decide(choice: str, device: torch.device, model: torch.nn.Module | None) -> Precision:
    """The choice as a :class:`Precision` (packing is added by the caller)."""
    on = device.type
    if choice == "fp32":
        return Precision(reason=ASKED, device=on)
    if choice == "int8":
        return int8_precision()
    if choice in ("bf16", "fp16"):
        units = cpu.cpu_bf16_units() if on == "cpu" else ()
        if choice == "fp16" and on == "cpu":  # fp16 weights have no fast CPU kernels; autocast keeps fp32 where needed
            return Precision(autocast=torch.float16, reason=ASKED, device=on)
        dtype = torch.bfloat16 if choice == "bf16" else torch.float16
        return Precision(weights=dtype, reason=ASKED, device=on, bf16_units=units)
    if on == "cuda":
        return Precision(weights=torch.bfloat16 if torch.cuda.is_bf16_supported() else None, reason=GPU, device=on)
    if on != "cpu":
        return Precision(reason=OTHER_DEVICE, device=on)
    units = cpu.cpu_bf16_units()
    if not units:
        return Precision(reason=NO_UNITS, device=on)
    if model is None:
        return Precision(weights=torch.bfloat16, reason=UNITS, device=on, bf16_units=units)
    fields = _measured(model, device)
    bf16 = fields["reason"] == MEASURED and fields["measured"] >= AUTO_MIN_SPEEDUP
    return Precision(weights=torch.bfloat16 if bf16 else None, device=on, bf16_units=units, **fields)


def remembered_speedup(model: torch.nn.Module, device: torch.device, train: bool = False) -> tuple[float, bool]:
    """(bf16 / fp32 speed-up of the model's forward -- or, ``train``, of its training step -- and whether
    it came from the cache): kept per CPU, torch version, model and infer / train
    (:mod:`vitzoo.runtime.timing_cache`). A training step takes seconds: a line on stderr says what the
    pause is."""
    key = [torch.__version__, str(_model_key(model))] + (["train"] if train else [])

    def measure() -> float:
        if train:
            print("precision: timing a training step in bf16 autocast and in fp32 (amp_dtype auto; once per "
                  f"CPU and model, remembered in {cache_file().parent})", file=sys.stderr, flush=True)
        return measure_bf16_speedup(model, device, train=train)

    return remembered(key, measure)


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
