"""Hub folders (``config.json`` beside ``model.safetensors`` / ``pytorch_model.bin``), as the Hugging Face
hub stores both ``transformers`` models (:mod:`.hf`) and timm's own uploads (:mod:`.timm_hub`).

A folder is named by its path, or by the path of its ``config.json`` or weight file. Weights are read
with safetensors, or ``torch.load(weights_only=True)`` for ``.bin`` files: nothing in them can run code.
Sharded uploads (``*.index.json`` with a ``weight_map``) are read shard by shard.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vitzoo.checkpoint import read_file
from vitzoo.errors import UserError

CONFIG = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # preferred first


def hub_folder(path: str | os.PathLike | None) -> Path | None:
    """The folder holding ``config.json`` that ``path`` names (the folder, its config or its weights)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        folder = p
    elif p.name == CONFIG or p.name in WEIGHT_FILES or p.name.endswith(".index.json"):
        folder = p.parent
    else:
        return None
    return folder if (folder / CONFIG).is_file() else None


def read_config(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The folder's ``config.json`` as a dict; None when ``path`` is no hub folder or the JSON is broken."""
    folder = hub_folder(path)
    if folder is None:
        return None
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # truncated file, corrupt header
            raise UserError(f"{path}: not a readable safetensors file ({e})") from e
    obj = read_file(path)  # weights_only: a pickled class is refused, nothing runs
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_hub_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """``(tensors, file name)`` of the folder's weights: safetensors first, then ``pytorch_model.bin``."""
    folder = hub_folder(path)
    if folder is None:
        raise UserError(f"{path}: no {CONFIG} beside it")
    for name in WEIGHT_FILES:
        single, index = folder / name, folder / f"{name}.index.json"
        if single.is_file():
            return _load_one(single), name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as e:
                raise UserError(f"{index}: not a readable shard index ({e})") from e
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                tensors.update(_load_one(folder / shard))
            return tensors, index.name
    raise UserError(f"{folder}: no {' or '.join(WEIGHT_FILES)} (or a sharded index) beside {CONFIG}")
