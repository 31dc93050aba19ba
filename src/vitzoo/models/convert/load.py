"""Models from files: ``create_model(name, pretrained=FILE)``, ``load_model(FILE)``, ``load_pretrained``.

The architecture is decided before the model is built, by one rule for both entry points
(:func:`~vitzoo.models.convert.options.plan_model`: registry defaults < what the file records, shows and
implies < the caller's arguments). Loading then only fills tensors (fitted by
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
from vitzoo.models.convert.options import Plan, plan_model
from vitzoo.models.convert.weights import Weights
from vitzoo.models.hub import arch_of, resolve_pretrained, tag_data_config
from vitzoo.models.registry import build_model

log = logging.getLogger("vitzoo")


def create_model(name: str, num_classes: int | None = None, img_size: int | None = None,
                 pretrained: bool | str | os.PathLike | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: a name from :func:`vitzoo.models.list_models`, or a weights tag (``deit_small_patch16_224.fb_in1k``:
            its weights load when ``pretrained`` is True).
        num_classes: classifier width (default: the file's, else 1000; another width than the file's
            re-initialises the head).
        img_size: input resolution (default: the file's, else the model's; position tables are resized).
        pretrained: True (the name's default tag), a tag, ``hf-hub:org/repo``, a URL, or the path of a
            vitzoo checkpoint or an official release file (:mod:`vitzoo.models.hub` fetches and caches).
            What the file records (sizes, numerics) overrides ``name``'s defaults; the arguments given here override the
            file (:func:`~vitzoo.models.convert.options.plan_model`).
        **overrides: any field of the family's config (``embed_dim=96, depth=6, patch_size=4``, ...).
    """
    name, pretrained, img_size = resolve_pretrained(name, pretrained, img_size)
    caller = given_options(overrides, num_classes=num_classes, img_size=img_size)
    if not pretrained:
        return build_model(name, **caller)
    weights = read_weights(pretrained)
    model = build_and_load(weights, plan_model(weights, name, caller))
    model.data_config.update(tag_data_config(pretrained) or {})  # a tag: its release's eval preprocessing
    return model


def load_model(path: str | os.PathLike, arch: str | None = None, use_ema: bool = False, device: str = "cpu",
               **overrides: Any) -> tuple[nn.Module, dict]:
    """Build and load the model a checkpoint describes.

    The architecture is ``arch``, else the one the file records, else the one its weights' names and
    shapes fit (:mod:`~vitzoo.models.convert.detect`); an ``arch`` that the file records otherwise is
    a UserError. Options merge as in :func:`create_model`. Returns ``(model in eval mode on device,
    meta)``; ``meta`` is {} for an official file.
    """
    weights = read_weights(path, use_ema)
    arch = arch or arch_of(path)  # a tag names its architecture
    model = build_and_load(weights, plan_model(weights, arch, dict(overrides)))
    model.data_config.update(tag_data_config(path) or {})  # a tag: its release's eval preprocessing
    return model.to(device).eval(), weights.meta


def given_options(overrides: dict[str, Any], **named: Any) -> dict[str, Any]:
    """The caller's explicit options: ``overrides`` plus the named arguments that are not None."""
    return {**overrides, **{k: v for k, v in named.items() if v is not None}}


def build_and_load(weights: Weights, plan: Plan) -> nn.Module:
    """Build ``plan`` (its notes logged) and fill it with ``weights``."""
    plan.say()
    model = build_model(plan.arch, **plan.kwargs)
    fill(model, weights, plan.chosen)
    return model


def fill(model: nn.Module, weights: Weights, chosen: frozenset[str] = frozenset()) -> None:
    """Load ``weights`` into ``model``, fitted and strictly, after :func:`check_architecture`."""
    check_architecture(model, weights, chosen)
    load_state_dict_strict(model, adapt_state_dict(weights.state_dict, model), weights.source)
    log.info(f"loaded weights from {weights.source}")


def load_pretrained(model: nn.Module, source: str | os.PathLike | dict | Weights,
                    use_ema: bool = False) -> dict[str, Any]:
    """Load weights (ours or an official release) into a built ``model``; return the file's meta.

    ``source`` is a path, a checkpoint dict already loaded, or :class:`Weights` already read; the meta
    is {} for a foreign file. Raises a UserError when the file implies another architecture than the
    model's (build the model with ``create_model(name, pretrained=FILE)`` or :func:`load_model`, which
    apply it).
    """
    weights = read_weights(source, use_ema)
    fill(model, weights)
    return weights.meta


def check_architecture(model: nn.Module, weights: Weights, chosen: frozenset[str] = frozenset()) -> None:
    """Refuse a built model whose config differs from what its weights imply (no silent switch), except
    in the fields the caller ``chosen`` (said by :func:`~vitzoo.models.convert.options.plan_model`)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return
    differ = {k: v for k, v in weights.implied(cfg).items() if getattr(cfg, k, None) != v and k not in chosen}
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
