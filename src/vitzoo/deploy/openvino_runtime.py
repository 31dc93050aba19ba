"""OpenVINO as a second engine for exported ONNX files (``eval-onnx`` / ``infer-onnx --engine openvino``).

Why: issue 12 asked for OpenVINO "if it is faster on Intel CPUs -- measure and choose". Measured on a
2-core Intel Xeon with AMX (``benchmarks/bench_onnx.py --openvino``, deit_small, batch 8): the fp32 file
in OpenVINO's default CPU precision (bf16 on a CPU with AMX / AVX512-BF16) ran 4.85x ONNX Runtime's fp32
and 2.2x ORT's dynamic int8, and kept the demo checkpoint's top-1 (0.910 -> 0.910); with the f32 hint
1.11x. ORT's int8 files do not suit it: the dynamic one ran at 0.72x ORT's fp32, and the static one, fast
(4.4x), lost 31 points of top-1 on the demo checkpoint (0.910 -> 0.598, at the f32 hint too). So OpenVINO is
offered for fp32 (and fp16) files and refused for int8 files, with that reason. Its default precision is
not always the faster one: on a 2-core Intel Xeon with avx512_bf16 and no AMX the bf16 default ran at 0.76x
ONNX Runtime's fp32 and the f32 hint at 1.13x (bf16 products run at half the fp32 rate there), so ``auto``
times the two once per CPU and model (:func:`vitzoo.runtime.timing_cache.remembered`) and keeps the faster.

:class:`OpenVINOSession` wraps a compiled model in the part of ``onnxruntime.InferenceSession`` that
:mod:`vitzoo.deploy.onnx_runtime` uses (``get_inputs``, ``run``, ``get_modelmeta``), so evaluation,
prediction, preprocessing and metadata are one code path for both engines. The vitzoo metadata is read
from the ONNX file itself (protobuf, no code runs).
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from vitzoo.deploy.metadata import parse_metadata
from vitzoo.errors import UserError
from vitzoo.runtime.precision import AUTO_MIN_SPEEDUP
from vitzoo.runtime.timing_cache import remembered

# --precision of the ONNX commands -> OpenVINO's INFERENCE_PRECISION_HINT (auto: the plugin's own choice,
# bf16 on CPUs with bf16 units, f32 otherwise -- kept where it measures faster than f32)
PRECISION_HINTS = {"auto": None, "fp32": "f32", "bf16": "bf16", "fp16": "f16"}
TIMING_BATCH = 4  # images per timed call when ``auto`` compares the plugin's default with f32


@dataclass(frozen=True)
class GraphInput:
    """What the deploy helpers read of an ORT ``NodeArg``: name, shape (int or a name per axis), type."""

    name: str
    shape: list
    type: str


class OpenVINOSession:
    """An ONNX file compiled by OpenVINO's CPU plugin, with ONNX Runtime's session interface."""

    def __init__(self, path: str | os.PathLike, precision: str = "auto", threads: int | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise UserError("--engine openvino: OpenVINO is not installed (pip install openvino)") from None
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX model not found: {path}")
        if precision not in PRECISION_HINTS:
            raise UserError(f"--precision for OpenVINO must be one of {', '.join(PRECISION_HINTS)}, "
                            f"got {precision!r}")
        self.metadata = read_onnx_metadata(path)
        quantized = parse_metadata(self.metadata).get("quantization")
        if quantized:
            raise UserError(f"{path}: {quantized} files are written for ONNX Runtime; OpenVINO ran the dynamic "
                            "kind at 0.72x its fp32 speed and lost 31 points of top-1 on the static kind (demo "
                            "checkpoint): use --engine onnxruntime, or OpenVINO on the fp32 file (bf16 there)")
        self.version = ov.__version__.split("-")[0]
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if PRECISION_HINTS[precision]:
            config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        with own_signal_stack():
            core = ov.Core()
        self.compiled = _compile(core, path, config)
        port = self.compiled.inputs[0]
        shape = [d.get_length() if d.is_static else f"dim{i}" for i, d in enumerate(port.get_partial_shape())]
        kind = "tensor(float16)" if port.get_element_type() == ov.Type.f16 else "tensor(float)"
        self.input = GraphInput(port.get_any_name(), shape, kind)
        self.precision = _hint_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.asked, self.why = precision, ""
        if precision == "auto" and self.precision != "fp32":
            self._keep_the_faster(core, path, config)

    def _keep_the_faster(self, core, path: Path, config: dict) -> None:
        """``auto`` where the plugin chose a 16-bit precision: time it against the f32 hint (once per CPU,
        OpenVINO version and file) and keep f32 unless the default is ``AUTO_MIN_SPEEDUP`` faster. The f32
        model is compiled only when it is timed or kept (a remembered "16 bits is faster" costs nothing)."""
        f32_config = {**config, "INFERENCE_PRECISION_HINT": "f32"}
        shape = [TIMING_BATCH if isinstance(d, str) else d for d in self.input.shape]
        key = ["openvino " + self.version, str(path.stat().st_size), self.metadata.get("arch", path.name),
               self.metadata.get("model_kwargs", ""), str(shape), str(config.get("INFERENCE_NUM_THREADS", ""))]
        compiled_f32 = []

        def measure() -> float:
            compiled_f32.append(_compile(core, path, f32_config))
            x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
            return _time_ratio(compiled_f32[0], self.compiled, x)

        try:
            speedup, cached = remembered(key, measure)
        except RuntimeError as e:  # e.g. a foreign file whose image size is not fixed: keep the plugin's choice
            self.why = f"auto: OpenVINO's default, not timed ({str(e).strip().splitlines()[0][:80]})"
            return
        when = ", remembered from an earlier run" if cached else ""
        if speedup < AUTO_MIN_SPEEDUP:
            fp32 = compiled_f32[0] if compiled_f32 else _compile(core, path, f32_config)
            self.compiled, low, self.precision = fp32, self.precision, "fp32"
            self.why = f"auto: {low} measured {speedup:.2f}x fp32 here{when}"
        else:
            self.why = f"auto: measured {speedup:.2f}x fp32{when}"

    def get_inputs(self) -> list[GraphInput]:
        return [self.input]

    def run(self, output_names, feeds: dict) -> list[np.ndarray]:
        (x,) = feeds.values()
        return [np.asarray(self.compiled(x)[0])]

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map=self.metadata)

    def describe(self) -> str:
        """One line for stderr; says so where OpenVINO did not take the asked precision (it runs f32 for a
        bf16 hint on a CPU without bf16 units, e.g. an AVX2-only EPYC)."""
        fallback = "" if self.asked in ("auto", self.precision) else f", not the {self.asked} asked for: " \
            "this CPU has no units for it"
        why = f"; {self.why}" if self.why else ""
        return f"engine: OpenVINO {self.version} (CPU, inference precision {self.precision}{fallback}{why})"


def _compile(core, path: Path, config: dict):
    try:
        with own_signal_stack():
            return core.compile_model(str(path), "CPU", config)
    except Exception as e:  # parse errors, unsupported operators
        raise UserError(f"{path}: cannot be loaded by OpenVINO ({str(e).strip().splitlines()[0]})") from e


class _SignalStack(ctypes.Structure):  # stack_t, <signal.h> (Linux)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextmanager
def own_signal_stack():
    """Give the calling thread its own alternate signal stack back after OpenVINO has run.

    OpenVINO 2026.4's CPU plugin installs an alternate signal stack (11,824 bytes) on the thread that
    compiles a model and puts back the one it found when its Core goes away. Two models freed in the order
    they were made leave the thread's stack pointing at unmapped memory, and the next signal with a Python
    handler (SIGCHLD from a DataLoader, the SIGTERM of a pre-emption, Ctrl-C) killed the process with a
    SIGSEGV (si_code SI_KERNEL: the kernel could not write the signal frame). Found by the test suite, where
    a later test's subprocess ended; ``tests/test_openvino_runtime.py`` reproduces it."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    saved = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(saved), None)


def _time_ratio(fp32, low, x: np.ndarray, rounds: int = 3) -> float:
    """Wall-clock time of ``fp32(x)`` / ``low(x)`` (the 16-bit model's speed-up): best of ``rounds``
    alternating calls after a warm-up (OpenVINO runs its own threads, so the process's CPU time would
    count their spinning)."""
    def seconds(compiled) -> float:
        t0 = time.perf_counter()
        compiled(x)
        return time.perf_counter() - t0

    fp32(x), low(x)
    a, b = zip(*((seconds(fp32), seconds(low)) for _ in range(rounds)))
    return min(a) / max(min(b), 1e-9)


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The file's ``metadata_props`` as strings (parsed later by :func:`parse_metadata`), without the
    weights (external data is not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # not a protobuf
        raise UserError(f"{path}: not an ONNX file ({str(e).strip().splitlines()[0]})") from e
    return {p.key: p.value for p in model.metadata_props}


def _hint_name(element_type) -> str:
    """OpenVINO's element type (Type.bf16 / f16 / f32) -> 'bf16' / 'fp16' / 'fp32'."""
    name = element_type.get_type_name()
    return {"f32": "fp32", "f16": "fp16"}.get(name, name)
