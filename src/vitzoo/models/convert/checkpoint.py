"""``vitzoo convert``: a checkpoint in any known layout -> a vitzoo checkpoint (weights + arch + config).

The model is planned by :func:`~vitzoo.models.convert.options.plan_model` and loaded by
:func:`~vitzoo.models.convert.load.build_and_load`, the same path as ``create_model(name, pretrained=SRC)``
and ``load_model(SRC)``, so converting a file and loading it directly agree by construction. The written file is reloaded and
must reproduce the model's logits.
"""
from __future__ import annotations

import dataclasses
import os
from types import ModuleType
from typing import Any

import torch
from torch import nn

from vitzoo.checkpoint import model_meta, save_checkpoint
from vitzoo.errors import UserError
from vitzoo.models.convert.detect import shown_fields
from vitzoo.models.convert.hub_out import check_folder
from vitzoo.models.convert.layouts import read_weights, writer_for
from vitzoo.models.convert.load import build_and_load, fill, given_options, load_model, load_pretrained
from vitzoo.models.convert.options import Plan, plan_model
from vitzoo.models.convert.weights import Weights, no_arch_overrides
from vitzoo.models.hub import arch_of
from vitzoo.models.registry import build_config, build_model

# set by save_checkpoint for the file it writes
_FILE_KEYS = ("format", "format_version", "kind", "vitzoo_version", "torch_version")


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, arch: str | None = None,
                       num_classes: int | None = None, img_size: int | None = None,
                       use_ema: bool = False, overrides: dict | None = None, reference_numerics: bool = False,
                       to: str | None = None, overwrite: bool = False, license: str | None = None) -> dict[str, Any]:
    """Write ``src`` as a vitzoo checkpoint at ``dst`` (or, with ``to`` / a foreign suffix, in another
    framework's layout: :func:`~vitzoo.models.convert.layouts.writer_for`), checked by reloading.
    ``to="hf"`` / ``"timm"`` write a hub folder with a model card made from what ``src`` records
    (``license``: its front matter's; ``overwrite``: replace the files of a non-empty folder).

    ``reference_numerics``: build with the PyTorch references' numerics instead of the source
    framework's (exact GELU, their LayerNorm epsilon); the logit change it causes is in the notes.
    Returns ``{"path", "arch", "layout", "num_classes", "num_params", "notes", "max_diff"}`` (notes: what
    was re-initialised, resized or left unused; max_diff: the reload check's max |logit diff|).
    """
    src = str(src)
    writer = writer_for(dst, to)
    if writer is not None and not writer.SUFFIX:  # a folder writer: refuse a folder in use before the work
        check_folder(dst, overwrite)
    weights = read_weights(src, use_ema)
    caller = given_options(overrides or {}, num_classes=num_classes, img_size=img_size)
    plan = plan_model(weights, arch or arch_of(src), caller)  # a tag names its architecture
    file_classes = shown_fields(weights.state_dict)[1].get("num_classes")
    model = build_model(plan.arch, **plan.kwargs).eval()
    notes = [*plan.notes, *_conversion_notes(weights, model, file_classes)]
    fill(model, weights, plan.chosen)
    if reference_numerics and weights.numerics:
        model, note = _to_reference_numerics(model, weights, plan)
        notes.append(note)

    if writer is not None:
        card_meta = {**weights.meta, "source": src, "source_layout": weights.layout, "use_ema": use_ema,
                     "license": license or weights.meta.get("license"),
                     "data_config": _data_config(weights.meta, model)}
        path = writer.write(model, dst, meta=card_meta, overwrite=overwrite)
        notes.extend(_target_numerics_notes(writer, model))
        max_diff = _check_reload(model, path, reread=lambda: _reread(writer, model, path))
    else:
        meta = {**{k: v for k, v in weights.meta.items() if k not in _FILE_KEYS},
                **model_meta(model, class_names=list(weights.meta.get("class_names") or []),
                             data_config=_data_config(weights.meta, model), converted_from=src,
                             source_layout=weights.layout)}
        path = save_checkpoint(dst, {"model": model.state_dict(), "meta": meta})
        max_diff = _check_reload(model, path, reread=lambda: load_model(path)[0])
    return {"path": path, "arch": plan.arch, "layout": weights.layout, "num_classes": model.num_classes,
            "num_params": sum(p.numel() for p in model.parameters()), "notes": notes, "max_diff": max_diff,
            "to": writer.NAME if writer is not None else "vitzoo"}


def _to_reference_numerics(model: nn.Module, weights: Weights, plan: Plan) -> tuple[nn.Module, str]:
    """The same weights in a model with the PyTorch reference's numerics, and the logit change it makes."""
    base = build_config(plan.arch)  # the registry's numerics are the PyTorch reference's
    reference = {k: getattr(base, k) for k in weights.numerics if hasattr(base, k) and k not in plan.chosen}
    ref_plan = dataclasses.replace(plan, kwargs={**plan.kwargs, **reference}, chosen=plan.chosen | set(reference),
                                   found=None, overrides=())
    ref_model = build_and_load(weights, ref_plan).eval()
    diff = _max_diff(model, ref_model)
    source = ", ".join(f"{k}={getattr(model.cfg, k)!r}" for k in reference)
    ref = ", ".join(f"{k}={v!r}" for k, v in reference.items())
    return ref_model, f"reference numerics ({ref}) instead of the source's ({source}): logits change by max |diff| {diff:.3g}"


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


def _target_numerics_notes(writer: ModuleType, model: nn.Module) -> list[str]:
    """Where the network the file is written for computes differently from ``model``, and by how much."""
    target = writer.target_numerics(model)
    differ = {k: v for k, v in target.items() if hasattr(model.cfg, k) and getattr(model.cfg, k) != v}
    if not differ:
        return []
    theirs = build_model(model.arch, **{**model.model_kwargs, **differ}).eval()
    theirs.load_state_dict(model.state_dict())
    ours = ", ".join(f"{k}={getattr(model.cfg, k)!r}" for k in differ)
    theirs_text = ", ".join(f"{k}={v!r}" for k, v in differ.items())
    note = (f"the target network computes with {theirs_text} (this model: {ours}): its logits differ from "
            f"this model's by max |diff| {_max_diff(model, theirs):.3g}")
    return [note]


def _probe(model: nn.Module) -> torch.Tensor:
    c, h, w = model.data_config["input_size"]
    return torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    x = _probe(a)
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    if not torch.isfinite(ya).all():
        raise UserError("the converted model gives non-finite logits")
    return float((ya - yb).abs().max())


def _reread(writer: ModuleType, model: nn.Module, path: os.PathLike) -> nn.Module:
    """The written foreign file read back by its own reader into a model built as ``model`` was."""
    again = dataclasses.replace(read_weights(path), numerics={}, arch_overrides=no_arch_overrides)
    reloaded = build_model(model.arch, **model.model_kwargs).eval()
    load_pretrained(reloaded, again)
    return reloaded


def _check_reload(model: nn.Module, path: os.PathLike, reread) -> float:
    """The written file must rebuild the same function (arch + kwargs + weights): its max |logit diff|."""
    diff = _max_diff(model, reread())
    if not diff <= 1e-5:
        raise UserError(f"{path}: the converted checkpoint does not reproduce the source model's logits "
                        f"(max |diff| {diff:.3g})")
    return diff
