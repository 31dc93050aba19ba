"""What every layout reader returns (:class:`Weights`) and the wrapper search the ``.pth`` layouts share.

Release files and training scripts wrap the state dict under a key (``{"model": sd}`` for DeiT/timm/BEiT,
``{"state_dict": sd, "state_dict_ema": sd}`` for timm's train script, which made the T2T-ViT releases) and
DataParallel prefixes every key with ``module.``; the keys are listed once in :mod:`vitzoo.constants`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vitzoo.constants import EMA_WRAPPERS, STATE_DICT_WRAPPERS
from vitzoo.errors import UserError

_DP_PREFIX = "module."  # torch.nn.DataParallel / DistributedDataParallel


def no_arch_overrides(cfg: Any) -> dict[str, Any]:
    """The default: the file implies nothing about the architecture beyond its tensor shapes."""
    return {}


@dataclass(frozen=True)
class Weights:
    """A checkpoint read by its layout: the state dict in vitzoo's key names and what the file implies."""

    state_dict: dict[str, torch.Tensor]
    layout: str  # the layout and how it was found, e.g. "T2T-ViT .pth.tar (state_dict_ema, module. prefix)"
    source: str  # the file, or "the checkpoint" for an in-memory dict: named in every message
    meta: dict = field(default_factory=dict)  # a vitzoo checkpoint's meta; {} for foreign files
    # model config fields the file implies, given the config the model would otherwise be built with
    # (T2T-ViT releases: the attention scale they were trained with); applied before building
    arch_overrides: Callable[[Any], dict[str, Any]] = no_arch_overrides
    # what a foreign file records itself (HF config.json, timm hub config): the registered name that fits
    # and its config fields (sizes, class count, image size), taken unless the caller passes others
    arch: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # where the source network computes differently from the PyTorch reference (GELU approximation,
    # LayerNorm epsilon): config fields that reproduce the source's logits, dropped with
    # ``--reference-numerics``
    numerics: dict[str, Any] = field(default_factory=dict)
    # the model family the layout implies ("deit" for PaddleViT's DeiT, "vit" for Google's .npz, ...), which
    # the tensors alone cannot tell for ViT vs DeiT; None when the names fit several (a timm .pth)
    family: str | None = None

    def implied(self, cfg: Any) -> dict[str, Any]:
        """Every config field the file fixes for a model of config ``cfg`` (numerics included)."""
        numerics = {k: v for k, v in self.numerics.items() if hasattr(cfg, k)}
        return {**self.arch_overrides(cfg), **numerics}


def find_state_dict(obj: dict, use_ema: bool = False) -> tuple[str | None, dict[str, torch.Tensor]]:
    """``(wrapper key or None for a bare dict, its tensors)``; EMA wrappers first when ``use_ema``.

    Non-tensor entries are left out (strict loading afterwards reports anything missing); raises a
    UserError naming the top-level keys when no tensors are found.
    """
    order = EMA_WRAPPERS + STATE_DICT_WRAPPERS if use_ema else STATE_DICT_WRAPPERS + EMA_WRAPPERS
    wrapper = next((key for key in order if isinstance(obj.get(key), dict)), None)
    inner = obj[wrapper] if wrapper else obj
    tensors = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(str(k) for k in list(obj)[:8]) or "none"
        raise UserError(f"no tensors found (expected a state dict; top-level keys: {keys})")
    return wrapper, tensors


def strip_dp_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(_DP_PREFIX): v for k, v in sd.items()}


def unwrap_state_dict(obj: dict, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict inside a release / training file, ``module.`` prefixes stripped."""
    return strip_dp_prefix(find_state_dict(obj, use_ema)[1])


def read_wrapped(obj: dict, path: str | None, use_ema: bool, name: str) -> Weights:
    """A ``.pth``-style file: find the wrapped state dict, strip ``module.``, say how it was found."""
    wrapper, tensors = find_state_dict(obj, use_ema)
    prefixed = any(k.startswith(_DP_PREFIX) for k in tensors)
    how = f"{wrapper or 'bare state dict'}{', module. prefix' if prefixed else ''}"
    return Weights(strip_dp_prefix(tensors), f"{name} ({how})", path or "the checkpoint")


def has_keys(obj: Any, *parts: str) -> bool:
    """Whether the state dict in ``obj`` (any wrapper, EMA or not) has a key containing one of ``parts``."""
    if not isinstance(obj, dict):
        return False
    candidates = [obj] + [obj[k] for k in STATE_DICT_WRAPPERS + EMA_WRAPPERS if isinstance(obj.get(k), dict)]
    return any(part in str(key) for sd in candidates for key in sd for part in parts)
