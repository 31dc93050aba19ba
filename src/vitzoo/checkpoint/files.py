"""Checkpoint files on disk: atomic writes, and reads that can never execute code.

Writes go to a temporary file in the target folder, are fsync'ed, then renamed over the target: a run
killed at any instant leaves either the old file or the new one, never a truncated file. Reads use
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists, dicts only) or safetensors; what is
*in* a vitzoo file is :mod:`vitzoo.checkpoint.state`'s business.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vitzoo.errors import UserError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move the file to ``path`` (fsync'ed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def write_torch(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` ``payload`` atomically."""
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def write_safetensors(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict) -> Path:
    """Weights as safetensors, ``meta`` as JSON in the header (shareable, readable by any framework)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    header = {"vitzoo_meta": json.dumps(meta)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file without ever executing code from it.

    Returns the stored object: a vitzoo payload (with ``meta``), or whatever dict an official release
    file holds (its wrappers are the converter package's business).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device=str(map_location)) as f:
                header = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
        except Exception as e:  # corrupt header, truncated file, ...
            raise UserError(f"{path}: not a readable safetensors file ({e})") from e
        meta = json.loads(header["vitzoo_meta"]) if "vitzoo_meta" in header else {}
        return {"model": state, "meta": meta}
    if path.suffix == ".npz":
        raise UserError(f"{path}: a Google .npz checkpoint; convert it first (vitzoo convert SRC DST --arch NAME)")
    try:
        # timm-trained release files (T2T-ViT's) carry their argparse.Namespace under "args": plain
        # attributes, allowed explicitly; any other class still makes the load fail
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        text = str(e)
        if "Unsupported global" in text:  # a pickled class / function: exactly what must never run
            name = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            what = f" ({name.group(1)})" if name else ""
            raise UserError(
                f"{path}: refused: it needs arbitrary code{what} to unpickle; only plain tensors and "
                "containers are loaded"
            ) from e
        raise UserError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another format)") from e
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj
