"""Export a model to ONNX / TorchScript / torch.export, record its preprocessing, and verify the file.

Why each choice:
- ONNX goes through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) by default:
  with torch 2.15 it exports a ViT in well under a second and its graph matches PyTorch to ~1e-7, while the
  torch.export-based one (``dynamo=True``, available as an option) takes seconds per model on CPU.
- GELU stays exact (``erf``), which ONNX and ONNX Runtime run natively; the MindSpore seed needed a
  ``--fix-gelu`` tanh approximation to export at all. ``fix_gelu`` is kept as an option.
- Every file carries what is needed to reproduce the PyTorch numbers without extra flags: arch,
  model_kwargs, preprocessing (``data_config``: input size, crop_pct, mean/std, interpolation) and class
  names (the record :mod:`vitzoo.deploy.metadata` defines) -- as ONNX ``metadata_props``, TorchScript
  ``_extra_files`` and, for torch.export, both its ``extra_files`` and a ``<file>.json`` sidecar (readable
  without loading the program).
- Every export is reloaded from disk and run on a random batch against the PyTorch model (max abs diff
  reported; above tolerance is an error), because a silently wrong export is the worst outcome.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitzoo.checkpoint import atomic_write, atomic_write_text
from vitzoo.deploy.metadata import INPUT_NAME, META_FILE, OUTPUT_NAME, export_metadata
from vitzoo.deploy.onnx_runtime import create_session, run_session
from vitzoo.errors import UserError

FORMATS = ("ONNX", "TORCHSCRIPT", "EXPORTED_PROGRAM")
SUFFIX = {"ONNX": ".onnx", "TORCHSCRIPT": ".pt", "EXPORTED_PROGRAM": ".pt2"}
MIN_OPSET = 14  # scaled_dot_product_attention's symbolic (torch.onnx) needs opset 14


def set_gelu_approximate(model: nn.Module, approximate: str = "tanh") -> int:
    """Switch every ``nn.GELU`` to ``approximate`` in place (the seed's ``--fix-gelu``); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.GELU):
            m.approximate = approximate
            n += 1
    return n


def input_shape(model: nn.Module, meta: dict | None = None) -> tuple[int, int, int]:
    """(C, H, W) to trace with: the checkpoint's recorded input size, else the model's, else 3x224x224."""
    dc = (meta or {}).get("data_config") or getattr(model, "data_config", None) or {}
    size = dc.get("input_size") or (3, 224, 224)
    return tuple(int(s) for s in size)  # type: ignore[return-value]


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    tolerance: float
    batch_checked: int
    sidecar: Path | None = None
    gelu_diff: float = 0.0  # |tanh-GELU model - exact model| on the check batch (only with fix_gelu)


def parse_batch(batch: str | int) -> int | None:
    """``--batch``: None for 'dynamic' (any batch size), else the fixed batch size (a positive integer)."""
    if str(batch).lower() == "dynamic":
        return None
    try:
        batch = int(batch)
        assert batch > 0
    except (ValueError, AssertionError):
        raise UserError(f"--batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    return batch


def default_tolerance(fp16: bool, ref: torch.Tensor) -> float:
    """fp32: 1e-4 scaled by the logit magnitude (kernel order differences grow with it); fp16: 1e-2 x."""
    scale = max(1.0, float(ref.abs().max()))
    return (1e-2 if fp16 else 1e-4) * scale


def export_model(model: nn.Module, output: str | os.PathLike, file_format: str, *, meta: dict | None = None,
                 batch: str | int = "dynamic", fp16: bool = False, fix_gelu: bool = False, opset: int = 17,
                 dynamo: bool = False, tolerance: float | None = None, device: str = "cpu",
                 seed: int = 0) -> ExportResult:
    """Write ``model`` in ``file_format`` to ``output`` (atomically), then verify it against PyTorch."""
    file_format = file_format.upper()
    if file_format not in FORMATS:
        raise UserError(f"unknown --file-format {file_format!r}; choose one of {', '.join(FORMATS)}")
    fixed = parse_batch(batch)
    dynamic = fixed is None
    model = model.eval().float().to(device)
    c, h, w = input_shape(model, meta)
    gen = torch.Generator().manual_seed(seed)
    # trace with batch 2 (a batch of 1 invites size-1 specialisation), verify with a different size (3)
    n_trace = 2 if fixed is None else fixed
    n_check = 3 if fixed is None else fixed
    example = torch.randn(n_trace, c, h, w, generator=gen).to(device)
    check = torch.randn(n_check, c, h, w, generator=gen).to(device)
    with torch.no_grad():
        exact = model(check).float().cpu()  # what the user's checkpoint computes (fp32, exact GELU)
        if fix_gelu:
            set_gelu_approximate(model, "tanh")
        # the reference is always the fp32 PyTorch model: an fp16 export is judged by what it loses
        ref = model(check).float().cpu()
    dtype = torch.float16 if fp16 else torch.float32
    model = model.to(dtype)
    example, check = example.to(dtype), check.to(dtype)
    props = export_metadata(model, meta, fix_gelu=fix_gelu, fp16=fp16,
                            batch="dynamic" if fixed is None else str(fixed))
    path = Path(output)
    sidecar = None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter; failures still raise
        if file_format == "ONNX":
            atomic_write(path, lambda tmp: _write_onnx(model, example, tmp, props, dynamic, opset, dynamo))
            got = _run_onnx(path, check, device)
        elif file_format == "TORCHSCRIPT":
            _write_torchscript(model, example, path, props)
            got = _run_torchscript(path, check, device)
        else:
            sidecar = _write_exported_program(model, example, path, props, dynamic)
            got = _run_exported_program(path, check)
    diff = float((got.float() - ref).abs().max())
    tol = tolerance if tolerance is not None else default_tolerance(fp16, ref)
    if not diff <= tol:  # also catches NaN
        raise UserError(f"{path}: exported model differs from PyTorch by {diff:.3g} (> tolerance {tol:.3g}); "
                        "the file was written but should not be trusted")
    gelu_diff = float((ref - exact).abs().max()) if fix_gelu else 0.0
    return ExportResult(path, diff, tol, n_check, sidecar, gelu_diff)


def _write_onnx(model, example, tmp, props, dynamic, opset, dynamo) -> None:
    import onnx  # here, not at the top: only the ONNX format needs it, and it takes ~0.4 s to import

    kw: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    if opset < MIN_OPSET:
        raise UserError(f"--opset {opset}: the models need opset {MIN_OPSET} or later (attention is exported as "
                        "scaled_dot_product_attention, which opset 14 brought)")
    try:
        if dynamo:
            if dynamic:
                kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
            torch.onnx.export(model, (example,), tmp, dynamo=True, external_data=False, **kw)
        else:
            if dynamic:
                kw["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            with torch.no_grad():
                torch.onnx.export(model, (example,), tmp, dynamo=False, do_constant_folding=True, **kw)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as e:  # e.g. an opset this torch cannot write
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UserError(f"torch.onnx could not export at opset {opset}: {first}") from None
    proto = onnx.load(tmp)
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "vitzoo"
    onnx.save(proto, tmp)


def _write_torchscript(model, example, path: Path, props: dict[str, str]) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    extra = {META_FILE: json.dumps(props)}
    atomic_write(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))


def _write_exported_program(model, example, path: Path, props: dict[str, str], dynamic: bool) -> Path:
    """Write the program (metadata as an extra file) and its ``<file>.json`` sidecar; returns the sidecar."""
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    buf = io.BytesIO()  # torch.export wants a '.pt2' name or a buffer; the temp file has neither
    torch.export.save(program, buf, extra_files={META_FILE: json.dumps(props)})
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    sidecar = path.with_name(path.name + ".json")
    atomic_write_text(sidecar, json.dumps(props, indent=1))
    return sidecar


def _run_onnx(path: Path, x: torch.Tensor, device: str) -> torch.Tensor:
    sess = create_session(path, "GPU" if str(device).startswith("cuda") else "CPU")
    return torch.from_numpy(run_session(sess, x.cpu().numpy()))


def _run_torchscript(path: Path, x: torch.Tensor, device: str) -> torch.Tensor:
    loaded = torch.jit.load(str(path), map_location=device)  # (warnings silenced by the caller)
    with torch.no_grad():
        return loaded(x).float().cpu()


def _run_exported_program(path: Path, x: torch.Tensor) -> torch.Tensor:
    with open(path, "rb") as f:
        loaded = torch.export.load(f)
    with torch.no_grad():
        return loaded.module()(x).float().cpu()
