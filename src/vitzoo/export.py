"""Export a model to ONNX / TorchScript / torch.export, record its preprocessing, and verify the file.

Why each choice:
- ONNX goes through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) by default:
  with torch 2.15 it exports a ViT in well under a second and its graph matches PyTorch to ~1e-7, while the
  torch.export-based one (``dynamo=True``, available as an option) takes seconds per model on CPU.
- GELU stays exact (``erf``), which ONNX and ONNX Runtime run natively; the MindSpore seed needed a
  ``--fix-gelu`` tanh approximation to export at all. ``fix_gelu`` is kept as an option.
- Every file carries what is needed to reproduce the PyTorch numbers without extra flags: arch,
  model_kwargs, preprocessing (``data_config``: input size, crop_pct, mean/std, interpolation) and class
  names -- as ONNX ``metadata_props``, TorchScript ``_extra_files`` and, for torch.export, both its
  ``extra_files`` and a ``<file>.json`` sidecar (readable without loading the program).
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

from vitzoo.errors import UserError

FORMATS = ("ONNX", "TORCHSCRIPT", "EXPORTED_PROGRAM")
SUFFIX = {"ONNX": ".onnx", "TORCHSCRIPT": ".pt", "EXPORTED_PROGRAM": ".pt2"}
META_FILE = "vitzoo_meta.json"  # name of the TorchScript / torch.export extra file
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def set_gelu_approximate(model: nn.Module, approximate: str = "tanh") -> int:
    """Switch every ``nn.GELU`` to ``approximate`` in place (the seed's ``--fix-gelu``); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.GELU):
            m.approximate = approximate
            n += 1
    return n


def export_metadata(model: nn.Module, meta: dict | None = None, *, fix_gelu: bool = False) -> dict[str, str]:
    """String -> string metadata (ONNX metadata_props style); structured values are JSON-encoded."""
    from vitzoo import __version__

    meta = meta or {}
    data_config = meta.get("data_config") or getattr(model, "data_config", None) or {}
    data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(data_config).items()}
    out = {
        "arch": str(meta.get("arch") or getattr(model, "arch", "") or type(model).__name__),
        "num_classes": str(int(getattr(model, "num_classes", 0) or meta.get("num_classes") or 0)),
        "model_kwargs": json.dumps(meta.get("model_kwargs") or getattr(model, "model_kwargs", {}) or {}),
        "data_config": json.dumps(data_config),
        "class_names": json.dumps(list(meta.get("class_names") or [])),
        "gelu": "tanh" if fix_gelu else "exact",
        "producer": f"vitzoo {__version__} (torch {torch.__version__})",
    }
    return out


def parse_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`export_metadata` (unknown keys kept as strings)."""
    out: dict[str, Any] = dict(props)
    for k in ("model_kwargs", "data_config", "class_names"):
        if k in out:
            try:
                out[k] = json.loads(out[k])
            except (TypeError, ValueError):
                out[k] = {} if k != "class_names" else []
    if "num_classes" in out:
        try:
            out["num_classes"] = int(out["num_classes"])
        except ValueError:
            out["num_classes"] = 0
    return out


def input_shape(model: nn.Module, meta: dict | None = None) -> tuple[int, int, int]:
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


def default_tolerance(fp16: bool, ref: torch.Tensor) -> float:
    """fp32: 1e-4 scaled by the logit magnitude (kernel order differences grow with it); fp16: 1e-2 x."""
    scale = max(1.0, float(ref.abs().max()))
    return (1e-2 if fp16 else 1e-4) * scale


def export_model(model: nn.Module, output: str | os.PathLike, file_format: str, *, meta: dict | None = None,
                 batch: str | int = "dynamic", fp16: bool = False, fix_gelu: bool = False, opset: int = 17,
                 dynamo: bool = False, tolerance: float | None = None, device: str = "cpu",
                 seed: int = 0) -> ExportResult:
    """Write ``model`` in ``file_format`` to ``output`` (atomically), then verify it against PyTorch."""
    from vitzoo.checkpoint import atomic_write, atomic_write_text

    file_format = file_format.upper()
    if file_format not in FORMATS:
        raise UserError(f"unknown --file-format {file_format!r}; choose one of {', '.join(FORMATS)}")
    dynamic = str(batch).lower() == "dynamic"
    if not dynamic:
        try:
            batch = int(batch)
            assert batch > 0
        except (ValueError, AssertionError):
            raise UserError(f"--batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    model = model.eval().float().to(device)
    c, h, w = input_shape(model, meta)
    gen = torch.Generator().manual_seed(seed)
    # trace with batch 2 (a batch of 1 invites size-1 specialisation), verify with a different size (3)
    n_trace = 2 if dynamic else int(batch)
    n_check = 3 if dynamic else int(batch)
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
    props = export_metadata(model, meta, fix_gelu=fix_gelu)
    props["batch"] = "dynamic" if dynamic else str(batch)
    props["dtype"] = "float16" if fp16 else "float32"
    path = Path(output)
    sidecar = None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter; failures still raise
        if file_format == "ONNX":
            atomic_write(path, lambda tmp: _write_onnx(model, example, tmp, props, dynamic, opset, dynamo))
            got = _run_onnx(path, check, device)
        elif file_format == "TORCHSCRIPT":
            with torch.no_grad():
                traced = torch.jit.trace(model, example, check_trace=False)
            extra = {META_FILE: json.dumps(props)}
            atomic_write(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))
            got = _run_torchscript(path, check, device)
        else:
            shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
            with torch.no_grad():
                ep = torch.export.export(model, (example,), dynamic_shapes=shapes)
            buf = io.BytesIO()  # torch.export wants a '.pt2' name or a buffer; the temp file has neither
            torch.export.save(ep, buf, extra_files={META_FILE: json.dumps(props)})
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
            sidecar = path.with_name(path.name + ".json")
            atomic_write_text(sidecar, json.dumps(props, indent=1))
            with open(path, "rb") as f:
                loaded = torch.export.load(f)
            with torch.no_grad():
                got = loaded.module()(check).float().cpu()
    diff = float((got.float() - ref).abs().max())
    tol = tolerance if tolerance is not None else default_tolerance(fp16, ref)
    if not diff <= tol:  # also catches NaN
        raise UserError(f"{path}: exported model differs from PyTorch by {diff:.3g} (> tolerance {tol:.3g}); "
                        "the file was written but should not be trusted")
    gelu_diff = float((ref - exact).abs().max()) if fix_gelu else 0.0
    return ExportResult(path, diff, tol, n_check, sidecar, gelu_diff)


def _write_onnx(model, example, tmp, props, dynamic, opset, dynamo) -> None:
    import onnx

    kw: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    if dynamo:
        if dynamic:
            kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        torch.onnx.export(model, (example,), tmp, dynamo=True, external_data=False, **kw)
    else:
        if dynamic:
            kw["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        with torch.no_grad():
            torch.onnx.export(model, (example,), tmp, dynamo=False, do_constant_folding=True, **kw)
    proto = onnx.load(tmp)
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "vitzoo"
    onnx.save(proto, tmp)


def _run_onnx(path: Path, x: torch.Tensor, device: str) -> torch.Tensor:
    from vitzoo.onnx_runtime import create_session, run_session

    sess = create_session(path, "GPU" if str(device).startswith("cuda") else "CPU")
    return torch.from_numpy(run_session(sess, x.cpu().numpy()))


def _run_torchscript(path: Path, x: torch.Tensor, device: str) -> torch.Tensor:
    loaded = torch.jit.load(str(path), map_location=device)  # (warnings silenced by the caller)
    with torch.no_grad():
        return loaded(x).float().cpu()


def read_torchscript_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The vitzoo metadata of a TorchScript file written by :func:`export_model` ({} if none)."""
    extra = {META_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return parse_metadata(json.loads(extra[META_FILE])) if extra[META_FILE] else {}


# ------------------------------------------------------------------------------------------ conversion
def _layout(obj: dict) -> str:
    """A human name for an official file's layout (for the convert report)."""
    keys = [k for k in ("state_dict_ema", "model_ema", "model", "module", "state_dict", "model_state") if k in obj]
    inner = obj.get(keys[0]) if keys else obj
    prefixed = isinstance(inner, dict) and any(str(k).startswith("module.") for k in inner)
    has_relpos = isinstance(inner, dict) and any("relative_position" in str(k) for k in inner)
    kind = "BEiT" if has_relpos else ("T2T-ViT" if "state_dict_ema" in obj or "state_dict" in obj else "DeiT/timm")
    return f"{kind} .pth ({keys[0] if keys else 'bare state dict'}{', module. prefix' if prefixed else ''})"


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, arch: str | None = None,
                       num_classes: int | None = None, img_size: int | None = None,
                       use_ema: bool = False, overrides: dict | None = None) -> dict[str, Any]:
    """Official release file (or vitzoo checkpoint) -> vitzoo checkpoint at ``dst``, checked by reloading.

    The loading itself is :func:`vitzoo.models.weights.load_pretrained` (the same code path as
    ``create_model(pretrained=SRC)``), so ``convert`` and loading the file directly agree by construction.
    """
    from vitzoo import __version__
    from vitzoo.checkpoint import is_vitzoo_checkpoint, load_checkpoint, save_checkpoint
    from vitzoo.models import create_model, load_model, load_pretrained
    from vitzoo.models.npz import load_npz, npz_model_kwargs
    from vitzoo.models.weights import unwrap_state_dict

    src = str(src)
    if src.endswith(".npz"):
        obj: dict = {"model": load_npz(src)}
        layout, meta_in, sd = "Google ViT .npz", {}, obj["model"]
    else:
        obj = load_checkpoint(src)
        if is_vitzoo_checkpoint(obj):
            layout, meta_in = "vitzoo checkpoint", obj["meta"]
            sd = obj["ema"] if use_ema and obj.get("ema") else obj["model"]
        else:
            layout, meta_in, sd = _layout(obj), {}, unwrap_state_dict(obj, use_ema)
    arch = arch or meta_in.get("arch")
    if not arch:
        hint = ""
        if "patch_embed.proj.weight" in sd and src.endswith(".npz"):
            k = npz_model_kwargs(sd)
            hint = f" (the file has embed_dim {k['embed_dim']}, patch {k['patch_size']}, depth {k['depth']})"
        raise UserError(f"{src} does not record its architecture; pass --arch NAME{hint}")
    kwargs = {**(meta_in.get("model_kwargs") or {}), **(overrides or {})}
    file_classes = int(sd["head.weight"].shape[0]) if "head.weight" in sd else None
    kwargs["num_classes"] = num_classes or kwargs.get("num_classes") or file_classes or 1000
    if img_size:
        kwargs["img_size"] = img_size
    model = create_model(arch, **kwargs).eval()
    target = model.state_dict()
    load_pretrained(model, obj, use_ema=use_ema)

    notes = []
    if file_classes is not None and file_classes != model.num_classes:
        notes.append(f"classifier re-initialised: file has {file_classes} classes, model {model.num_classes}")
    if "pos_embed" in sd and "pos_embed" in target and sd["pos_embed"].shape != target["pos_embed"].shape:
        notes.append(f"pos_embed resized {tuple(sd['pos_embed'].shape)} -> {tuple(target['pos_embed'].shape)}")
    unused = sorted(k for k in sd if k not in target and not k.endswith("relative_position_index"))
    if unused:
        notes.append(f"not used by the model: {', '.join(unused[:6])}{' ...' if len(unused) > 6 else ''}")
    data_config = dict(meta_in.get("data_config") or {})
    if tuple(data_config.get("input_size") or ()) != tuple(model.data_config["input_size"]):
        data_config = dict(model.data_config)
    data_config = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}
    meta = {**{k: v for k, v in meta_in.items() if k not in ("format", "format_version")},
            "arch": arch, "model_kwargs": dict(model.model_kwargs), "num_classes": model.num_classes,
            "class_names": list(meta_in.get("class_names") or []), "data_config": data_config,
            "converted_from": src, "source_layout": layout,
            "vitzoo_version": __version__, "torch_version": str(torch.__version__)}
    path = save_checkpoint(dst, {"model": model.state_dict(), "meta": meta})

    # check: the written file rebuilds the same function (arch + kwargs + weights)
    c, h, w = model.data_config["input_size"]
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    reloaded, _ = load_model(path)
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    if not torch.isfinite(a).all() or not torch.allclose(a, b, atol=1e-5, rtol=0):
        raise UserError(f"{path}: the converted checkpoint does not reproduce the source model's logits")
    n_params = sum(p.numel() for p in model.parameters())
    return {"path": path, "arch": arch, "layout": layout, "num_classes": model.num_classes,
            "num_params": n_params, "notes": notes}
