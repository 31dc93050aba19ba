"""timm's hub layout: ``config.json`` with ``architecture`` beside ``model.safetensors``
(``timm.models.push_to_hub`` / ``save_for_hf``; e.g. ``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k``).

The key names are timm's, which are vitzoo's; the architecture is the config's ``architecture`` (its
``.tag`` dropped) and the sizes its ``model_args`` (what ``save_for_hf`` records when a model was built
with non-default arguments), ``num_classes`` and ``pretrained_cfg.input_size``.
"""
from __future__ import annotations

import logging
from typing import Any

from vitzoo.errors import UserError
from vitzoo.models.convert import hub
from vitzoo.models.convert.weights import Weights
from vitzoo.models.registry import get_entry, list_models

NAME = "timm hub"
log = logging.getLogger("vitzoo")
# timm argument -> vitzoo config field where the names differ
_RENAMED = {"init_values": "layer_scale_init_value"}
_TRAINING_ONLY = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")


def detect(obj: dict | None, path: str | None) -> bool:
    config = hub.read_config(path) if obj is None else None
    return bool(config) and isinstance(config.get("architecture"), str)


def model_kwargs(config: dict, arch: str) -> dict[str, Any]:
    fields = get_entry(arch).cfg
    kwargs: dict[str, Any] = {}
    size = (config.get("pretrained_cfg") or {}).get("input_size")
    if isinstance(size, list) and len(size) == 3:
        kwargs["img_size"] = int(size[-1])
    if isinstance(config.get("num_classes"), int):
        kwargs["num_classes"] = config["num_classes"]
    ignored = []
    for key, value in (config.get("model_args") or {}).items():
        name = _RENAMED.get(key, key)
        if key in _TRAINING_ONLY:
            continue
        if key == "global_pool" and value in ("avg", "token"):  # avg: mean of the patch tokens; token: the class token
            name, value = "use_mean_pooling", value == "avg"
        if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
            value = value[0]  # timm's (H, W) pairs; vitzoo models are square
        if hasattr(fields, name):
            kwargs[name] = value
        else:
            ignored.append(key)
    if ignored:
        log.warning(f"timm model_args without a vitzoo equivalent, ignored: {', '.join(ignored)}")
    return kwargs


def read(obj: None, path: str, use_ema: bool) -> Weights:
    config = hub.read_config(path) or {}
    arch = config["architecture"].split(".")[0]
    if arch not in list_models():
        raise UserError(f"{path}: architecture {arch!r} is not a vitzoo model (`vitzoo models` lists them)")
    tensors, file = hub.read_hub_weights(path)
    sd = {k: v for k, v in tensors.items() if not k.endswith("relative_position_index")}
    return Weights(sd, f"{NAME} {arch} ({file})", path, arch=arch, model_kwargs=model_kwargs(config, arch))
