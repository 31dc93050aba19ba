"""Model registry: every variant is data (a config dataclass + its eval preprocessing) in its family file.

``build_model`` applies overrides with ``dataclasses.replace``, so an unknown field is an error that
names the closest valid fields, and any architecture hyper-parameter can be changed by name. It builds
with fresh weights only: loading a file (``vitzoo.models.create_model(name, pretrained=FILE)``) lives in
:mod:`vitzoo.models.convert`, which imports this module and never the other way round.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from vitzoo.errors import ConfigError, nearest

# family module -> model class name; each module defines VARIANTS = {name: (Config, data_config)}
FAMILIES = {
    "vitzoo.models.vit": "VisionTransformer",
    "vitzoo.models.t2t_vit": "T2TViT",
    "vitzoo.models.beit": "BEiT",
}


@dataclass(frozen=True)
class Entry:
    name: str
    model_cls: type
    cfg: Any  # the family's frozen config dataclass with this variant's values
    data_config: dict


_REGISTRY: dict[str, Entry] = {}


def _registry() -> dict[str, Entry]:
    if not _REGISTRY:
        for module, cls_name in FAMILIES.items():
            mod = importlib.import_module(module)
            cls = getattr(mod, cls_name)
            for name, (cfg, data) in mod.VARIANTS.items():
                _REGISTRY[name] = Entry(name, cls, cfg, data)
    return _REGISTRY


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell-style filter (``"deit_*"``)."""
    names = sorted(_registry())
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_entry(name: str) -> Entry:
    reg = _registry()
    if name not in reg:
        raise ConfigError(f"unknown model '{name}'{nearest(name, reg)}; `vitzoo models` lists all {len(reg)}")
    return reg[name]


def build_config(name: str, **kwargs) -> Any:
    entry = get_entry(name)
    valid = {f.name: f for f in dataclasses.fields(entry.cfg)}
    for key, value in kwargs.items():
        if key not in valid:
            raise ConfigError(f"{name}: unknown model option '{key}'{nearest(key, valid)}")
        kwargs[key] = _coerce(name, key, value, getattr(entry.cfg, key))
    return dataclasses.replace(entry.cfg, **kwargs)


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """Check an override against the type of the variant's default (ints stay ints, bools stay bools)."""
    if value is None or default is None:
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif (kind is str and isinstance(value, str)) or kind not in (bool, int, float, str):
        return value  # a string, or a field of another type (tuples, ...) taken as given
    raise ConfigError(f"{name}: model option '{key}' expects {kind.__name__}, got {value!r}")


def build_model(name: str, num_classes: int = 1000, img_size: int | None = None,
                model_cls: Callable[[Any], nn.Module] | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model with fresh weights.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier width.
        img_size: input resolution.
        model_cls: builds the module from the variant's config instead of the family class (a subclass
            with extra parts, e.g. BEiT's pre-training model around the same encoder).
        **overrides: any field of the family's config (``embed_dim=96, depth=6, patch_size=4``, ...).
    """
    kwargs = dict(overrides, num_classes=num_classes)
    if img_size is not None:
        kwargs["img_size"] = img_size
    entry = get_entry(name)
    cfg = build_config(name, **kwargs)
    try:
        model = (model_cls or entry.model_cls)(cfg)
    except ValueError as e:  # inconsistent sizes (heads vs width, image vs patch)
        raise ConfigError(f"{name}: {e}") from e
    model.arch = name
    model.model_kwargs = {**kwargs, "img_size": cfg.img_size}
    model.data_config = {**entry.data_config, "input_size": (3, cfg.img_size, cfg.img_size)}
    return model
