"""Where a run's checkpoints live, what they are called, and how many are kept.

Checkpoints are named by global step, so "newest" is a file-name sort and ``--resume auto`` needs no
index file; best checkpoints carry their top-1 in the name, so best-N needs no index either.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vitzoo.checkpoint.state import RunState, load_run_state, save_checkpoint
from vitzoo.errors import UserError

if TYPE_CHECKING:  # the config is above this layer; only its type is named here
    from vitzoo.config import RunConfig


CKPT_RE = re.compile(r"^ckpt_e(\d+)_s(\d+)\.pth$")
BEST_RE = re.compile(r"^best_top1_(\d+\.\d+)_e(\d+)_s(\d+)\.pth$")


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


# ------------------------------------------------------------------------------------ a run's folders
@dataclass(frozen=True)
class RunFolders:
    """Where a run writes: logs, rotating checkpoints, best checkpoints, TensorBoard events."""

    output: Path
    logs: Path
    checkpoints: Path
    best: Path
    tensorboard: Path

    @classmethod
    def of(cls, cfg: RunConfig) -> RunFolders:
        """The config's folders, each '' resolved under output_dir (the seeds' *_root_dir keys)."""
        out = Path(cfg.output_dir or ".")
        return cls(output=out, logs=Path(cfg.log_dir) if cfg.log_dir else out,
                   checkpoints=Path(cfg.ckpt_dir) if cfg.ckpt_dir else out / "checkpoints",
                   best=Path(cfg.best_ckpt_dir) if cfg.best_ckpt_dir else out / "best",
                   tensorboard=Path(cfg.summary_dir) if cfg.summary_dir else out / "tensorboard")


class CheckpointStore:
    """Writes a run's checkpoints: the newest ``keep`` regular ones and the ``keep_best`` best by top-1."""

    def __init__(self, folders: RunFolders, keep: int, keep_best: int) -> None:
        self.folders, self.keep, self.keep_best = folders, keep, keep_best

    def save(self, state: RunState) -> Path:
        path = self.folders.checkpoints / ckpt_name(state.epoch, state.global_step)
        save_checkpoint(path, state)
        prune(list_checkpoints(self.folders.checkpoints), self.keep)
        return path

    def save_if_best(self, state: RunState, top1: float) -> Path | None:
        """Write ``state`` into the best-N folder if its top-1 earns a place; None otherwise."""
        if not is_better(top1, self.folders.best, self.keep_best):
            return None
        path = self.folders.best / best_name(top1, state.epoch, state.global_step)
        save_checkpoint(path, state)
        prune_best(self.folders.best, self.keep_best)
        return path

    def best(self) -> tuple[float, Path] | None:
        found = list_best(self.folders.best)
        return found[0] if found else None

    def find_resume(self, resume: str) -> Path | None:
        return find_resume(resume, self.folders.checkpoints)

    def load_resume(self, resume: str, warn: Callable[[str], None]) -> tuple[Path, RunState] | None:
        """The run state ``--resume`` names. For ``auto``: the newest checkpoint that reads, falling back
        past unreadable ones (a run killed by a power cut, a truncated copy) and saying so via ``warn``."""
        if not resume:
            return None
        if resume.lower() != "auto":
            return Path(resume), load_run_state(resume)
        for path in reversed(list_checkpoints(self.folders.checkpoints)):
            try:
                return path, load_run_state(path)
            except UserError as e:
                warn(f"resume auto: skipping {path}: {e}")
        return None
