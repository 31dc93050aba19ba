"""int8 ONNX models with ONNX Runtime quantization: static (calibrated on images) or dynamic.

``static``: weights int8 per channel and activations uint8 with ranges calibrated on images from a folder
(the eval preprocessing the file records), QDQ format -- ORT's path to the VNNI / AMX-int8 kernels.
``dynamic``: weights int8, activation ranges computed per batch at run time; needs no images. Only the
matrix products with weights (MatMul / Gemm; the patch-embedding Conv too for static) are quantized:
LayerNorm, softmax, GELU and (static) the attention products stay fp32 (:func:`activation_matmuls`).

Weights are quantized to 7 bits (``reduce_range``), so the file computes the same integers on every x86
CPU. ORT multiplies uint8 activations by int8 weights with ``VPMADDUBSW`` on CPUs without VNNI, which adds
pairs of products into int16 and saturates: 2 x 255 x 127 overflows it, 2 x 255 x 64 does not. With 8-bit
weights the demo checkpoint's static int8 model lost 44 points of top-1 on a 2-core AVX2-only AMD EPYC
(0.888 -> 0.448; 52% agreement with fp32) and, with 7-bit ones, gained 0.2 (0.890; u8u8 and s8s8 also
kept it, 0.886, 13% slower there); CPUs with VNNI or AMX-int8 add in int32 and never saturate
(onnxruntime.ai, "Quantize ONNX models": "When to use reduce_range").

The int8 file keeps the fp32 file's metadata plus ``quantization`` (``int8 static`` | ``int8 dynamic``)
and ``quantized_from`` (the fp32 file's name beside it), so ``eval-onnx`` can report the accuracy change.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from vitzoo.checkpoint import atomic_write
from vitzoo.data import image_batches
from vitzoo.deploy.onnx_runtime import create_session, data_config_for, run_session
from vitzoo.errors import UserError

MODES = ("static", "dynamic")


class ImageReader:
    """ORT ``CalibrationDataReader``: batches of preprocessed images from a folder (recursive)."""

    def __init__(self, folder: str | os.PathLike, data_config: dict, input_name: str, limit: int = 64,
                 batch: int = 8):
        self.batches = image_batches(folder, data_config, limit, batch)
        self.input_name = input_name
        self.count = 0  # images read so far

    def get_next(self):
        x = next(self.batches, None)
        if x is None:
            return None
        self.count += len(x)
        return {self.input_name: x.numpy().astype(np.float32)}

    def rewind(self):  # pragma: no cover - ORT calls it only for some calibration methods
        pass


def quantize_onnx(fp32_path: str | os.PathLike, output: str | os.PathLike, mode: str = "static",
                  calibration: str | os.PathLike | None = None, num_images: int = 64) -> dict:
    """Write the int8 model of ``fp32_path`` to ``output``; returns {mode, calibration_images}."""
    import onnx  # here, not at the top: only quantizing needs it
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in MODES:
        raise UserError(f"quantization mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "static" and not calibration:
        raise UserError("static int8 quantization needs calibration images: --calibration-data FOLDER "
                        "(or --quantize-mode dynamic, which needs none)")
    fp32_path, output = Path(fp32_path), Path(output)
    source = onnx.load(fp32_path, load_external_data=False)
    props = {p.key: p.value for p in source.metadata_props}
    used = 0
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)  # shapes for the quantizer
        raw = Path(tmp) / "int8.onnx"
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(raw), weight_type=QuantType.QInt8, per_channel=False, reduce_range=True,
                             op_types_to_quantize=["MatMul", "Gemm"])
        else:
            session = create_session(fp32_path, "CPU")
            reader = ImageReader(calibration, data_config_for(session), session.get_inputs()[0].name, num_images)

            class Reader(CalibrationDataReader):  # ORT checks the base class
                def get_next(self):
                    return reader.get_next()

            quantize_static(str(pre), str(raw), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                            op_types_to_quantize=["MatMul", "Gemm", "Conv"],
                            nodes_to_exclude=activation_matmuls(onnx.load(pre)))
            used = reader.count
        proto = onnx.load(raw)
        del proto.metadata_props[:]
        props.update({"quantization": f"int8 {mode}", "quantized_from": fp32_path.name})
        for k, v in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.producer_name = "vitzoo"
        atomic_write(output, lambda t: onnx.save(proto, t))
    return {"mode": mode, "calibration_images": used}


def activation_matmuls(proto) -> list[str]:
    """MatMul nodes with no constant input: the attention products (q k^T, attn v). Static int8 leaves them
    fp32: quantized, they moved a trained test model's logits by 5.7 (max |logit| 2.9; top-1 agreement 48%),
    against 0.13 and 100% without them (tests/test_precision.py's model)."""
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in proto.graph.node if n.op_type == "MatMul" and not constants & set(n.input)]


def compare_sessions(int8_session, fp32_session, x: np.ndarray) -> dict:
    """Max abs logit difference and top-1 agreement of two sessions on the same batch."""
    a, b = run_session(fp32_session, x), run_session(int8_session, x)
    return {"max_abs_diff": float(np.abs(a - b).max()), "top1_agree": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_logit": float(np.abs(a).max())}
