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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vitzoo.errors import UserError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move the file to ``path`` (fsync'ed).

    A failure to write (disk full, folder not writable, ...) is one UserError naming ``path``; whatever
    file was at ``path`` before is left as it was.
    """
    path = Path(path)
    make_folder(path.parent, f"cannot write {path}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the user's usual mode
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, _StreamWriteError) as e:
        _unlink_quietly(tmp)
        what = "unchanged" if path.exists() else "not written"
        raise UserError(f"cannot write {path}: {getattr(e, 'strerror', None) or e} ({path.name} is {what})") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def make_folder(folder: str | os.PathLike, doing: str = "") -> Path:
    """``mkdir -p folder``; where it cannot, one UserError that says why, naming the file that stands where
    a folder must be (``--output_dir run.pth`` or ``--output notes.txt/out.json``: the OSError itself only
    says "File exists" / "Not a directory")."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocking = file_in_the_way(folder)
        why = f"{blocking} is a file, not a folder" if blocking is not None else e.strerror or str(e)
        raise UserError(f"{doing or f'cannot create the folder {folder}'}: {why}") from None
    return folder


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The nearest of ``folder`` and its parents that exists and is not a folder (so none can be made)."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


class _StreamWriteError(RuntimeError):
    """torch.save reports a failed write (e.g. a full disk) as a RuntimeError; write_torch turns it into this."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unlink_quietly(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (some filesystems refuse fsync on folders: then it is skipped)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def write_torch(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` ``payload`` atomically."""
    def save(tmp: str) -> None:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:
            if "PytorchStreamWriter" not in str(e) and "write" not in str(e).lower():
                raise
            raise _StreamWriteError(str(e).splitlines()[0]) from None

    return atomic_write(path, save)


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
