"""Writing hub folders (``config.json`` + ``model.safetensors`` + ``README.md``): what ``--to hf`` and
``--to timm`` share (:mod:`.to_hf`, :mod:`.to_timm`).

The folder is what ``hf upload USER/REPO DIR`` pushes as is. Every file goes through
:func:`vitzoo.checkpoint.atomic_write` (a write killed at any instant leaves the old file or the new one);
a folder that already holds files is refused unless ``overwrite``, so a run's outputs or another upload are
never mixed with this one by accident.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from vitzoo.checkpoint import atomic_write, atomic_write_text, make_folder
from vitzoo.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"


def data_config(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """The eval preprocessing to publish: the checkpoint's (the run's crop_pct, mean / std; ``convert_checkpoint``
    puts it in ``meta``), else the arch's."""
    return dict(meta.get("data_config") or model.data_config)


def check_folder(path: str | os.PathLike, overwrite: bool) -> Path:
    """A UserError when ``path`` is a file, or a folder holding files and not ``overwrite`` (checked before
    any work is done, and again when writing)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; --to hf / --to timm write a folder (give a folder name)")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UserError(f"{folder} is not empty; pass --overwrite to replace its files, or name a new folder")
    return folder


def prepare_folder(path: str | os.PathLike, overwrite: bool) -> Path:
    """The output folder, checked (:func:`check_folder`) and created."""
    folder = check_folder(path, overwrite)
    return make_folder(folder, f"cannot create the folder {folder}")


def write_hub_folder(path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                     card: str, extra_json: dict[str, dict] | None = None, overwrite: bool = False) -> Path:
    """Write the weights (safetensors, ``{"format": "pt"}`` as transformers and timm write it), the JSON
    files and the model card into ``path``; returns the folder."""
    folder = prepare_folder(path, overwrite)
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}  # no shared storage
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(flat, tmp, metadata={"format": "pt"}))
    for name, obj in {CONFIG: config, **(extra_json or {})}.items():
        atomic_write_text(folder / name, json.dumps(obj, indent=2) + "\n")
    atomic_write_text(folder / CARD, card)
    return folder
