"""``vitzoo convert``: a checkpoint in any known layout -> a vitzoo checkpoint (weights + arch + config).

The loading is :func:`~vitzoo.models.convert.load.load_pretrained` on a model built by
:func:`~vitzoo.models.convert.load.build_for`, the same path as ``create_model(name, pretrained=SRC)``,
so converting a file and loading it directly agree by construction. The written file is reloaded and
must reproduce the model's logits.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vitzoo.checkpoint import model_meta, save_checkpoint
from vitzoo.errors import UserError
from vitzoo.models.convert.layouts import read_weights
from vitzoo.models.convert.load import build_for, load_model, load_pretrained, resolve_arch
from vitzoo.models.convert.weights import Weights

# set by save_checkpoint for the file it writes
_FILE_KEYS = ("format", "format_version", "kind", "vitzoo_version", "torch_version")


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, arch: str | None = None,
                       num_classes: int | None = None, img_size: int | None = None,
                       use_ema: bool = False, overrides: dict | None = None) -> dict[str, Any]:
    """Write ``src`` as a vitzoo checkpoint at ``dst``, checked by reloading.

    Returns ``{"path", "arch", "layout", "num_classes", "num_params", "notes"}`` (notes: what was
    re-initialised, resized or left unused).
    """
    src = str(src)
    weights = read_weights(src, use_ema)
    arch = resolve_arch(weights, arch)
    kwargs = {**(weights.meta.get("model_kwargs") or {}), **(overrides or {})}
    file_classes = weights.shape_kwargs().get("num_classes")
    kwargs["num_classes"] = num_classes or kwargs.get("num_classes") or file_classes or 1000
    if img_size:
        kwargs["img_size"] = img_size
    model = build_for(weights, arch, kwargs).eval()
    notes = _conversion_notes(weights, model, file_classes)
    load_pretrained(model, weights)

    meta = {**{k: v for k, v in weights.meta.items() if k not in _FILE_KEYS},
            **model_meta(model, class_names=list(weights.meta.get("class_names") or []),
                         data_config=_data_config(weights.meta, model), converted_from=src,
                         source_layout=weights.layout)}
    path = save_checkpoint(dst, {"model": model.state_dict(), "meta": meta})
    _check_reload(model, path)
    return {"path": path, "arch": arch, "layout": weights.layout, "num_classes": model.num_classes,
            "num_params": sum(p.numel() for p in model.parameters()), "notes": notes}


def _conversion_notes(weights: Weights, model: nn.Module, file_classes: int | None) -> list[str]:
    """What the file and the model (before loading) disagree on, for the convert report."""
    sd, target = weights.state_dict, model.state_dict()
    notes = []
    if file_classes is not None and file_classes != model.num_classes:
        notes.append(f"classifier re-initialised: file has {file_classes} classes, model {model.num_classes}")
    file_pos, model_pos = sd.get("pos_embed"), target.get("pos_embed")
    if file_pos is not None and model_pos is not None and file_pos.shape != model_pos.shape:
        notes.append(f"pos_embed resized {tuple(file_pos.shape)} -> {tuple(model_pos.shape)}")
    unused = sorted(k for k in sd if k not in target)
    if unused:
        notes.append(f"not used by the model: {', '.join(unused[:6])}{' ...' if len(unused) > 6 else ''}")
    return notes


def _data_config(meta: dict, model: nn.Module) -> dict[str, Any]:
    """The file's preprocessing when it matches the model's input size, else the arch's; JSON-safe."""
    data_config = dict(meta.get("data_config") or {})
    if tuple(data_config.get("input_size") or ()) != tuple(model.data_config["input_size"]):
        data_config = dict(model.data_config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}


def _check_reload(model: nn.Module, path: os.PathLike) -> None:
    """The written file must rebuild the same function (arch + kwargs + weights)."""
    c, h, w = model.data_config["input_size"]
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    reloaded, _ = load_model(path)
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    if not torch.isfinite(a).all() or not torch.allclose(a, b, atol=1e-5, rtol=0):
        raise UserError(f"{path}: the converted checkpoint does not reproduce the source model's logits")

