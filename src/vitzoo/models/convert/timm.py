"""DeiT / timm ``.pth`` files: ``{"model": state_dict}`` (DeiT's ``main.py``), timm's train-script
``{"state_dict": ..., "state_dict_ema": ...}``, DDP's ``module.`` prefix, or a bare ``state_dict()``.

timm's key names are vitzoo's (github.com/facebookresearch/deit, github.com/huggingface/pytorch-image-models),
so reading is unwrapping. This is the catch-all: it is tried last and takes any dict holding tensors.
"""
from __future__ import annotations

from vitzoo.errors import UserError
from vitzoo.models.convert.weights import Weights, find_state_dict, read_wrapped

NAME = "DeiT/timm .pth"


def detect(obj: dict | None, path: str | None) -> bool:
    if obj is None:
        return False
    try:
        find_state_dict(obj)
    except UserError:
        return False
    return True


def read(obj: dict, path: str | None, use_ema: bool) -> Weights:
    return read_wrapped(obj, path, use_ema, NAME)
