"""vitzoo's own checkpoints: ``{"model": sd, "ema": sd | None, "meta": {"format": "vitzoo", ...}}``.

Written by :mod:`vitzoo.checkpoint` (``.pt`` / ``.pth`` or ``.safetensors``). The meta records the arch and
the ``model_kwargs`` that rebuild the same function, so nothing has to be implied from the tensors.
"""
from __future__ import annotations

import logging

from vitzoo.checkpoint import is_vitzoo_checkpoint
from vitzoo.models.convert.weights import Weights

NAME = "vitzoo checkpoint"
log = logging.getLogger("vitzoo")


def detect(obj: dict | None, path: str | None) -> bool:
    return obj is not None and is_vitzoo_checkpoint(obj)


def read(obj: dict, path: str | None, use_ema: bool) -> Weights:
    source = path or "the checkpoint"
    if use_ema and not obj.get("ema"):
        log.warning(f"{source} holds no EMA weights; using the model weights")
    state_dict = obj["ema"] if use_ema and obj.get("ema") else obj["model"]
    return Weights(state_dict, NAME, source, meta=obj["meta"])
