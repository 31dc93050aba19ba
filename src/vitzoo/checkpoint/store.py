"""Where a run's checkpoints live, what they are called, and how many are kept.

Checkpoints are named by global step, so "newest" is a file-name sort and ``--resume auto`` needs no
index file; best checkpoints carry their top-1 in the name, so best-N needs no index either.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vitzoo.checkpoint.state import RunState, load_run_state, save_checkpoint
from vitzoo.errors import UserError

if TYPE_CHECKING:  # the config is above this layer; only its type is named here
    from vitzoo.config import RunConfig


CKPT_RE = re.compile(r"^ckpt_e(?P<epoch>\d+)_s(\d+)\.pth$")
BEST_RE = re.compile(r"^best_top1_(-?\d+\.\d+)_e(?P<epoch>\d+)_s(\d+)\.pth$")
# What `vitzoo train` writes besides checkpoints (names of reporting.MetricsFile / setup_logger,
# data.report_bad_files, TensorBoard) and atomic_write's temporary files: all --overwrite may delete.
METRICS_FILES = ("metrics.jsonl", "metrics.csv")
LOG_FILES = ("train.log", *METRICS_FILES)
BAD_FILES_RE = re.compile(r"^bad_files(\.rank\d+)?\.txt$")
EVENTS_RE = re.compile(r"^events\.out\.tfevents\.")
TEMP_RE = re.compile(r"^\.(ckpt_e|best_top1_|metrics\.|train\.log|bad_files).*\.tmp$")


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


def checkpoint_epoch(path: Path) -> int | None:
    """Completed epochs a checkpoint's file name records (None for a name vitzoo did not give)."""
    m = CKPT_RE.match(path.name) or BEST_RE.match(path.name)
    return int(m.group("epoch")) if m else None


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

    # ------------------------------------------------------------ one run per folder
    def run_record(self) -> list[Path]:
        """What shows that a run happened here: its checkpoints and metrics (a log alone does not: a run
        that failed while starting, e.g. on a wrong data_path, may simply be started again)."""
        return (list_checkpoints(self.checkpoints) + [p for _, p in list_best(self.best)]
                + [self.logs / n for n in METRICS_FILES if (self.logs / n).is_file()])

    def run_files(self) -> list[Path]:
        """Every file an earlier ``vitzoo train`` wrote in these folders, found by its own names only."""
        ours = (_files(self.checkpoints, lambda n: bool(CKPT_RE.match(n) or TEMP_RE.match(n)))
                + _files(self.best, lambda n: bool(BEST_RE.match(n) or TEMP_RE.match(n)))
                + _files(self.logs, lambda n: n in LOG_FILES or bool(TEMP_RE.match(n)))
                + _files(self.output, lambda n: bool(BAD_FILES_RE.match(n) or TEMP_RE.match(n)))
                + _files(self.tensorboard, lambda n: bool(EVENTS_RE.match(n))))
        return list(dict.fromkeys(ours))

    def check_fresh(self, resume: str, overwrite: bool, keep: Sequence[str] = ()) -> list[Path]:
        """Before a run writes anything: never mix two runs in one folder.

        Why: a second run in the same folder overwrote same-named checkpoints and metrics, added a
        second TensorBoard file and compared its "best" against the first run's files. So a folder that
        holds a run is refused unless the run continues it (``resume``) or replaces it (``overwrite``:
        its files are deleted here, none of ``keep`` among them). Returns the deleted files.
        """
        if resume:
            return []
        record = self.run_record()
        if record and not overwrite:
            found = [f"{sum(p.suffix == '.pth' for p in record)} checkpoint(s)"]
            found += [p.name for p in record if p.suffix != ".pth"]
            raise UserError(f"{self.output} already holds a run ({', '.join(found)}): continue it with "
                            "--resume auto, or start again with --overwrite (deletes its checkpoints, logs "
                            "and metrics)")
        return self.clear(keep) if overwrite else []

    def clear(self, keep: Sequence[str] = ()) -> list[Path]:
        """Delete :meth:`run_files` (then the sub-folders they leave empty); refuse to delete ``keep``."""
        files = self.run_files()
        kept = {Path(k).resolve() for k in keep if k}
        needed = [p for p in files if p.resolve() in kept]
        if needed:
            raise UserError(f"--overwrite would delete {needed[0]}, which this run reads (pretrained / "
                            "teacher weights): copy it out of the run folder first")
        for p in files:
            p.unlink(missing_ok=True)  # several processes may clear at once
        for folder in (self.checkpoints, self.best, self.tensorboard):
            if folder != self.output and folder.is_dir() and not any(folder.iterdir()):
                try:
                    folder.rmdir()
                except OSError:  # another process removed it, or wrote into it, first
                    pass
        return files

    def finished(self, resume: str, epochs: int) -> Path | None:
        """The checkpoint ``resume`` names when its run already reached ``epochs``, else None."""
        path = find_resume(resume, self.checkpoints)
        epoch = checkpoint_epoch(path) if path is not None else None
        return path if epoch is not None and epoch >= epochs else None


def _files(folder: Path, match: Callable[[str], bool]) -> list[Path]:
    """The files directly in ``folder`` whose names ``match`` (sorted; [] when there is no folder)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and match(p.name)) if folder.is_dir() else []


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
