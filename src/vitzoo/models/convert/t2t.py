"""Official T2T-ViT releases (github.com/yitu-opensource/T2T-ViT, e.g. ``81.7_T2T_ViTt_14.pth.tar``).

The files come from timm's train script: ``{"state_dict": sd, "state_dict_ema": sd, "epoch", "arch",
"args": Namespace, ...}`` with DataParallel's ``module.`` prefix; the key names are ours
(:mod:`vitzoo.models.t2t_vit` mirrors the official module tree). T2T-ViT weights outside a vitzoo
checkpoint come from that repository, so the layout is recognised by its ``tokens_to_token.`` keys under
any wrapper.

The released ImageNet weights were trained with backbone attention scale ``embed_dim ** -0.5`` (the
official builders set ``qk_scale`` when ``pretrained=True``), not ``head_dim ** -0.5``: the file implies
``qk_scale=released_qk_scale(cfg)``, which the loader applies before building the model. A ``qk_scale``
the caller chose is kept.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from vitzoo.models.convert.weights import Weights, has_keys, read_wrapped
from vitzoo.models.t2t_vit import T2TConfig, released_qk_scale

NAME = "T2T-ViT .pth.tar"


def detect(obj: dict | None, path: str | None) -> bool:
    return obj is not None and has_keys(obj, "tokens_to_token.")


def arch_overrides(cfg: Any) -> dict[str, Any]:
    """``{"qk_scale": <the release's scale>}`` for a T2T config without a chosen scale, else ``{}``."""
    if not isinstance(cfg, T2TConfig) or cfg.qk_scale is not None:
        return {}
    return {"qk_scale": released_qk_scale(cfg)}


def read(obj: dict, path: str | None, use_ema: bool) -> Weights:
    return dataclasses.replace(read_wrapped(obj, path, use_ema, NAME), arch_overrides=arch_overrides, family="t2t")
