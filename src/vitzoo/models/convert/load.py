"""Models from files: ``create_model(name, pretrained=FILE)``, ``load_model(FILE)``, ``load_pretrained``.

The architecture is decided before the model is built, from what the caller passes, what a vitzoo
checkpoint records (``meta.model_kwargs``), what a foreign file records (:attr:`Weights.model_kwargs`: HF /
timm hub configs) and what it implies (:meth:`Weights.implied`: a T2T-ViT release's attention scale, the
source framework's numerics). Loading then only fills tensors (fitted by
:func:`~vitzoo.models.convert.adapt.adapt_state_dict`, checked strictly): it never changes a built model's
architecture, and a model built against what its file implies is refused with the override to pass.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from vitzoo.errors import UserError
from vitzoo.models.convert.adapt import adapt_state_dict
from vitzoo.models.convert.layouts import read_weights
from vitzoo.models.convert.weights import Weights
from vitzoo.models.hub import arch_of, resolve_pretrained, tag_data_config
from vitzoo.models.registry import build_config, build_model

log = logging.getLogger("vitzoo")

def create_model(name: str, num_classes: int = 1000, img_size: int | None = None,
                 pretrained: bool | str | os.PathLike | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: a name from :func:`vitzoo.models.list_models`, or a weights tag (``deit_small_patch16_224.fb_in1k``:
            its weights load when ``pretrained`` is True).
        num_classes: classifier width (the head is re-initialised when a pretrained file differs).
        img_size: input resolution (position embeddings / bias tables of a pretrained file are resized).
        pretrained: True (the name's default tag), a tag, ``hf-hub:org/repo``, a URL, or the path of a
            vitzoo checkpoint or an official release file (:mod:`vitzoo.models.hub` fetches and caches).
        **overrides: any field of the family's config (``embed_dim=96, depth=6, patch_size=4``, ...).
    """
    name, pretrained, img_size = resolve_pretrained(name, pretrained, img_size)
    kwargs = dict(overrides, num_classes=num_classes)
    if img_size is not None:
        kwargs["img_size"] = img_size
    if not pretrained:
        return build_model(name, **kwargs)
    weights = read_weights(pretrained)
    # the sizes a foreign file records (HF / timm hub configs); image size and classes stay the caller's
    recorded = {k: v for k, v in weights.model_kwargs.items() if k not in ("num_classes", "img_size")}
    model = build_for(weights, name, {**recorded, **kwargs})
    load_pretrained(model, weights)
    model.data_config.update(tag_data_config(pretrained) or {})  # a tag: its release's eval preprocessing
    return model


def load_model(path: str | os.PathLike, arch: str | None = None, use_ema: bool = False, device: str = "cpu",
               **overrides: Any) -> tuple[nn.Module, dict]:
    """Build and load the model a checkpoint describes (``arch`` needed only for official files).

    Returns ``(model in eval mode on device, meta)``; ``meta`` is {} for an official file.
    """
    weights = read_weights(path, use_ema)
    arch = resolve_arch(weights, arch or arch_of(path))
    kwargs = {**weights.meta.get("model_kwargs", {}), **weights.model_kwargs, **overrides}
    head = weights.state_dict.get("head.weight")
    if "num_classes" not in kwargs and head is not None:
        kwargs["num_classes"] = head.shape[0]  # an official file: keep the classifier it was trained with
    model = build_for(weights, arch, kwargs)
    load_pretrained(model, weights)
    model.data_config.update(tag_data_config(path) or {})  # a tag: its release's eval preprocessing
    return model.to(device).eval(), weights.meta


def load_pretrained(model: nn.Module, source: str | os.PathLike | dict | Weights,
                    use_ema: bool = False) -> dict[str, Any]:
    """Load weights (ours or an official release) into a built ``model``; return the file's meta.

    ``source`` is a path, a checkpoint dict already loaded, or :class:`Weights` already read; the meta
    is {} for a foreign file. Raises a UserError when the file implies another architecture than the
    model's (build the model with ``create_model(name, pretrained=FILE)`` or :func:`load_model`, which
    apply it).
    """
    weights = read_weights(source, use_ema)
    check_architecture(model, weights)
    load_state_dict_strict(model, adapt_state_dict(weights.state_dict, model), weights.source)
    log.info(f"loaded weights from {weights.source}")
    return weights.meta


def build_for(weights: Weights, arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build ``arch`` with ``kwargs`` plus the config fields the file implies for that config."""
    implied = weights.implied(build_config(arch, **kwargs))
    return build_model(arch, **{**kwargs, **implied})


def resolve_arch(weights: Weights, arch: str | None) -> str:
    """``arch``, else the one a vitzoo checkpoint records; a UserError with the file's sizes otherwise."""
    arch = arch or weights.meta.get("arch") or weights.arch
    if arch:
        return arch
    shapes = weights.shape_kwargs()
    seen = ", ".join(f"{key} {shapes[key]}" for key in ("embed_dim", "patch_size", "depth") if key in shapes)
    hint = f" (the file has {seen})" if seen else ""
    raise UserError(f"{weights.source} does not record its architecture; pass --arch NAME{hint}")


def check_architecture(model: nn.Module, weights: Weights) -> None:
    """Refuse a built model whose config differs from what its weights imply (no silent switch)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return
    differ = {k: v for k, v in weights.implied(cfg).items() if getattr(cfg, k, None) != v}
    if differ:
        needed = ", ".join(f"{k}={v!r}" for k, v in differ.items())
        raise UserError(f"{weights.source} ({weights.layout}) needs the model built with {needed} "
                        "(create_model(name, pretrained=FILE) and load_model do that)")


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    target = model.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in sd.items()
              if k in target and v.shape != target[k].shape]
    if shapes:  # another architecture (or other sizes): name the tensors, not a torch traceback
        raise UserError(f"{source} does not fit {getattr(model, 'arch', 'the model')}: {len(shapes)} tensors "
                        f"differ in shape (file vs model), e.g. {'; '.join(shapes[:3])}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:4])})")
        raise UserError(f"{source} does not fit {getattr(model, 'arch', 'the model')}: {'; '.join(parts)}")
