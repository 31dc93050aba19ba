"""What a run needs to continue bit-for-bit: RNG states as plain data, checkpoint naming and rotation.

RNG states are stored as tensors / ints / lists (never numpy or tuples of objects), so a checkpoint
loads with ``torch.load(weights_only=True)``. Checkpoints are named by global step, so "newest" is a
file-name sort and ``--resume auto`` needs no index file; best checkpoints carry their top-1 in the name.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_RE = re.compile(r"^ckpt_e(\d+)_s(\d+)\.pth$")
BEST_RE = re.compile(r"^best_top1_(\d+\.\d+)_e(\d+)_s(\d+)\.pth$")


# ------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """torch / CUDA / numpy / python RNG states as weights_only-loadable data."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------ checkpoints
def ckpt_name(epoch: int, global_step: int) -> str:
    """``epoch`` = completed epochs when saved (mid-epoch checkpoints share it with the epoch start)."""
    return f"ckpt_e{epoch:04d}_s{global_step:09d}.pth"


def best_name(top1: float, epoch: int, global_step: int) -> str:
    return f"best_top1_{top1:.6f}_e{epoch:04d}_s{global_step:09d}.pth"


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Regular checkpoints in ``folder``, oldest first (by global step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(2)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def list_best(folder: str | os.PathLike) -> list[tuple[float, Path]]:
    """Best checkpoints as (top1, path), best first (ties: the earlier one first)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(float(m.group(1)), int(m.group(3)), p) for p in folder.iterdir() if (m := BEST_RE.match(p.name))]
    return [(t, p) for t, _, p in sorted(found, key=lambda x: (-x[0], x[1]))]


def prune(paths: list[Path], keep: int) -> list[Path]:
    """Delete all but the last ``keep`` of ``paths`` (keep <= 0 keeps everything); return the deleted."""
    if keep <= 0 or len(paths) <= keep:
        return []
    gone = paths[: len(paths) - keep]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def is_better(top1: float, folder: str | os.PathLike, keep: int) -> bool:
    """Would a checkpoint with ``top1`` enter the best-``keep`` list?"""
    if keep <= 0:
        return False
    best = list_best(folder)
    return len(best) < keep or top1 > best[-1][0]


def prune_best(folder: str | os.PathLike, keep: int) -> None:
    for _, p in list_best(folder)[max(keep, 0):]:
        p.unlink(missing_ok=True)


def find_resume(resume: str, ckpt_dir: str | os.PathLike) -> Path | None:
    """``''`` -> None; ``'auto'`` -> newest checkpoint in ``ckpt_dir`` (None if there is none); else the path."""
    if not resume:
        return None
    if resume.lower() == "auto":
        found = list_checkpoints(ckpt_dir)
        return found[-1] if found else None
    return Path(resume)
